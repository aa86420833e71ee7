//! Consolidatable, without I/O: when a pod last came to or left the claim's node
//! (`status.lastPodEventTime`), and whether that was longer ago than its pool's
//! `consolidateAfter` (condition `Consolidatable`, which single-node consolidation reads).
//! Which pods were there is remembered in memory between looks; the time is in the status, so
//! a restart keeps it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::set_condition;
use crate::apis::node_claim::{CONDITION_CONSOLIDATABLE, NodeClaim, NodeClaimStatus};
use crate::apis::node_pool::{ConsolidationPolicy, NodePool};
use crate::disruption::emptiness::{consolidate_after, needs_home};
use crate::provisioning::problem::initialized_since;

/// Per NodeClaim, the pods (by uid) last seen on its node.
pub type PodsSeen = HashMap<String, BTreeSet<String>>;

/// Moves `lastPodEventTime` to `now` when the pods needing a home on the claim's node changed
/// since the last look. The first look after a start only remembers them; a claim that never
/// had a time takes the moment it was initialized.
pub fn observe(
    seen: &mut PodsSeen,
    claim: &NodeClaim,
    pods: &[Arc<Pod>],
    status: &mut NodeClaimStatus,
    now: Timestamp,
) {
    let uids: BTreeSet<String> = pods
        .iter()
        .filter(|p| needs_home(p))
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let changed = seen
        .insert(claim.name_any(), uids.clone())
        .is_some_and(|before| before != uids);
    if changed {
        status.last_pod_event_time = Some(Time(now));
    } else if status.last_pod_event_time.is_none() {
        let since = initialized_since(claim).unwrap_or(now);
        status.last_pod_event_time = Some(Time(since));
    }
}

/// Sets `Consolidatable` when no pod came or went for the pool's `consolidateAfter` in a
/// `WhenEmptyOrUnderutilized` pool; removes it otherwise.
pub fn mark(
    status: &mut NodeClaimStatus,
    claim: &NodeClaim,
    pool: Option<&NodePool>,
    now: Timestamp,
) {
    let after = pool
        .filter(|p| {
            p.spec.disruption.consolidation_policy == ConsolidationPolicy::WhenEmptyOrUnderutilized
        })
        .and_then(|p| consolidate_after(&p.spec.disruption.consolidate_after));
    let quiet_since = status.last_pod_event_time.as_ref().map(|t| t.0);
    match (after, quiet_since) {
        (Some(after), Some(since)) if now.duration_since(since) >= after => set_condition(
            status,
            claim,
            CONDITION_CONSOLIDATABLE,
            true,
            "Consolidatable",
            format!("no pod has come or gone for {after:#}"),
            now,
        ),
        _ => status
            .conditions
            .retain(|c| c.type_ != CONDITION_CONSOLIDATABLE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::testing::{node_claim, node_pool};
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn claim() -> NodeClaim {
        node_claim(json!({
            "status": {"conditions": [{"type": "Initialized", "status": "True", "reason": "Initialized",
                                       "message": "", "lastTransitionTime": at(0).to_string()}]}
        }))
    }

    fn pool(policy: &str, after: &str) -> NodePool {
        node_pool(json!({"spec": {
            "disruption": {"consolidationPolicy": policy, "consolidateAfter": after}}}))
    }

    fn pod(uid: &str) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid}})).unwrap())
    }

    #[test]
    fn the_time_moves_when_a_pod_comes_or_goes_and_starts_at_initialization() {
        let (claim, mut seen, mut status) = (claim(), PodsSeen::new(), NodeClaimStatus::default());
        observe(&mut seen, &claim, &[pod("a")], &mut status, at(20));
        assert_eq!(
            status.last_pod_event_time,
            Some(Time(at(0))),
            "initialized at 0"
        );
        observe(&mut seen, &claim, &[pod("a")], &mut status, at(30));
        assert_eq!(status.last_pod_event_time, Some(Time(at(0))));
        observe(
            &mut seen,
            &claim,
            &[pod("a"), pod("b")],
            &mut status,
            at(40),
        );
        assert_eq!(status.last_pod_event_time, Some(Time(at(40))));
        observe(&mut seen, &claim, &[pod("b")], &mut status, at(50));
        assert_eq!(status.last_pod_event_time, Some(Time(at(50))));
        // A restart forgets the pods but keeps the time.
        let mut restarted = PodsSeen::new();
        observe(&mut restarted, &claim, &[pod("b")], &mut status, at(90));
        assert_eq!(status.last_pod_event_time, Some(Time(at(50))));
    }

    #[test]
    fn consolidatable_after_consolidate_after_in_underutilized_pools_only() {
        let claim = claim();
        let mut status = NodeClaimStatus {
            last_pod_event_time: Some(Time(at(0))),
            ..NodeClaimStatus::default()
        };
        let underused = pool("WhenEmptyOrUnderutilized", "30s");
        mark(&mut status, &claim, Some(&underused), at(29));
        assert!(status.conditions.is_empty());
        mark(&mut status, &claim, Some(&underused), at(30));
        assert_eq!(status.conditions[0].type_, CONDITION_CONSOLIDATABLE);
        assert_eq!(status.conditions[0].status, "True");
        mark(&mut status, &claim, Some(&pool("WhenEmpty", "30s")), at(60));
        assert!(
            status.conditions.is_empty(),
            "WhenEmpty does not consolidate"
        );
        mark(
            &mut status,
            &claim,
            Some(&pool("WhenEmptyOrUnderutilized", "Never")),
            at(60),
        );
        assert!(status.conditions.is_empty());
    }
}
