//! What `windlass top` shows, built from the watched objects alone: one row per ScaledObject,
//! ScaledJob and NodePool. Pure, so the rows are tested from objects without a cluster.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::apis::conditions::{PAUSED, READY};
use crate::apis::labels::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};
use crate::apis::node_claim::{CONDITION_INITIALIZED, NodeClaim};
use crate::apis::node_pool::NodePool;
use crate::apis::scaled_job::ScaledJob;
use crate::apis::scaled_object::ScaledObject;
use crate::apis::triggers::TriggerValue;
use crate::scheduling::resources::Resources;

/// Everything on one screen, in a stable order (namespace, then name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub workloads: Vec<WorkloadRow>,
    pub node_pools: Vec<NodePoolRow>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    ScaledObject,
    ScaledJob,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadRow {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    /// The reading of the trigger that asks for the most replicas or Jobs (KEDA scales on the
    /// largest), or `None` before the first successful poll.
    pub queue: Option<TriggerValue>,
    pub scale: Scale,
    pub decision: Decision,
}

/// What the object has made of its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    Replicas {
        current: Option<i32>,
        desired: Option<i32>,
    },
    Jobs {
        running: i64,
        pending: i64,
    },
}

/// The object's last decision, from its conditions and `lastScaleTime`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No status written yet.
    Waiting,
    /// Ready is False: it cannot scale, and the condition's message says why.
    Failing(String),
    Paused,
    /// Polling; it last scaled (changed replicas, created Jobs) this many seconds ago.
    Polling {
        scaled_seconds_ago: Option<i64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodePoolRow {
    pub name: String,
    /// From the NodePool's status.
    pub nodes: i64,
    /// The pool's NodeClaims not Initialized yet: launching, registering or initializing.
    pub in_flight: usize,
    pub cpu: Usage,
    pub memory: Usage,
    /// The summed price of the pool's Nodes whose instance type has a price.
    pub dollars_per_hour: f64,
    /// The pool's Nodes whose instance type has no price (left out of `dollars_per_hour`).
    pub unpriced_nodes: usize,
}

/// A resource's capacity in the pool against its limit: millicores for cpu, bytes for memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub used: i64,
    /// `None` when the pool sets no limit on this resource.
    pub limit: Option<i64>,
}

/// The objects a snapshot is built from, as the watches hold them.
pub struct Objects<'a> {
    pub scaled_objects: &'a [Arc<ScaledObject>],
    pub scaled_jobs: &'a [Arc<ScaledJob>],
    pub node_pools: &'a [Arc<NodePool>],
    pub node_claims: &'a [Arc<NodeClaim>],
    pub nodes: &'a [Arc<Node>],
}

impl Snapshot {
    /// `prices` is $/hour by instance type.
    pub fn build(objects: &Objects, prices: &HashMap<String, f64>, now: Timestamp) -> Snapshot {
        let mut workloads: Vec<WorkloadRow> = objects
            .scaled_objects
            .iter()
            .map(|object| scaled_object_row(object, now))
            .chain(
                objects
                    .scaled_jobs
                    .iter()
                    .map(|job| scaled_job_row(job, now)),
            )
            .collect();
        workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut node_pools: Vec<NodePoolRow> = objects
            .node_pools
            .iter()
            .map(|pool| node_pool_row(pool, objects, prices))
            .collect();
        node_pools.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            workloads,
            node_pools,
        }
    }
}

fn scaled_object_row(object: &ScaledObject, now: Timestamp) -> WorkloadRow {
    let status = object.status.clone().unwrap_or_default();
    let written = object.status.is_some();
    WorkloadRow {
        kind: WorkloadKind::ScaledObject,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        queue: deciding_value(status.trigger_values.values()),
        scale: Scale::Replicas {
            current: status.current_replicas,
            desired: status.desired_replicas,
        },
        decision: decision(
            written,
            &status.conditions,
            status.last_scale_time.as_ref(),
            now,
        ),
    }
}

fn scaled_job_row(job: &ScaledJob, now: Timestamp) -> WorkloadRow {
    let status = job.status.clone().unwrap_or_default();
    WorkloadRow {
        kind: WorkloadKind::ScaledJob,
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        queue: deciding_value(status.trigger_values.values()),
        scale: Scale::Jobs {
            running: status.running_jobs,
            pending: status.pending_jobs,
        },
        decision: decision(
            job.status.is_some(),
            &status.conditions,
            status.last_scale_time.as_ref(),
            now,
        ),
    }
}

