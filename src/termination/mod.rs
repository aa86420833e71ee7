//! Termination: what deleting a NodeClaim (or its Node) does before its finalizer lets it go.
//! The Node is tainted `windlass.dev/disrupted:NoSchedule` and drained through the Eviction
//! API, so PodDisruptionBudgets hold (`drain` decides the order); after the NodeClaim's
//! `terminationGracePeriod` what is left is deleted. Then the instance is terminated, the Node
//! loses the termination finalizer and is deleted, and only then does the NodeClaim go. A
//! NodeClaim deleted before its status named an instance (a crash between CreateFleet and the
//! status write) still terminates the one the cloud launched for it.

pub mod drain;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use drain::{DrainStep, PodRef, disrupted_taint, next_step};

use crate::apis::labels::TERMINATION_FINALIZER;
use crate::apis::node_claim::NodeClaim;
use crate::cloud::{CloudError, CloudProvider};
use crate::failpoints;
use crate::state::ClusterState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// Where a drain stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Pods are still going; `refused` are the evictions a PodDisruptionBudget turned down now.
    Draining {
        waiting: usize,
        refused: Vec<String>,
    },
    /// Nothing is left on the node that the drain waits for (or there is no node).
    Drained,
}

/// One pass of draining the claim's Node: taints it, then evicts (or, past the grace period,
/// deletes) the pods `drain::next_step` names. `evictions` must not retry a 429 itself.
pub async fn drain(
    client: &kube::Client,
    evictions: &kube::Client,
    state: &ClusterState,
    claim: &NodeClaim,
    now: Timestamp,
) -> Result<Drain, Error> {
    let Some(node_name) = node_of(state, claim) else {
        return Ok(Drain::Drained);
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = nodes.get_opt(&node_name).await.map_err(Error::Kube)? else {
        return Ok(Drain::Drained);
    };
    set_disrupted_taint(&nodes, &node, true).await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node_name}")))
        .await
        .map_err(Error::Kube)?
        .items;
    let waiting = |step: &DrainStep| match step {
        DrainStep::Evict(pods) | DrainStep::Delete(pods) => pods.len(),
        DrainStep::Wait(count) => *count,
        DrainStep::Done => 0,
    };
    let step = next_step(&pods, now, grace_deadline(claim));
    let mut refused = Vec::new();
    match &step {
        DrainStep::Done => return Ok(Drain::Drained),
        DrainStep::Wait(_) => {}
        DrainStep::Evict(targets) => {
            for pod in targets {
                match api_for(evictions, pod)
                    .evict(&pod.name, &EvictParams::default())
                    .await
                {
                    Ok(_) => {
                        info!(node = %node_name, pod = %pod.name, "evicted");
                        failpoints::reached(failpoints::EVICTED_BEFORE_TERMINATED);
                    }
                    // A PodDisruptionBudget says not now: asked again on the next pass.
                    Err(kube::Error::Api(e)) if e.code == 429 => {
                        refused.push(format!("{}/{}", pod.namespace, pod.name))
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => return Err(Error::Kube(error)),
                }
            }
        }
        DrainStep::Delete(targets) => {
            for pod in targets {
                match api_for(client, pod)
                    .delete(&pod.name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {
                        info!(node = %node_name, pod = %pod.name, "deleted after the termination grace period")
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => return Err(Error::Kube(error)),
                }
            }
        }
    }
    Ok(Drain::Draining {
        waiting: waiting(&step),
        refused,
    })
}

fn api_for(client: &kube::Client, pod: &PodRef) -> Api<Pod> {
    Api::namespaced(client.clone(), &pod.namespace)
}

fn node_of(state: &ClusterState, claim: &NodeClaim) -> Option<String> {
    let status = claim.status.as_ref()?;
    status.node_name.clone().or_else(|| {
        let provider = status.provider_id.as_deref()?;
        state.node_by_provider_id(provider).map(|n| n.name_any())
    })
}

/// When the claim's termination grace period ends: its deletion plus `terminationGracePeriod`.
fn grace_deadline(claim: &NodeClaim) -> Option<Timestamp> {
    let deleted = claim.metadata.deletion_timestamp.as_ref()?.0;
    let period: SignedDuration = claim
        .spec
        .termination_grace_period
        .as_deref()?
        .parse()
        .ok()?;
    deleted.checked_add(period).ok()
}

/// Puts the disrupted taint on the Node (`disrupted`) or takes it off (a replacement that
/// never came, or a restart that forgot why it was put there), unless it is so already;
/// guarded by the Node's resourceVersion.
pub async fn set_disrupted_taint(
    nodes: &Api<Node>,
    node: &Node,
    disrupted: bool,
) -> Result<(), Error> {
    let wanted = disrupted_taint();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let is_wanted = |t: &Taint| t.key == wanted.key && t.effect == wanted.effect;
    if taints.iter().any(is_wanted) == disrupted {
        return Ok(());
    }
    let mut taints: Vec<Taint> = taints.into_iter().filter(|t| !is_wanted(t)).collect();
    if disrupted {
        taints.push(wanted);
    }
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"taints": taints}
    });
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(Error::Kube)
}

/// Terminates the claim's instance, then deletes its Node and takes the finalizer off it.
pub async fn terminate<C: CloudProvider>(
    client: &kube::Client,
    cloud: &C,
    state: &ClusterState,
    claim: &NodeClaim,
) -> Result<(), Error> {
    terminate_instance(cloud, claim).await?;
    if let Some(node) = node_of(state, claim) {
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
pub async fn release_node(client: &kube::Client, name: &str) -> Result<(), Error> {
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
                claim: Some(claim.to_owned()),
                instance_type: "fake-it-0.1x".into(),
                zone: "test-zone-1".into(),
                image_id: None,
                subnet_id: None,
                security_group_ids: Vec::new(),
            },
        );
        cloud
    }

    #[test]
    fn the_grace_period_runs_from_the_deletion() {
        let mut deleted = claim(json!({}));
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        assert_eq!(grace_deadline(&deleted), None, "no terminationGracePeriod");
        deleted.spec.termination_grace_period = Some("1h30m".into());
        assert_eq!(
            grace_deadline(&deleted),
            Some("2026-01-01T01:30:00Z".parse().unwrap())
        );
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
