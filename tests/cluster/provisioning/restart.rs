//! A restart mid-launch, by SIGKILL or SIGTERM, never launches again for pods that have
//! capacity coming: the NodeClaims in flight still count, and the pods run on their Nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    batches_planned, create_apart_pods, delete_claims, delete_pods, delete_pool_and_class,
    live_instances, node_class_and_pool,
};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, start_windlass_as,
    unique, wait_until,
};

#[tokio::test]
async fn a_restart_mid_launch_never_launches_for_pods_that_have_capacity_coming() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "restart").await;
    let ns = namespace.name.as_str();
    let name = unique("restart");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let cluster = windlass.cluster.clone();
    // Two pods that may not share a node: two NodeClaims. Each pod is more than half of the
    // smallest candidate type, so a claim that still counted its pod as taken had no room for it.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    create_apart_pods(&pods, &name, 2).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let list_claims = || async {
        claims
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    };
    wait_until(
        "two NodeClaims launched",
        Duration::from_secs(60),
        || async {
            let launched = list_claims()
                .await
                .into_iter()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.provider_id.is_some()))
                .count();
            (launched == 2).then_some(())
        },
    )
    .await;
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // Killed before any Node exists, then started again with the same arguments.
    drop(windlass);
    let mut windlass = start_windlass_as(ns, "windlass", &cluster);
    // A killed predecessor holds the Lease until it expires (the chart's 15 s); the new leader
    // reads the catalog, then plans once a batch window has passed.
    windlass.catalog_read().await;
    wait_until(
        "the restarted controller to plan",
        Duration::from_secs(30),
        || std::future::ready((batches_planned(&windlass) >= 1.0).then_some(())),
    )
    .await;
    assert_eq!(
        list_claims().await.len(),
        2,
        "after SIGKILL: the pods have capacity coming"
    );
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);
    // A measurement window, not a wait for an outcome: the retry 10 s later launches nothing.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(list_claims().await.len(), 2, "after the retry interval");
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // A graceful restart: the same.
    windlass.process.terminate().await;
    let windlass = start_windlass_as(ns, "windlass", &cluster);
    // A killed predecessor holds the Lease until it expires (the chart's 15 s); the new leader
    // reads the catalog, then plans once a batch window has passed.
    windlass.catalog_read().await;
    wait_until(
        "the restarted controller to plan",
        Duration::from_secs(30),
        || std::future::ready((batches_planned(&windlass) >= 1.0).then_some(())),
    )
    .await;
    assert_eq!(
        list_claims().await.len(),
        2,
        "after SIGTERM: the pods have capacity coming"
    );
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // The capacity that was coming is where the pods run.
    let _registrar = start_registrar(&cluster, 1);
    let nodes = wait_until("both pods Running", Duration::from_secs(90), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let nodes: BTreeSet<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (nodes.len() == 2).then_some(nodes)
    })
    .await;
    println!("two pods, two NodeClaims across two restarts, on {nodes:?}");
    wait_until(
        "windlass_pending_pods to drop to 0",
        Duration::from_secs(15),
        || {
            std::future::ready(
                (windlass.metric("windlass_pending_pods") == Some(0.0)).then_some(()),
            )
        },
    )
    .await;
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    delete_pods(&pods).await;
    delete_claims(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
