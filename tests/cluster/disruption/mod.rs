//! Giving nodes back, against the real cluster and moto: an empty node is removed within its
//! pool's budget, and every removal drains the node through the Eviction API first, so a
//! PodDisruptionBudget holds it until it allows the eviction or the termination grace period
//! runs out.

mod drain;
mod emptiness;
mod orphans;

use std::time::Duration;

use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::NodePool;

use crate::support::wait_until;

/// Merges `spec` into the NodePool's spec.
pub async fn patch_pool(pools: &Api<NodePool>, name: &str, spec: serde_json::Value) {
    pools
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .unwrap();
}

/// The pool's one NodeClaim once it is Initialized.
pub async fn initialized_claim(claims: &Api<NodeClaim>, pool: &str) -> NodeClaim {
    let selector = format!("windlass.dev/nodepool={pool}");
    wait_until(
        "the NodeClaim to be Initialized",
        Duration::from_secs(90),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().find(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Initialized" && c.status == "True")
                })
            })
        },
    )
    .await
}
