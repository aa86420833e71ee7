//! Termination: what deleting a NodeClaim (or its Node) does once its finalizer runs. The
//! instance is terminated first, then the Node loses the termination finalizer and is
//! deleted, and only then does the NodeClaim go. A NodeClaim deleted before its status named
//! an instance (a crash between CreateFleet and the status write) still terminates the one the
//! cloud launched for it.

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::apis::labels::TERMINATION_FINALIZER;
use crate::apis::node_claim::NodeClaim;
use crate::cloud::{CloudError, CloudProvider};
use crate::state::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// Terminates the claim's instance, then deletes its Node and takes the finalizer off it.
pub async fn terminate<C: CloudProvider>(
    client: &kube::Client,
    cloud: &C,
    state: &ClusterState,
    claim: &NodeClaim,
) -> Result<(), Error> {
    let status = claim.status.clone().unwrap_or_default();
    terminate_instance(cloud, claim).await?;
    let node_name = status.node_name.clone().or_else(|| {
        let provider = status.provider_id.as_deref()?;
        state.node_by_provider_id(provider).map(|n| n.name_any())
    });
    if let Some(node) = node_name {
        release_node(client, &node).await?;
    }
    Ok(())
}

/// Terminates the instance the claim's status names or, if it names none, the one the cloud
/// launched for it.
pub async fn terminate_instance<C: CloudProvider>(
    cloud: &C,
    claim: &NodeClaim,
) -> Result<(), CloudError> {
    let recorded = claim.status.as_ref().and_then(|s| s.provider_id.clone());
    let provider_id = match recorded {
        Some(provider_id) => Some(provider_id),
        None => cloud.get(&claim.name_any()).await?.map(|i| i.provider_id),
    };
    if let Some(provider_id) = provider_id {
        cloud.delete(&provider_id).await?;
        info!(nodeclaim = %claim.name_any(), %provider_id, "terminated");
    }
    Ok(())
}

/// Takes the termination finalizer off the Node and deletes it.
async fn release_node(client: &kube::Client, name: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = nodes.get_opt(name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    let ignore_gone = |result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map_err(Error::Kube),
    };
    if node.finalizers().iter().any(|f| f == TERMINATION_FINALIZER) {
        let finalizers: Vec<&String> = node
            .finalizers()
            .iter()
            .filter(|f| *f != TERMINATION_FINALIZER)
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
        ignore_gone(
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop),
        )?;
    }
    ignore_gone(nodes.delete(name, &DeleteParams::default()).await.map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Instance;
    use crate::cloud::fake::FakeCloud;
    use crate::scheduling::fake;

    fn claim(status: serde_json::Value) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "default-abc"},
            "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
            "status": status
        }))
        .unwrap()
    }

    fn cloud_with_instance_for(claim: &str) -> FakeCloud {
        let cloud = FakeCloud::new(fake::catalog(1));
        cloud.instances.lock().unwrap().insert(
            claim.to_owned(),
            Instance {
                id: "i-lost".into(),
                provider_id: "fake:///test-zone-1/i-lost".into(),
                instance_type: "fake-it-0.1x".into(),
                zone: "test-zone-1".into(),
                image_id: None,
            },
        );
        cloud
    }

    #[tokio::test]
    async fn the_instance_the_status_names_is_terminated() {
        let cloud = FakeCloud::new(fake::catalog(1));
        terminate_instance(
            &cloud,
            &claim(json!({"providerID": "aws:///test-zone-1/i-7"})),
        )
        .await
        .unwrap();
        assert_eq!(*cloud.deleted.lock().unwrap(), ["aws:///test-zone-1/i-7"]);
    }

    #[tokio::test]
    async fn a_claim_deleted_before_its_status_named_an_instance_terminates_the_one_launched_for_it()
     {
        let cloud = cloud_with_instance_for("default-abc");
        terminate_instance(&cloud, &claim(json!({}))).await.unwrap();
        assert_eq!(
            *cloud.deleted.lock().unwrap(),
            ["fake:///test-zone-1/i-lost"]
        );
        assert!(cloud.instances.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_claim_nothing_was_launched_for_terminates_nothing() {
        let cloud = cloud_with_instance_for("another-claim");
        terminate_instance(&cloud, &claim(json!({}))).await.unwrap();
        assert!(cloud.deleted.lock().unwrap().is_empty());
    }
}
