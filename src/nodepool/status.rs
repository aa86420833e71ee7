//! The NodePool status controller: the capacity and count of each pool's launched NodeClaims,
//! whether its EC2NodeClass is Ready, whether its requirements admit any instance type, and
//! whether its limits hold pending pods back (as the provisioner last reported), and how many
//! more of its nodes its budgets let be disrupted. Recomputed whenever one of its NodeClaims or
//! that report changes, and every 5 minutes (a budget's schedule can open meanwhile).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::apis::conditions::{READY, condition};
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::NODEPOOL_LABEL;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::{NodePool, NodePoolStatus};
use crate::disruption::budgets::allowed_disruptions;
use crate::provisioning::provisioner::{PoolReport, PoolReports};
use crate::scheduling::resources::Resources;
use crate::status::apply_status;
use crate::status::is_true;

pub const NODE_CLASS_READY: &str = "NodeClassReady";
/// True while the pool's limits leave pods pending.
pub const LIMIT_REACHED: &str = "LimitReached";
/// True while the pool's requirements admit at least one instance type.
pub const INSTANCE_TYPES_READY: &str = "InstanceTypesReady";

#[derive(Debug, thiserror::Error)]
#[error("Kubernetes API: {0}")]
pub struct Error(#[source] kube::Error);

pub struct NodePools {
    pub client: kube::Client,
    pub pool_reports: watch::Receiver<PoolReports>,
}

/// Runs the controller until `shutdown`.
pub async fn run(context: Arc<NodePools>, shutdown: CancellationToken) {
    let pools: Api<NodePool> = Api::all(context.client.clone());
    let claims: Api<NodeClaim> = Api::all(context.client.clone());
    let reported = futures::stream::unfold(context.pool_reports.clone(), |mut reports| async {
        reports.changed().await.ok()?;
        Some(((), reports))
    });
    Controller::new(pools, watcher::Config::default())
        .watches(claims, watcher::Config::default(), |claim| {
            claim
                .labels()
                .get(NODEPOOL_LABEL)
                .map(|pool| ObjectRef::new(pool))
        })
        .reconcile_all_on(reported)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(object: Arc<NodePool>, error: &Error, _: Arc<NodePools>) -> Action {
    warn!(name = %object.name_any(), %error, "NodePool status failed");
    Action::requeue(Duration::from_secs(10))
}

/// The capacity of launched NodeClaims, summed, and how many NodeClaims there are.
pub fn usage(claims: &[NodeClaim]) -> (Resources, i64) {
    let total = claims.iter().fold(Resources::default(), |sum, claim| {
        sum + claim
            .status
            .as_ref()
            .map(|s| Resources::from_list(&s.capacity))
            .unwrap_or_default()
    });
    (total, claims.len() as i64)
}

async fn reconcile(pool: Arc<NodePool>, context: Arc<NodePools>) -> Result<Action, Error> {
    let client = &context.client;
    let name = pool.name_any();
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let list = claims
        .list(&ListParams::default().labels(&format!("{NODEPOOL_LABEL}={name}")))
        .await
        .map_err(Error)?;
    let (used, nodes) = usage(&list.items);
    let class_name = &pool.spec.template.spec.node_class_ref.name;
    let class = Api::<EC2NodeClass>::all(client.clone())
        .get_opt(class_name)
        .await
        .map_err(Error)?;
    let class_ready = class
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .is_some_and(|s| is_true(&s.conditions, READY));
    let previous = pool.status.clone().unwrap_or_default();
    let generation = pool.metadata.generation;
    let now = Timestamp::now();
    let report = context
        .pool_reports
        .borrow()
        .get(&name)
        .cloned()
        .unwrap_or_default();
    let message = if class_ready {
        format!("EC2NodeClass {class_name} is Ready")
    } else {
        format!("EC2NodeClass {class_name} is missing or not Ready")
    };
    let reason = if class_ready {
        "NodeClassReady"
    } else {
        "NodeClassNotReady"
    };
    let status = NodePoolStatus {
        observed_generation: generation,
        conditions: vec![
            condition(
                &previous.conditions,
                NODE_CLASS_READY,
                class_ready,
                reason,
                message.clone(),
                generation,
                now,
            ),
            instance_types_condition(&previous.conditions, &report, generation, now),
            limit_condition(&previous.conditions, &report, generation, now),
            match &report.no_instance_types {
                Some(problem) if class_ready => condition(
                    &previous.conditions,
                    READY,
                    false,
                    "NoInstanceTypes",
                    format!("its requirements admit no instance type: {problem}"),
                    generation,
                    now,
                ),
                _ => condition(
                    &previous.conditions,
                    READY,
                    class_ready,
                    reason,
                    message,
                    generation,
                    now,
                ),
            },
        ],
        resources: used.to_list(),
        nodes,
        allowed_disruptions: allowed_disruptions(&pool, &list.items, now),
    };
    if status != previous {
        apply_status(&Api::<NodePool>::all(client.clone()), &name, &status, None)
            .await
            .map_err(Error)?;
    }
    // The node class can turn Ready without a NodeClaim changing.
    Ok(Action::requeue(Duration::from_secs(if class_ready {
        300
    } else {
        15
    })))
}

/// `InstanceTypesReady`, from the provisioner's report for the pool.
fn instance_types_condition(
    previous: &[Condition],
    report: &PoolReport,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    match &report.no_instance_types {
        Some(problem) => condition(
            previous,
            INSTANCE_TYPES_READY,
            false,
            "NoInstanceTypes",
            format!("its requirements admit no instance type: {problem}"),
            generation,
            now,
        ),
        None => condition(
            previous,
            INSTANCE_TYPES_READY,
            true,
            "InstanceTypesAdmitted",
            "its requirements admit instance types",
            generation,
            now,
        ),
    }
}

/// `LimitReached`, from the provisioner's report for the pool.
fn limit_condition(
    previous: &[Condition],
    report: &PoolReport,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    match &report.limit {
        Some(report) => condition(
            previous,
            LIMIT_REACHED,
            true,
            "LimitReached",
            report.clone(),
            generation,
            now,
        ),
        None => condition(
            previous,
            LIMIT_REACHED,
            false,
            "WithinLimits",
            "no pending pod is held back by the limits",
            generation,
            now,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_sums_launched_capacity_and_counts_every_claim() {
        let claim = |capacity: serde_json::Value| -> NodeClaim {
            serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim", "metadata": {"name": "c"},
                "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                         "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
                "status": {"capacity": capacity}
            }))
            .unwrap()
        };
        let (used, nodes) = usage(&[
            claim(json!({"cpu": "4", "memory": "8Gi", "pods": "58"})),
            claim(json!({"cpu": "2", "memory": "4Gi", "pods": "29"})),
            claim(json!({})),
        ]);
        assert_eq!(
            used,
            Resources {
                cpu: 6000,
                memory: 12 << 30,
                pods: 87,
                ..Resources::default()
            }
        );
        assert_eq!(nodes, 3);
    }
}
