//! Emptiness: once the work is gone, the node goes and its instance is terminated.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::{initialized_claim, patch_pool};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, delete_pods, delete_pool_and_class, event_notes,
    node_class_and_pool, pending_pods, wait_node_gone,
};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, unique, wait_until,
};

#[tokio::test]
async fn an_empty_node_is_removed_and_its_instance_terminated() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "empty").await;
    let ns = namespace.name.as_str();
    let name = unique("empty");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    patch_pool(
        &pools,
        &name,
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}}),
    )
    .await;
    let windlass = start_windlass(ns);
    let _registrar = start_registrar(&windlass.cluster, 1);
    let started = Instant::now();
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let claim = initialized_claim(&claims, &name).await;
    let status = claim.status.clone().unwrap();
    let node_name = status.node_name.clone().unwrap();
    let instance = claim_instance(&status);
    println!(
        "{:>5.1}s NodeClaim {} Initialized on {instance}",
        started.elapsed().as_secs_f64(),
        claim.name_any()
    );
    wait_until("the pod to run", Duration::from_secs(60), || async {
        let pod = pods.get("worker-0").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
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
    assert_terminated(&env, &instance).await;
    let notes = event_notes(&env, None, &claim.name_any(), "Disrupting").await;
    assert!(
        notes.iter().any(|n| n.contains("(emptiness)")),
        "a Disrupting Event says why: {notes:?}"
    );
    assert_eq!(
        windlass.metric(&format!(
            "windlass_disruption_actions_total{{nodepool=\"{name}\",reason=\"empty\"}}"
        )),
        Some(1.0)
    );

    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_budget_of_zero_and_consolidate_after_never_keep_an_empty_node() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "keep").await;
    let ns = namespace.name.as_str();
    let name = unique("keep");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    patch_pool(
        &pools,
        &name,
        json!({"disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": "0"}]}}),
    )
    .await;
    let windlass = start_windlass(ns);
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let claim = initialized_claim(&claims, &name).await;
    delete_pods(&pods).await;
    // The bind grace (30 s) and two disruption passes.
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "a budget of 0 nodes disrupts nothing"
    );
    patch_pool(
        &pools,
        &name,
        json!({"disruption": {"consolidateAfter": "Never", "budgets": [{"nodes": "100%"}]}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        claims.get_opt(&claim.name_any()).await.unwrap().is_some(),
        "consolidateAfter: Never disrupts nothing"
    );
    patch_pool(
        &pools,
        &name,
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

    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
