//! Draining: deleting a NodeClaim taints its node and evicts its pods through the Eviction
//! API, so a PodDisruptionBudget holds the node (and its instance) until it allows the
//! eviction, or until the termination grace period runs out.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{PoolRun, wait_running};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, describe_instance, event_notes, initialized_claim,
    pending_pods, wait_claim_gone, wait_node_gone,
};
use crate::support::{TestEnv, wait_until};

/// A budget that allows no `app=worker` pod to be evicted.
async fn guard(env: &TestEnv, namespace: &str) -> Api<PodDisruptionBudget> {
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), namespace);
    budgets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "guard"},
                "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "worker"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    budgets
}

fn instance_state(instance: &aws_sdk_ec2::types::Instance) -> String {
    instance
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_owned()
}

/// What a test deletes to give a node back.
enum Deleted {
    TheNodeClaim,
    ItsNodePool,
}

#[tokio::test]
async fn a_pod_disruption_budget_holds_a_deleted_node_until_it_allows_the_eviction() {
    a_budget_holds_the_drain_after_deleting(Deleted::TheNodeClaim).await;
}

#[tokio::test]
async fn deleting_a_node_pool_drains_its_nodes_through_their_budgets() {
    a_budget_holds_the_drain_after_deleting(Deleted::ItsNodePool).await;
}

async fn a_budget_holds_the_drain_after_deleting(deleted: Deleted) {
    let run = PoolRun::start(
        "drain",
        json!({"disruption": {"consolidateAfter": "Never"}}),
    )
    .await;
    let (env, ns, claims) = (&run.env, run.ns(), &run.claims);
    let pods = pending_pods(env, ns, &run.name, 1).await;
    let budgets = guard(env, ns).await;
    let claim = initialized_claim(claims, &run.name).await;
    let status = claim.status.clone().unwrap();
    let node_name = status.node_name.clone().unwrap();
    let instance = claim_instance(&status);
    wait_running(&pods, "worker-0").await;

    match deleted {
        Deleted::TheNodeClaim => claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .map(drop)
            .unwrap(),
        // The garbage collector deletes its NodeClaims at once; each drains on its own.
        Deleted::ItsNodePool => run
            .pools
            .delete(&run.name, &DeleteParams::default())
            .await
            .map(drop)
            .unwrap(),
    }
    let nodes: Api<Node> = Api::all(env.client.clone());
    wait_until(
        "the node to be tainted",
        Duration::from_secs(20),
        || async {
            let node = nodes.get(&node_name).await.ok()?;
            node.spec?
                .taints?
                .iter()
                .any(|t| t.key == "windlass.dev/disrupted" && t.effect == "NoSchedule")
                .then_some(())
        },
    )
    .await;
    wait_until(
        "a FailedDraining Event",
        Duration::from_secs(20),
        || async {
            let notes = event_notes(env, None, &claim.name_any(), "FailedDraining").await;
            notes
                .iter()
                .any(|n| n.contains(&format!("{ns}/worker-0")))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pod = pods.get("worker-0").await.unwrap();
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "the budget keeps the pod"
    );
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "the NodeClaim waits for its drain"
    );
    assert_eq!(
        instance_state(&describe_instance(env, &instance).await),
        "running",
        "the instance outlives the drain"
    );

    budgets
        .delete("guard", &DeleteParams::default())
        .await
        .unwrap();
    wait_claim_gone(claims, &claim.name_any()).await;
    wait_node_gone(&nodes, &node_name).await;
    assert_terminated(env, &instance).await;
    assert!(
        pods.get_opt("worker-0")
            .await
            .unwrap()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "the pod was evicted"
    );

    run.finish().await;
}

#[tokio::test]
async fn after_the_termination_grace_period_a_guarded_pod_is_deleted() {
    let run = PoolRun::start(
        "grace",
        json!({"disruption": {"consolidateAfter": "Never"},
               "template": {"spec": {"terminationGracePeriod": "15s"}}}),
    )
    .await;
    let (env, ns, claims) = (&run.env, run.ns(), &run.claims);
    let pods = pending_pods(env, ns, &run.name, 1).await;
    guard(env, ns).await;
    let claim = initialized_claim(claims, &run.name).await;
    assert_eq!(claim.spec.termination_grace_period.as_deref(), Some("15s"));
    let status = claim.status.clone().unwrap();
    let instance = claim_instance(&status);
    wait_running(&pods, "worker-0").await;

    let deleted = std::time::Instant::now();
    claims
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        pods.get("worker-0")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none(),
        "within the grace period the budget holds"
    );
    wait_claim_gone(claims, &claim.name_any()).await;
    assert!(
        deleted.elapsed() >= Duration::from_secs(15),
        "the NodeClaim went only after the grace period: {:?}",
        deleted.elapsed()
    );
    assert_terminated(env, &instance).await;

    run.finish().await;
}
