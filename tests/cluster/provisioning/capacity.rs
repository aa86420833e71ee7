//! Out of capacity: with every spot offering out of capacity a NodeClaim launches on-demand;
//! with the cheapest type out of capacity it launches the next one, which is then the only
//! type the next NodeClaim offers; and with every type of the first 60 offered out of
//! capacity, the NodeClaim launches from the ones it keeps beyond them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    candidate_types, claim_with_label, delete_pods, delete_pool_and_class, ec2_catalog, event_note,
    exhaust, node_class_and_pool, pending_pods, restore, wait_claim_gone, wait_claims_gone,
};
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

#[tokio::test]
async fn spot_out_of_capacity_falls_back_to_on_demand() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "capacity").await;
    let ns = namespace.name.as_str();
    let name = unique("spot");
    let (classes, pools) = node_class_and_pool(&env, &name, json!([]), json!({})).await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let exhausted = exhaust(&env, &windlass.cluster, "spot:*:*").await;
    let pods = pending_pods(&env, ns, &name, 1).await;

    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let launched = claim_with_label(
        &claims,
        &selector,
        "windlass.dev/capacity-type",
        "the NodeClaim to launch on-demand",
        Duration::from_secs(60),
    )
    .await;
    restore(&env, &exhausted).await;
    assert_eq!(
        launched
            .labels()
            .get("windlass.dev/capacity-type")
            .map(String::as_str),
        Some("on-demand"),
        "spot was out of capacity everywhere"
    );
    let claim_name = launched.name_any();
    let failure = wait_until(
        "a LaunchFailed Event for the spot attempt",
        Duration::from_secs(30),
        || event_note(&env, &claim_name, "LaunchFailed"),
    )
    .await;
    assert!(
        failure.contains("(spot)") && failure.contains("InsufficientInstanceCapacity"),
        "{failure}"
    );
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    assert!(
        windlass.metric(&format!(
            "windlass_nodeclaims_launch_failures_total{pool_label}"
        )) >= Some(1.0)
    );
    assert_eq!(
        windlass.metric(&format!("windlass_nodeclaims_launched_total{pool_label}")),
        Some(1.0)
    );

    delete_pods(&pods).await;
    claims
        .delete(&claim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_claim_gone(&claims, &claim_name).await;
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

#[tokio::test]
async fn the_cheapest_type_out_of_capacity_launches_the_next_and_is_left_out_after() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "next-type").await;
    let ns = namespace.name.as_str();
    let name = unique("nexttype");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.xlarge", "m5.2xlarge"]}
        ]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let exhausted = exhaust(&env, &windlass.cluster, "on-demand:m5.xlarge:*").await;
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let first = claim_with_label(
        &claims,
        &selector,
        "node.kubernetes.io/instance-type",
        "the first NodeClaim to launch",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(candidate_types(&first), ["m5.2xlarge", "m5.xlarge"]);
    assert_eq!(
        first
            .labels()
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m5.2xlarge"),
        "m5.xlarge, the cheapest, was out of capacity"
    );

    // A pod that may not share a node with the worker: the second NodeClaim no longer offers
    // m5.xlarge while that is marked out of capacity.
    let big: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": name},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "worker"}}}
            ]}},
            "containers": [{"name": "big", "image": "big", "resources": {"requests": {"cpu": "3500m", "memory": "3Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &big).await.unwrap();
    let second = wait_until("a second NodeClaim", Duration::from_secs(60), || async {
        let list = claims
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|c| c.name_any() != first.name_any())
    })
    .await;
    restore(&env, &exhausted).await;
    assert_eq!(candidate_types(&second), ["m5.2xlarge"]);

    delete_pods(&pods).await;
    for claim in [&first, &second] {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// The cheapest types of the catalog, in price order, up to and with every type as cheap as
/// the 60th that surely fits a pod of `pending_pods` (1 CPU, 3 GiB): whichever 60 types fit
/// it best, they are all among these.
fn past_the_sixty_cheapest_that_fit(
    mut catalog: Vec<windlass::scheduling::instance_types::InstanceType>,
) -> Vec<String> {
    const GIB: i64 = 1 << 30;
    let on_demand_price = |it: &windlass::scheduling::instance_types::InstanceType| {
        it.offerings
            .iter()
            .filter(|o| o.capacity_type == "on-demand")
            .filter_map(|o| o.price)
            .reduce(f64::min)
    };
    catalog.retain(|it| on_demand_price(it).is_some());
    catalog.sort_by(|a, b| {
        on_demand_price(a)
            .unwrap()
            .total_cmp(&on_demand_price(b).unwrap())
    });
    let surely_fits = catalog
        .iter()
        .filter(|it| it.allocatable.cpu >= 2000 && it.allocatable.memory >= 6 * GIB);
    let sixtieth = on_demand_price(surely_fits.clone().nth(59).expect("60 types fit")).unwrap();
    catalog
        .iter()
        .take_while(|it| on_demand_price(it).unwrap() <= sixtieth)
        .map(|it| it.name.clone())
        .collect()
}

#[tokio::test]
async fn a_nodeclaim_whose_sixty_cheapest_types_are_out_of_capacity_launches_from_the_rest() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "fallback").await;
    let ns = namespace.name.as_str();
    let name = unique("fallback");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let cheapest = past_the_sixty_cheapest_that_fit(ec2_catalog(&env).await);
    let out_of_capacity: Vec<String> = cheapest
        .iter()
        .map(|name| format!("on-demand:{name}:*"))
        .collect();
    let exhausted = exhaust(&env, &windlass.cluster, &out_of_capacity.join(",")).await;
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let launched = claim_with_label(
        &claims,
        &selector,
        "node.kubernetes.io/instance-type",
        "the NodeClaim to launch past its 60 cheapest types",
        Duration::from_secs(120),
    )
    .await;
    restore(&env, &exhausted).await;
    let candidates = candidate_types(&launched);
    assert_eq!(
        candidates.len(),
        600,
        "of the catalog's 1366 types, the NodeClaim keeps the 600 cheapest that fit"
    );
    let instance_type = &launched.labels()["node.kubernetes.io/instance-type"];
    assert!(
        !cheapest.contains(instance_type),
        "{instance_type} was out of capacity"
    );
    let claim_name = launched.name_any();
    let failure = event_note(&env, &claim_name, "LaunchFailed")
        .await
        .expect("a LaunchFailed Event for the first attempts");
    assert!(
        failure.contains("InsufficientInstanceCapacity"),
        "{failure}"
    );
    println!(
        "{claim_name}: {} candidate types, launched {instance_type} after: {failure}",
        candidates.len()
    );

    delete_pods(&pods).await;
    claims
        .delete(&claim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_claim_gone(&claims, &claim_name).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
