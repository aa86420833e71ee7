//! Registration: the Node with the claim's providerID appears (the kubelet registers it, with
//! the unregistered taint that keeps pods off it); it gets the claim's labels and taints and
//! the termination finalizer, loses the unregistered taint, and the claim records its name.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::set_condition;
use crate::apis::labels::{
    CLUSTER_LABEL, REGISTERED_LABEL, TERMINATION_FINALIZER, UNREGISTERED_TAINT,
};
use crate::apis::node_claim::{CONDITION_REGISTERED, NodeClaim, NodeClaimStatus};

/// How soon registration tries again after the Node changed under its patch.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// `node` is the Node with the claim's providerID, if there is one yet.
pub async fn register(
    client: &kube::Client,
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    node: Option<&Node>,
    now: Timestamp,
) -> Result<Action, kube::Error> {
    let provider = status.provider_id.clone().unwrap_or_default();
    let Some(node) = node else {
        set_condition(
            status,
            claim,
            CONDITION_REGISTERED,
            false,
            "AwaitingNode",
            format!("no Node with providerID {provider} yet"),
            now,
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    match sync_node(client, claim, node).await {
        Ok(()) => {}
        // Nodes change often while they register (the kubelet posts its status): that newer
        // version comes with a cue of its own, and a short retry covers a cue that is missed.
        Err(kube::Error::Api(response)) if response.code == 409 => {
            return Ok(Action::requeue(CONFLICT_RETRY));
        }
        Err(error) => return Err(error),
    }
    status.node_name = node.metadata.name.clone();
    set_condition(
        status,
        claim,
        CONDITION_REGISTERED,
        true,
        "Registered",
        format!("Node {}", node.name_any()),
        now,
    );
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Gives the Node its NodeClaim's labels and taints (startup taints included), whatever the
/// kubelet registered with, marks it registered, and puts the termination finalizer on it, so
/// deleting the Node terminates its instance first. The patch carries the resourceVersion: a
/// concurrent change to the taint or finalizer lists fails it instead of being overwritten.
async fn sync_node(
    client: &kube::Client,
    claim: &NodeClaim,
    node: &Node,
) -> Result<(), kube::Error> {
    let mut labels: BTreeMap<String, String> = claim
        .labels()
        .iter()
        .filter(|(key, _)| key.as_str() != CLUSTER_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(REGISTERED_LABEL.to_owned(), "true".to_owned());
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints.retain(|t| t.key != UNREGISTERED_TAINT);
    for wanted in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
        if !taints
            .iter()
            .any(|t| t.key == wanted.key && t.effect == wanted.effect)
        {
            taints.push(wanted.clone());
        }
    }
    let mut finalizers = node.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == TERMINATION_FINALIZER) {
        finalizers.push(TERMINATION_FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {"labels": labels, "finalizers": finalizers, "resourceVersion": node.resource_version()},
        "spec": {"taints": taints}
    });
    Api::<Node>::all(client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
}
