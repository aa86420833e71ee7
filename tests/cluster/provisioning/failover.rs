//! Two replicas of one install share one leader Lease: only the leader writes. Killed with
//! SIGKILL in the middle of a scale-out, the leader's work is taken over by the standby, and
//! afterwards every pod has exactly one NodeClaim and one instance: none twice, none lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    create_apart_pods, delete_claims, delete_pods, delete_pool_and_class, live_instances,
    node_class_and_pool,
};
use crate::support::{
    TestEnv, TestNamespace, Windlass, install_crds, start_registrar, start_windlass_with, unique,
    wait_until,
};

const PODS: usize = 3;

fn leads(windlass: &Windlass) -> bool {
    windlass.metric("windlass_leader") == Some(1.0)
}

#[tokio::test]
async fn the_standby_takes_over_a_scale_out_when_the_leader_is_killed() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "failover").await;
    let ns = namespace.name.as_str();
    let name = unique("failover");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let cluster = unique("cluster");
    let lease = ["--leader-elect-lease-duration", "6s"];
    let first = start_windlass_with(ns, "windlass", &cluster, &lease);
    wait_until("the first replica to lead", Duration::from_secs(30), || {
        std::future::ready(leads(&first).then_some(()))
    })
    .await;
    first.catalog_read().await;
    let second = start_windlass_with(ns, "windlass", &cluster, &lease);
    wait_until(
        "the second replica to serve",
        Duration::from_secs(30),
        || std::future::ready(second.metric("windlass_leader").map(|_| ())),
    )
    .await;
    assert!(!leads(&second), "two replicas lead at once");

    // Pods that may not share a node: one NodeClaim each.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    create_apart_pods(&pods, &name, PODS).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let list_claims = || async {
        claims
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    };
    let started = Instant::now();
    wait_until(
        "the leader to create NodeClaims",
        Duration::from_secs(60),
        || async { (!list_claims().await.is_empty()).then_some(()) },
    )
    .await;
    let claimed = started.elapsed();
    let launched_before = list_claims()
        .await
        .iter()
        .filter(|c| c.status.as_ref().is_some_and(|s| s.provider_id.is_some()))
        .count();
    drop(first);
    let killed = started.elapsed();
    wait_until("the standby to lead", Duration::from_secs(30), || {
        std::future::ready(leads(&second).then_some(()))
    })
    .await;
    let took_over = started.elapsed();

    let _registrar = start_registrar(&cluster, 1);
    let nodes = wait_until("every pod Running", Duration::from_secs(120), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let nodes: BTreeSet<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (nodes.len() == PODS).then_some(nodes)
    })
    .await;
    let running = started.elapsed();
    // A measurement window, not a wait for an outcome: nothing more is launched afterwards.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(list_claims().await.len(), PODS, "NodeClaims");
    assert_eq!(
        live_instances(&env, &cluster).await.len(),
        PODS,
        "instances"
    );
    println!(
        "failover: NodeClaims at {claimed:.1?} ({launched_before} launched), leader killed at \
         {killed:.1?}, standby leading at {took_over:.1?}, {PODS} pods Running at {running:.1?} \
         on {nodes:?}"
    );

    delete_pods(&pods).await;
    delete_claims(&claims, &selector).await;
    drop(second);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "handover").await;
    let ns = namespace.name.as_str();
    let cluster = unique("cluster");
    // Long enough that a takeover by expiry would miss the deadline below.
    let lease = ["--leader-elect-lease-duration", "60s"];
    let mut first = start_windlass_with(ns, "windlass", &cluster, &lease);
    wait_until("the first replica to lead", Duration::from_secs(30), || {
        std::future::ready(leads(&first).then_some(()))
    })
    .await;
    let second = start_windlass_with(ns, "windlass", &cluster, &lease);
    wait_until(
        "the second replica to serve",
        Duration::from_secs(30),
        || std::future::ready(second.metric("windlass_leader").map(|_| ())),
    )
    .await;
    assert!(!leads(&second), "two replicas lead at once");
    let stopped = Instant::now();
    first.process.terminate().await;
    wait_until(
        "the standby to lead well before the Lease expires",
        Duration::from_secs(20),
        || std::future::ready(leads(&second).then_some(())),
    )
    .await;
    println!(
        "handover: the standby led {:.1?} after SIGTERM",
        stopped.elapsed()
    );
    drop(second);
    namespace.delete().await;
}
