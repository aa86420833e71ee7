//! Which pods a node's drain waits for and what to do about them next, as Karpenter's
//! terminator decides it, without I/O. Pods that tolerate the disrupted taint, mirror pods,
//! terminal pods and pods stuck terminating for a minute are not waited for. The rest are
//! evicted one priority group at a time (non-critical before critical, DaemonSet pods after
//! the others of their criticality); a `do-not-disrupt` pod is not evicted, but the drain waits
//! for it. Once the termination grace period is over, whatever is left is deleted.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use crate::apis::labels::{DISRUPTED_TAINT, DO_NOT_DISRUPT_ANNOTATION, KARPENTER_DO_NOT_DISRUPT};

/// How long a pod may be terminating before the drain stops waiting for it.
const STUCK_TERMINATING: SignedDuration = SignedDuration::from_secs(60);

/// The taint a node being drained carries, so nothing new schedules there.
pub fn disrupted_taint() -> Taint {
    Taint {
        key: DISRUPTED_TAINT.to_owned(),
        effect: "NoSchedule".to_owned(),
        ..Taint::default()
    }
}

/// A pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// The next thing a drain does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainStep {
    /// Ask the Eviction API to evict these (a PodDisruptionBudget may refuse).
    Evict(Vec<PodRef>),
    /// The grace period is over: delete these.
    Delete(Vec<PodRef>),
    /// This many pods are still going; nothing to ask for now.
    Wait(usize),
    /// Nothing left to wait for.
    Done,
}

/// What to do next with the pods on a node being drained; `deadline` is when its termination
/// grace period ends, if it has one.
pub fn next_step(pods: &[Pod], now: Timestamp, deadline: Option<Timestamp>) -> DrainStep {
    let waiting: Vec<&Pod> = pods.iter().filter(|p| is_waited_for(p, now)).collect();
    if waiting.is_empty() {
        return DrainStep::Done;
    }
    if deadline.is_some_and(|deadline| now >= deadline) {
        let left: Vec<PodRef> = waiting
            .iter()
            .filter(|p| !is_terminating(p))
            .map(|p| pod_ref(p))
            .collect();
        return if left.is_empty() {
            DrainStep::Wait(waiting.len())
        } else {
            DrainStep::Delete(left)
        };
    }
    let first_group = (0..4)
        .map(|group| {
            waiting
                .iter()
                .filter(|p| priority_group(p) == group)
                .collect::<Vec<_>>()
        })
        .find(|group| !group.is_empty())
        .unwrap_or_default();
    let evictable: Vec<PodRef> = first_group
        .iter()
        .filter(|p| !is_terminating(p) && !has_do_not_disrupt(p))
        .map(|p| pod_ref(p))
        .collect();
    if evictable.is_empty() {
        DrainStep::Wait(waiting.len())
    } else {
        DrainStep::Evict(evictable)
    }
}

/// Whether the drain waits for this pod to go.
fn is_waited_for(pod: &Pod, now: Timestamp) -> bool {
    let terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    let stuck = pod
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|deleted| now.duration_since(deleted.0) > STUCK_TERMINATING);
    !terminal && !stuck && !is_mirror(pod) && !tolerates_disrupted(pod)
}

/// 0: non-critical, 1: non-critical DaemonSet, 2: critical, 3: critical DaemonSet.
fn priority_group(pod: &Pod) -> usize {
    let critical = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority_class_name.as_deref())
        .is_some_and(|class| class == "system-cluster-critical" || class == "system-node-critical");
    usize::from(critical) * 2 + usize::from(is_owned_by(pod, "apps/v1", "DaemonSet"))
}

fn is_mirror(pod: &Pod) -> bool {
    is_owned_by(pod, "v1", "Node")
}

fn is_owned_by(pod: &Pod, api_version: &str, kind: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.api_version == api_version && o.kind == kind)
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `windlass.dev/do-not-disrupt: "true"`, or Karpenter's annotation of the same meaning.
pub fn has_do_not_disrupt(pod: &Pod) -> bool {
    pod.metadata.annotations.as_ref().is_some_and(|a| {
        [DO_NOT_DISRUPT_ANNOTATION, KARPENTER_DO_NOT_DISRUPT]
            .iter()
            .any(|key| a.get(*key).is_some_and(|v| v == "true"))
    })
}

