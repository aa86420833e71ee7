//! Initialization: the claim's Node is Ready and its startup taints are gone; the claim is
//! Initialized and Ready. No I/O: the Node comes from the cluster state.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::set_condition;
use crate::apis::conditions::READY;
use crate::apis::node_claim::{CONDITION_INITIALIZED, NodeClaim, NodeClaimStatus};

/// How often an initialized NodeClaim checks on its Node.
const NODE_CHECK: Duration = Duration::from_secs(10);

pub fn initialize(
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    node: Option<&Node>,
    now: Timestamp,
) -> Action {
    let provider = status.provider_id.clone().unwrap_or_default();
    let Some(node) = node else {
        set_condition(
            status,
            claim,
            READY,
            false,
            "NodeGone",
            format!("the Node with providerID {provider} is gone"),
            now,
        );
        return Action::requeue(Duration::from_secs(10));
    };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let node_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let startup_left = claim.spec.startup_taints.iter().any(|t| {
        node_taints
            .iter()
            .any(|n| n.key == t.key && n.effect == t.effect)
    });
    let initialized = ready && !startup_left;
    let message = match (ready, startup_left) {
        (false, _) => "the Node is not Ready".to_owned(),
        (true, true) => "startup taints are still on the Node".to_owned(),
        (true, false) => format!("Node {} is Ready", node.name_any()),
    };
    set_condition(
        status,
        claim,
        CONDITION_INITIALIZED,
        initialized,
        if initialized {
            "Initialized"
        } else {
            "NotInitialized"
        },
        message.clone(),
        now,
    );
    set_condition(
        status,
        claim,
        READY,
        initialized,
        if initialized { "Ready" } else { "NotReady" },
        message,
        now,
    );
    // Nodes are not watched here: an initialized claim looks at its Node (in memory) now and
    // then, to see it deleted.
    if initialized {
        Action::requeue(NODE_CHECK)
    } else {
        Action::requeue(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim() -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "c"},
            "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                     "startupTaints": [{"key": "agent", "effect": "NoSchedule"}],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
            "status": {"providerID": "aws:///z/i-1", "nodeName": "n"}
        }))
        .unwrap()
    }

    fn node(ready: bool, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn initialized(node: Option<&Node>) -> Vec<(String, String, String)> {
        let claim = claim();
        let mut status = claim.status.clone().unwrap();
        initialize(
            &claim,
            &mut status,
            node,
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        status
            .conditions
            .into_iter()
            .map(|c| (c.type_, c.status, c.reason))
            .collect()
    }

    fn conditions(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        list.iter()
            .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn a_ready_node_without_startup_taints_initializes_the_claim() {
        let taint = json!([{"key": "other", "effect": "NoSchedule"}]);
        assert_eq!(
            initialized(Some(&node(true, taint))),
            conditions(&[
                ("Initialized", "True", "Initialized"),
                ("Ready", "True", "Ready")
            ])
        );
    }

    #[test]
    fn a_startup_taint_or_a_node_not_ready_holds_initialization_back() {
        let startup = json!([{"key": "agent", "effect": "NoSchedule"}]);
        let not_yet = conditions(&[
            ("Initialized", "False", "NotInitialized"),
            ("Ready", "False", "NotReady"),
        ]);
        assert_eq!(initialized(Some(&node(true, startup))), not_yet);
        assert_eq!(initialized(Some(&node(false, json!([])))), not_yet);
    }

    #[test]
    fn a_claim_whose_node_is_gone_is_not_ready() {
        assert_eq!(
            initialized(None),
            conditions(&[("Ready", "False", "NodeGone")])
        );
    }
}