/// The reading that asks for the most: the largest value per target.
fn deciding_value<'a>(values: impl Iterator<Item = &'a TriggerValue>) -> Option<TriggerValue> {
    values.copied().max_by(|a, b| {
        let share = |v: &TriggerValue| {
            if v.target > 0.0 {
                v.value / v.target
            } else {
                v.value
            }
        };
        share(a).total_cmp(&share(b))
    })
}

fn decision(
    written: bool,
    conditions: &[Condition],
    last_scale: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> Decision {
    if !written {
        return Decision::Waiting;
    }
    let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
    if let Some(ready) = condition(READY).filter(|c| c.status == "False") {
        return Decision::Failing(ready.message.clone());
    }
    if condition(PAUSED).is_some_and(|c| c.status == "True") {
        return Decision::Paused;
    }
    Decision::Polling {
        scaled_seconds_ago: last_scale.map(|time| now.duration_since(time.0).as_secs().max(0)),
    }
}

fn node_pool_row(pool: &NodePool, objects: &Objects, prices: &HashMap<String, f64>) -> NodePoolRow {
    let name = pool.name_any();
    let in_pool = |labels: &std::collections::BTreeMap<String, String>| {
        labels.get(NODEPOOL_LABEL) == Some(&name)
    };
    let status = pool.status.clone().unwrap_or_default();
    let capacity = Resources::from_list(&status.resources);
    let limits = &pool.spec.limits;
    let limit = |resource: &str, amount: fn(&Resources) -> i64| {
        limits
            .contains_key(resource)
            .then(|| amount(&Resources::from_list(limits)))
    };
    let in_flight = objects
        .node_claims
        .iter()
        .filter(|claim| in_pool(claim.labels()) && !claim.has_condition(CONDITION_INITIALIZED))
        .count();
    let mut dollars_per_hour = 0.0;
    let mut unpriced_nodes = 0;
    for node in objects.nodes.iter().filter(|node| in_pool(node.labels())) {
        match node
            .labels()
            .get(INSTANCE_TYPE_LABEL)
            .and_then(|instance_type| prices.get(instance_type))
        {
            Some(price) => dollars_per_hour += price,
            None => unpriced_nodes += 1,
        }
    }
    NodePoolRow {
        nodes: status.nodes,
        in_flight,
        cpu: Usage {
            used: capacity.cpu,
            limit: limit("cpu", |r| r.cpu),
        },
        memory: Usage {
            used: capacity.memory,
            limit: limit("memory", |r| r.memory),
        },
        dollars_per_hour,
        unpriced_nodes,
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<K> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn sqs_trigger() -> serde_json::Value {
        json!([{"type": "aws-sqs-queue", "metadata": {"queueURL": "http://q", "queueLength": "5"}}])
    }

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn condition(type_: &str, status: &str, message: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": "R", "message": message,
               "lastTransitionTime": "2026-01-01T11:00:00Z"})
    }

    fn scaled_object(status: serde_json::Value) -> Arc<ScaledObject> {
        from(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"name": "web"}, "triggers": sqs_trigger()},
            "status": status,
        }))
    }

    fn build(objects: &Objects) -> Snapshot {
        let prices = HashMap::from([("m5.large".to_owned(), 0.096)]);
        Snapshot::build(objects, &prices, now())
    }

    fn empty() -> Objects<'static> {
        Objects {
            scaled_objects: &[],
            scaled_jobs: &[],
            node_pools: &[],
            node_claims: &[],
            nodes: &[],
        }
    }

    #[test]
    fn scaled_object_shows_the_trigger_that_asks_for_most_and_its_last_scale() {
        let objects = [scaled_object(json!({
            "conditions": [condition("Ready", "True", "triggers are being polled")],
            "currentReplicas": 3, "desiredReplicas": 4,
            "lastScaleTime": "2026-01-01T11:58:00Z",
            "triggerValues": {
                "small": {"value": 30.0, "target": 10.0},
                "large": {"value": 40.0, "target": 5.0},
            },
        }))];
        let snapshot = build(&Objects {
            scaled_objects: &objects,
            ..empty()
        });
        assert_eq!(
            snapshot.workloads,
            [WorkloadRow {
                kind: WorkloadKind::ScaledObject,
                namespace: "shop".into(),
                name: "web".into(),
                queue: Some(TriggerValue {
                    value: 40.0,
                    target: 5.0
                }),
                scale: Scale::Replicas {
                    current: Some(3),
                    desired: Some(4)
                },
                decision: Decision::Polling {
                    scaled_seconds_ago: Some(120)
                },
            }]
        );
    }

    #[test]
    fn a_failing_trigger_is_the_decision_and_no_status_is_waiting() {
        let failing = scaled_object(json!({
            "conditions": [condition("Ready", "False", "queue: access denied"),
                           condition("Paused", "True", "")],
        }));
        let mut unwritten = (*scaled_object(json!(null))).clone();
        unwritten.metadata.name = Some("new".into());
        let objects = [failing, Arc::new(unwritten)];
        let snapshot = build(&Objects {
            scaled_objects: &objects,
            ..empty()
        });
        let decisions: Vec<_> = snapshot.workloads.iter().map(|w| &w.decision).collect();
        assert_eq!(
            decisions,
            [
                &Decision::Waiting,
                &Decision::Failing("queue: access denied".into())
            ]
        );
        assert_eq!(snapshot.workloads[0].queue, None);
    }

    #[test]
    fn scaled_job_shows_running_and_pending_jobs() {
        let jobs = [from(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "batch", "namespace": "etl"},
            "spec": {"jobTargetRef": {"template": {"spec": {"containers": []}}},
                     "triggers": sqs_trigger()},
            "status": {"runningJobs": 4, "pendingJobs": 1,
                       "conditions": [condition("Ready", "True", ""), condition("Paused", "False", "")],
                       "triggerValues": {"s0": {"value": 7.0, "target": 1.0}}},
        }))];
        let snapshot = build(&Objects {
            scaled_jobs: &jobs,
            ..empty()
        });
        let row = &snapshot.workloads[0];
        assert_eq!(row.kind, WorkloadKind::ScaledJob);
        assert_eq!(
            row.scale,
            Scale::Jobs {
                running: 4,
                pending: 1
            }
        );
        assert_eq!(
            row.queue,
            Some(TriggerValue {
                value: 7.0,
                target: 1.0
            })
        );
        assert_eq!(
            row.decision,
            Decision::Polling {
                scaled_seconds_ago: None
            }
        );
    }

    fn claim(name: &str, pool: &str, initialized: bool) -> Arc<NodeClaim> {
        let conditions = if initialized {
            json!([condition("Initialized", "True", "")])
        } else {
            json!([condition("Launched", "True", "")])
        };
        from(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {"windlass.dev/nodepool": pool}},
            "spec": {"nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"},
                     "requirements": []},
            "status": {"conditions": conditions},
        }))
    }

    fn node(name: &str, pool: &str, instance_type: &str) -> Arc<Node> {
        from(json!({
            "metadata": {"name": name, "labels": {
                "windlass.dev/nodepool": pool, "node.kubernetes.io/instance-type": instance_type}},
        }))
    }

    #[test]
    fn node_pool_counts_claims_in_flight_usage_against_limits_and_price() {
        let pools = [from(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "general"},
            "spec": {"limits": {"cpu": "16"},
                     "template": {"spec": {"nodeClassRef": {"group": "windlass.dev",
                                  "kind": "EC2NodeClass", "name": "default"}, "requirements": []}}},
            "status": {"nodes": 2, "resources": {"cpu": "4", "memory": "16Gi"}},
        }))];
        let claims = [
            claim("a", "general", true),
            claim("b", "general", true),
            claim("c", "general", false),
            claim("d", "other", false),
        ];
        let nodes = [
            node("a", "general", "m5.large"),
            node("b", "general", "m5.large"),
            node("x", "general", "unknown.type"),
            node("y", "other", "m5.large"),
        ];
        let snapshot = build(&Objects {
            node_pools: &pools,
            node_claims: &claims,
            nodes: &nodes,
            ..empty()
        });
        assert_eq!(
            snapshot.node_pools,
            [NodePoolRow {
                name: "general".into(),
                nodes: 2,
                in_flight: 1,
                cpu: Usage {
                    used: 4000,
                    limit: Some(16000)
                },
                memory: Usage {
                    used: 16 << 30,
                    limit: None
                },
                dollars_per_hour: 0.192,
                unpriced_nodes: 1,
            }]
        );
    }
}
