//! Demand-aware provisioning, the pure part: which pods a scale-out is about to need room for.
//! A scale-out's demand says how many pods its object wants in all; those it has count, and
//! the rest are still to come. Its unbound pods are planned as they are, whether or not the
//! kube-scheduler has marked them Unschedulable yet (it often has by the time the pass runs);
//! the ones to come are planned from its template.
//! Counting what exists, rather than remembering what was planned, is what keeps a demand from
//! launching twice: once its pods exist they are pods like any other, and the NodeClaims made
//! for them ahead are in flight, with room for them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::scale_outs::ScaleOut;

/// A pod planned ahead of being pending, with the index of the scale-out it is for.
#[derive(Clone, Debug, PartialEq)]
pub struct AheadPod {
    pub scale_out: usize,
    pub pod: Arc<Pod>,
    /// Still to come: `pod` is the scale-out's template, not a pod that exists.
    pub to_come: bool,
}

/// The pods `scale_outs` are about to need room for, given every pod that exists.
pub fn ahead_pods(scale_outs: &[ScaleOut], pods: &[Arc<Pod>]) -> Vec<AheadPod> {
    let mut ahead = Vec::new();
    for (index, scale_out) in scale_outs.iter().enumerate() {
        let Some(demand) = &scale_out.demand else {
            continue;
        };
        let live: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|pod| is_live(pod) && scale_out.owns(pod))
            .collect();
        ahead.extend(
            live.iter()
                .filter(|pod| awaits_a_node(pod))
                .map(|pod| AheadPod {
                    scale_out: index,
                    pod: Arc::clone(pod),
                    to_come: false,
                }),
        );
        let name = scale_out.regarding.name.as_deref().unwrap_or("pod");
        ahead.extend((live.len()..demand.pods).map(|n| {
            let mut pod = demand.template.clone();
            pod.metadata.name = Some(format!("{name}-ahead-{n}"));
            AheadPod {
                scale_out: index,
                pod: Arc::new(pod),
                to_come: true,
            }
        }));
    }
    ahead
}

/// Not terminating and not finished: a pod its object counts as one it has.
fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Unbound and not held back by a scheduling gate.
fn awaits_a_node(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.is_none())
        && spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_none_or(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use k8s_openapi::api::core::v1::ObjectReference;
    use serde_json::{Value, json};

    use super::*;
    use crate::scale_outs::Demand;

    fn pod(name: &str, app: &str, extra: Value) -> Arc<Pod> {
        let mut object = json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c"}]}
        });
        merge(&mut object, extra);
        Arc::new(serde_json::from_value(object).unwrap())
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (key, value) in from {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
            (into, from) => *into = from,
        }
    }

    fn scale_out(app: &str, demand: Option<usize>) -> ScaleOut {
        ScaleOut {
            object: format!("ScaledObject/ns/{app}"),
            regarding: ObjectReference {
                name: Some(app.into()),
                ..ObjectReference::default()
            },
            namespace: "ns".into(),
            pod_labels: BTreeMap::from([("app".into(), app.into())]),
            demand: demand.map(|pods| Demand {
                pods,
                template: (*pod("template", app, json!({}))).clone(),
            }),
            until: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    const UNSCHEDULABLE: &str = "Unschedulable";

    fn marked(reason: &str) -> Value {
        json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": reason}]}})
    }

    fn names(ahead: &[AheadPod]) -> Vec<(usize, String, bool)> {
        ahead
            .iter()
            .map(|a| (a.scale_out, a.pod.metadata.name.clone().unwrap(), a.to_come))
            .collect()
    }

    #[test]
    fn the_pods_still_to_come_are_planned_from_the_template() {
        let ahead = ahead_pods(&[scale_out("worker", Some(3))], &[]);
        assert_eq!(
            names(&ahead),
            vec![
                (0, "worker-ahead-0".into(), true),
                (0, "worker-ahead-1".into(), true),
                (0, "worker-ahead-2".into(), true),
            ]
        );
        assert_eq!(ahead[0].pod.metadata.namespace.as_deref(), Some("ns"));
    }

    #[test]
    fn pods_that_exist_count_so_nothing_is_planned_twice() {
        let pods = [
            pod(
                "running",
                "worker",
                json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}),
            ),
            pod("pending", "worker", marked(UNSCHEDULABLE)),
            pod("new", "worker", json!({})),
            pod("other", "web", json!({})),
        ];
        let ahead = ahead_pods(&[scale_out("worker", Some(4))], &pods);
        assert_eq!(
            names(&ahead),
            vec![
                (0, "pending".into(), false),
                (0, "new".into(), false),
                (0, "worker-ahead-3".into(), true)
            ],
            "the bound pod is not planned, the unbound ones are, marked or not, and one more is \
             to come"
        );
        assert!(
            ahead_pods(&[scale_out("worker", Some(2))], &pods)
                .iter()
                .all(|a| !a.to_come),
            "more pods than wanted: nothing to come"
        );
    }

    #[test]
    fn finished_terminating_and_gated_pods_are_told_apart() {
        let pods = [
            pod("done", "job", json!({"status": {"phase": "Succeeded"}})),
            pod("failed", "job", json!({"status": {"phase": "Failed"}})),
            pod(
                "leaving",
                "job",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            pod(
                "gated",
                "job",
                json!({"spec": {"schedulingGates": [{"name": "g"}]}}),
            ),
        ];
        let ahead = ahead_pods(&[scale_out("job", Some(2))], &pods);
        assert_eq!(
            names(&ahead),
            vec![(0, "job-ahead-1".into(), true)],
            "finished and terminating pods are not counted; the gated one counts but is not \
             planned until its gate lifts"
        );
    }

    #[test]
    fn a_scale_out_without_a_demand_plans_nothing() {
        let pods = [pod("new", "worker", json!({}))];
        assert!(ahead_pods(&[scale_out("worker", None)], &pods).is_empty());
        let both = [scale_out("web", None), scale_out("worker", Some(1))];
        assert_eq!(
            names(&ahead_pods(&both, &pods)),
            vec![(1, "new".into(), false)]
        );
    }
}