fn tolerates_disrupted(pod: &Pod) -> bool {
    let taint = disrupted_taint();
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|tolerations| tolerations.iter().any(|t| tolerates(t, &taint)))
}

fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key_ok = match toleration.key.as_deref() {
        None | Some("") => toleration.operator.as_deref() == Some("Exists"),
        Some(key) => key == taint.key,
    };
    let value_ok = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    };
    effect_ok && key_ok && value_ok
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, extra: serde_json::Value) -> Pod {
        let mut pod =
            json!({"metadata": {"name": name, "namespace": "ns"}, "spec": {"containers": []}});
        merge(&mut pod, extra);
        serde_json::from_value(pod).unwrap()
    }

    fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
        if let (Some(base), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) {
            for (key, value) in extra {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() => merge(existing, value),
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
    }

    fn daemon(name: &str) -> Pod {
        pod(
            name,
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u"}]}}),
        )
    }

    fn critical(name: &str) -> Pod {
        pod(
            name,
            json!({"spec": {"priorityClassName": "system-cluster-critical"}}),
        )
    }

    fn refs(names: &[&str]) -> Vec<PodRef> {
        names
            .iter()
            .map(|n| PodRef {
                namespace: "ns".into(),
                name: (*n).into(),
            })
            .collect()
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    #[test]
    fn pods_go_one_priority_group_at_a_time() {
        let mut pods = vec![
            critical("c"),
            daemon("d"),
            pod("a", json!({})),
            pod("b", json!({})),
        ];
        assert_eq!(
            next_step(&pods, now(), None),
            DrainStep::Evict(refs(&["a", "b"]))
        );
        pods.retain(|p| !["a", "b"].contains(&p.metadata.name.as_deref().unwrap()));
        assert_eq!(
            next_step(&pods, now(), None),
            DrainStep::Evict(refs(&["d"]))
        );
        pods.retain(|p| p.metadata.name.as_deref() != Some("d"));
        assert_eq!(
            next_step(&pods, now(), None),
            DrainStep::Evict(refs(&["c"]))
        );
        assert_eq!(next_step(&[], now(), None), DrainStep::Done);
    }

    #[test]
    fn a_group_still_terminating_holds_the_next_back() {
        let leaving = pod(
            "a",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:09:30Z"}}),
        );
        assert_eq!(
            next_step(&[leaving, critical("c")], now(), None),
            DrainStep::Wait(2)
        );
    }

    #[test]
    fn mirror_terminal_tolerating_and_stuck_pods_are_not_waited_for() {
        let pods = [
            pod(
                "mirror",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]}}),
            ),
            pod("done", json!({"status": {"phase": "Succeeded"}})),
            pod("failed", json!({"status": {"phase": "Failed"}})),
            pod(
                "tolerates-all",
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
            ),
            pod(
                "tolerates-it",
                json!({"spec": {"tolerations": [{"key": DISRUPTED_TAINT, "operator": "Exists", "effect": "NoSchedule"}]}}),
            ),
            pod(
                "stuck",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:08:59Z"}}),
            ),
        ];
        assert_eq!(next_step(&pods, now(), None), DrainStep::Done);
        let other_taint = pod(
            "tolerates-other",
            json!({"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}}),
        );
        assert_eq!(
            next_step(&[other_taint], now(), None),
            DrainStep::Evict(refs(&["tolerates-other"]))
        );
    }

    #[test]
    fn a_do_not_disrupt_pod_is_waited_for_but_not_evicted() {
        for key in [DO_NOT_DISRUPT_ANNOTATION, KARPENTER_DO_NOT_DISRUPT] {
            let protected = pod("p", json!({"metadata": {"annotations": {key: "true"}}}));
            assert_eq!(next_step(&[protected], now(), None), DrainStep::Wait(1));
        }
    }

    #[test]
    fn after_the_grace_period_what_is_left_is_deleted() {
        let deadline: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let protected = pod(
            "p",
            json!({"metadata": {"annotations": {DO_NOT_DISRUPT_ANNOTATION: "true"}}}),
        );
        let pods = [protected, critical("c"), pod("a", json!({}))];
        assert_eq!(
            next_step(&pods, now(), Some(deadline)),
            DrainStep::Delete(refs(&["p", "c", "a"]))
        );
        let before = deadline - SignedDuration::from_secs(1);
        assert_eq!(
            next_step(&pods, before, Some(deadline)),
            DrainStep::Evict(refs(&["a"]))
        );
    }
}
