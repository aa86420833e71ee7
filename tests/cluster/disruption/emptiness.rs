//! Emptiness: once the work is gone, the node goes and its instance is terminated.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{PoolRun, patch_pool, wait_running};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, delete_pods, event_notes, initialized_claim, pending_pods,
    wait_node_gone,
};
use crate::support::{TestNamespace, wait_until};

#[tokio::test]
async fn an_empty_node_is_removed_and_its_instance_terminated() {
    let run = PoolRun::start(
        "empty",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let started = Instant::now();
    let pods = pending_pods(env, ns, name, 1).await;
    let claim = initialized_claim(claims, name).await;
    let status = claim.status.clone().unwrap();
    let node_name = status.node_name.clone().unwrap();
    let instance = claim_instance(&status);
    println!(
        "{:>5.1}s NodeClaim {} Initialized on {instance}",
        started.elapsed().as_secs_f64(),
        claim.name_any()
    );
    wait_running(&pods, "worker-0").await;
    // Running work keeps the node well past consolidateAfter and the bind grace.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "a node with a running pod is not empty"
    );

    delete_pods(&pods).await;
    let emptied = Instant::now();
    println!("{:>5.1}s the pod is gone", started.elapsed().as_secs_f64());
    wait_until(
        "the empty NodeClaim to go",
        Duration::from_secs(60),
        || async {
            claims
                .get_opt(&claim.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    println!(
        "{:>5.1}s NodeClaim gone, {:.1}s after its node emptied",
        started.elapsed().as_secs_f64(),
        emptied.elapsed().as_secs_f64()
    );
    wait_node_gone(&Api::<Node>::all(env.client.clone()), &node_name).await;
    assert_terminated(env, &instance).await;
    let notes = event_notes(env, None, &claim.name_any(), "Disrupting").await;
    assert!(
        notes.iter().any(|n| n.contains("(emptiness)")),
        "a Disrupting Event says why: {notes:?}"
    );
    assert_eq!(
        run.windlass.metric(&format!(
            "windlass_disruption_actions_total{{nodepool=\"{name}\",reason=\"empty\"}}"
        )),
        Some(1.0)
    );

    run.finish().await;
}

#[tokio::test]
async fn a_budget_of_zero_and_consolidate_after_never_keep_an_empty_node() {
    let run = PoolRun::start(
        "keep",
        json!({"disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": "0"}]}}),
    )
    .await;
    let (env, ns, claims, name, pools) = (&run.env, run.ns(), &run.claims, &run.name, &run.pools);
    let pods = pending_pods(env, ns, name, 1).await;
    let claim = initialized_claim(claims, name).await;
    delete_pods(&pods).await;
    // The bind grace (30 s) and two disruption passes.
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "a budget of 0 nodes disrupts nothing"
    );
    patch_pool(
        pools,
        name,
        json!({"disruption": {"consolidateAfter": "Never", "budgets": [{"nodes": "100%"}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "consolidateAfter: Never disrupts nothing"
    );
    patch_pool(
        pools,
        name,
        json!({"disruption": {"consolidateAfter": "0s"}}),
    )
    .await;
    wait_until(
        "the empty NodeClaim to go",
        Duration::from_secs(30),
        || async {
            claims
                .get_opt(&claim.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    run.finish().await;
}

#[tokio::test]
async fn a_pod_of_another_namespace_keeps_the_node_of_a_namespaced_install() {
    let run = PoolRun::start("shared", json!({"disruption": {"consolidateAfter": "0s"}})).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods = pending_pods(env, ns, name, 1).await;
    let claim = initialized_claim(claims, name).await;
    let node_name = claim.status.clone().unwrap().node_name.unwrap();
    // Windlass watches only its own namespace; this pod is bound to its node from another.
    let other = TestNamespace::create(&env.client, "shared-other").await;
    let others: Api<Pod> = Api::namespaced(env.client.clone(), &other.name);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "neighbour"},
        "spec": {
            "nodeName": node_name,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "neighbour", "image": "neighbour"}]
        }
    }))
    .unwrap();
    others.create(&PostParams::default(), &pod).await.unwrap();
    wait_running(&others, "neighbour").await;
    delete_pods(&pods).await;
    // The bind grace (30 s) and two disruption passes after the own pod went.
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "a node running another namespace's pod is not empty"
    );
    delete_pods(&others).await;
    wait_until(
        "the empty NodeClaim to go",
        Duration::from_secs(40),
        || async {
            claims
                .get_opt(&claim.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    other.delete().await;
    run.finish().await;
}
