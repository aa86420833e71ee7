//! Emptiness, without I/O: a node whose NodeClaim has been Initialized a while and on which
//! nothing but DaemonSet, mirror and finished pods has run for the pool's `consolidateAfter`
//! is removed. Both consolidation policies remove empty nodes; `consolidateAfter: Never` turns
//! it off. How long a node has been empty is remembered by the disruption loop, so after a
//! restart it waits `consolidateAfter` again.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::apis::labels::{DO_NOT_DISRUPT_ANNOTATION, KARPENTER_DO_NOT_DISRUPT};
use crate::apis::node_claim::NodeClaim;
use crate::provisioning::problem::{BIND_GRACE, initialized_since};

/// A pool's NodeClaim with its Node and the pods bound there.
pub struct ClaimedNode<'a> {
    pub claim: &'a NodeClaim,
    pub node: &'a Node,
    pub pods: &'a [Arc<Pod>],
}

/// When each node (by NodeClaim name) was first seen empty.
pub type EmptySince = HashMap<String, Timestamp>;

/// `consolidateAfter` as a duration; `None` for `Never` (or a value the schema would refuse).
pub fn consolidate_after(value: &str) -> Option<SignedDuration> {
    (value != "Never").then(|| value.parse().ok()).flatten()
}

/// The NodeClaims of `nodes` empty for at least `after`, oldest-empty first. `empty_since` is
/// updated: nodes no longer empty are forgotten, newly empty ones start their clock at `now`.
pub fn empty_claims(
    nodes: &[ClaimedNode],
    empty_since: &mut EmptySince,
    after: SignedDuration,
    now: Timestamp,
) -> Vec<String> {
    let mut due = Vec::new();
    for node in nodes {
        let name = node.claim.name_any();
        if !may_disrupt(node, now) || !is_empty(node.pods) {
            empty_since.remove(&name);
            continue;
        }
        let since = *empty_since.entry(name.clone()).or_insert(now);
        if now.duration_since(since) >= after {
            due.push((since, name));
        }
    }
    due.sort();
    due.into_iter().map(|(_, name)| name).collect()
}

/// Initialized long enough for the pods it was made for to have bound, not being deleted, and
/// not protected by the do-not-disrupt annotation.
pub fn may_disrupt(node: &ClaimedNode, now: Timestamp) -> bool {
    let settled =
        initialized_since(node.claim).is_some_and(|since| now.duration_since(since) >= BIND_GRACE);
    let deleting = node.claim.metadata.deletion_timestamp.is_some()
        || node.node.metadata.deletion_timestamp.is_some();
    let protected = [DO_NOT_DISRUPT_ANNOTATION, KARPENTER_DO_NOT_DISRUPT]
        .iter()
        .any(|key| {
            node.node
                .annotations()
                .get(*key)
                .is_some_and(|v| v == "true")
        });
    settled && !deleting && !protected
}

/// No pod there that would need a home elsewhere.
fn is_empty(pods: &[Arc<Pod>]) -> bool {
    !pods.iter().any(|pod| needs_home(pod))
}

/// Whether the pod would have to run elsewhere if its node went: not a DaemonSet pod, a
/// mirror pod or a finished pod.
pub fn needs_home(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    let owned_by = |api_version: &str, kind: &str| {
        pod.owner_references()
            .iter()
            .any(|o| o.api_version == api_version && o.kind == kind)
    };
    !(finished || owned_by("apps/v1", "DaemonSet") || owned_by("v1", "Node"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(name: &str, initialized_at: &str) -> NodeClaim {
        crate::apis::testing::node_claim(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Initialized", "status": "True", "reason": "Initialized",
                                       "message": "", "lastTransitionTime": initialized_at}]}
        }))
    }

    fn node(annotations: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "annotations": annotations}}))
            .unwrap()
    }

    fn pod(extra: serde_json::Value) -> Arc<Pod> {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        if let Some(meta) = extra.get("metadata") {
            pod["metadata"]
                .as_object_mut()
                .unwrap()
                .extend(meta.as_object().unwrap().clone());
        }
        if let Some(status) = extra.get("status") {
            pod["status"] = status.clone();
        }
        Arc::new(serde_json::from_value(pod).unwrap())
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    const INITIALIZED: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_node_empty_for_consolidate_after_is_due_and_the_clock_starts_when_it_empties() {
        let claim = claim("a", INITIALIZED);
        let node = node(json!({}));
        let nodes = [ClaimedNode {
            claim: &claim,
            node: &node,
            pods: &[],
        }];
        let mut since = EmptySince::new();
        let after = SignedDuration::from_secs(60);
        assert!(empty_claims(&nodes, &mut since, after, at("2026-01-01T00:01:00Z")).is_empty());
        assert!(empty_claims(&nodes, &mut since, after, at("2026-01-01T00:01:59Z")).is_empty());
        assert_eq!(
            empty_claims(&nodes, &mut since, after, at("2026-01-01T00:02:00Z")),
            ["a"]
        );
        let busy = [pod(json!({}))];
        let nodes = [ClaimedNode {
            claim: &claim,
            node: &node,
            pods: &busy,
        }];
        assert!(empty_claims(&nodes, &mut since, after, at("2026-01-01T00:03:00Z")).is_empty());
        assert!(since.is_empty(), "a pod resets the clock");
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_leave_a_node_empty() {
        let claim = claim("a", INITIALIZED);
        let node = node(json!({}));
        let pods = [
            pod(
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"}]}}),
            ),
            pod(
                json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]}}),
            ),
            pod(json!({"status": {"phase": "Succeeded"}})),
        ];
        let nodes = [ClaimedNode {
            claim: &claim,
            node: &node,
            pods: &pods,
        }];
        let mut since = EmptySince::new();
        assert_eq!(
            empty_claims(
                &nodes,
                &mut since,
                SignedDuration::ZERO,
                at("2026-01-01T00:01:00Z")
            ),
            ["a"]
        );
    }

    #[test]
    fn a_fresh_protected_or_deleted_node_is_not_disrupted() {
        let now = at("2026-01-01T00:01:00Z");
        let fresh = claim("fresh", "2026-01-01T00:00:31Z");
        let plain = node(json!({}));
        let mut deleted = claim("deleted", INITIALIZED);
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        let settled = claim("protected", INITIALIZED);
        let protected = node(json!({DO_NOT_DISRUPT_ANNOTATION: "true"}));
        let karpenter_protected = node(json!({KARPENTER_DO_NOT_DISRUPT: "true"}));
        let nodes = [
            ClaimedNode {
                claim: &fresh,
                node: &plain,
                pods: &[],
            },
            ClaimedNode {
                claim: &deleted,
                node: &plain,
                pods: &[],
            },
            ClaimedNode {
                claim: &settled,
                node: &protected,
                pods: &[],
            },
            ClaimedNode {
                claim: &settled,
                node: &karpenter_protected,
                pods: &[],
            },
        ];
        let mut since = EmptySince::new();
        assert!(empty_claims(&nodes, &mut since, SignedDuration::ZERO, now).is_empty());
    }

    #[test]
    fn consolidate_after_never_turns_emptiness_off() {
        assert_eq!(consolidate_after("Never"), None);
        assert_eq!(
            consolidate_after("30s"),
            Some(SignedDuration::from_secs(30))
        );
        assert_eq!(
            consolidate_after("1h30m"),
            Some(SignedDuration::from_secs(5400))
        );
    }
}
