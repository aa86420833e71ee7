//! Pools that cannot launch say why, on the NodePool and on each pod it leaves pending
//! (requirements that admit no instance type, an EC2NodeClass that is not ready, a limit), and a
//! type without a bundled price still launches, with an Event saying so.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    candidate_types, delete_pods, delete_pool_and_class, event_notes, live_instances,
    node_class_and_pool, pod_for_pool, pool_condition, wait_claims_gone,
};
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

#[tokio::test]
async fn pools_that_cannot_launch_say_why_and_an_unpriced_type_still_launches() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "why").await;
    let ns = namespace.name.as_str();
    let name = unique("unpriced");
    // t8i.medium is amd64 and has no bundled on-demand price (it is newer than the table).
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["t8i.medium"]},
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}
        ]),
        json!({}),
    )
    .await;
    // A second pool whose node class finds no subnet.
    let unready = unique("unready");
    let (_, _) = node_class_and_pool(&env, &unready, json!([]), json!({})).await;
    classes
        .patch(
            &unready,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"tags": {"windlass.dev/discovery": "nowhere"}}]}})),
        )
        .await
        .unwrap();
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    pod_for_pool(&pods, "unpriced", &name).await;
    pod_for_pool(&pods, "unready", &unready).await;

    let conflict = "kubernetes.io/arch In [arm64] and node.kubernetes.io/instance-type In [t8i.medium] admit no instance type together";
    let condition = wait_until(
        "the NodePool to say its requirements admit no instance type",
        Duration::from_secs(60),
        || pool_condition(&pools, &name, "InstanceTypesReady", "False"),
    )
    .await;
    assert!(
        condition.message.ends_with(conflict),
        "{}",
        condition.message
    );
    let pool_events = event_notes(&env, None, &name, "NoInstanceTypes").await;
    assert!(
        pool_events.iter().any(|n| n.ends_with(conflict)),
        "{pool_events:?}"
    );
    let first = wait_until(
        "the pod's FailedProvisioning Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, Some(ns), "unpriced", "FailedProvisioning")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(
        first.contains(&format!(
            "nodepool {name}: its requirements admit no instance type: {conflict}"
        )),
        "{first}"
    );
    let not_ready = wait_until(
        "the other pod's FailedProvisioning Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, Some(ns), "unready", "FailedProvisioning")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(
        not_ready.contains(&format!(
            "nodepool {unready}: EC2NodeClass {unready} is not ready"
        )),
        "{not_ready}"
    );

    // Fixed, but held by a limit: the pod's Event says the new reason, as a new Event.
    pools
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {
                "template": {"spec": {"requirements": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["t8i.medium"]},
                    {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}
                ]}},
                "limits": {"cpu": "1"}
            }})),
        )
        .await
        .unwrap();
    wait_until(
        "the NodePool's instance types to be admitted",
        Duration::from_secs(30),
        || pool_condition(&pools, &name, "InstanceTypesReady", "True"),
    )
    .await;
    let notes = wait_until(
        "a FailedProvisioning Event naming the limit",
        Duration::from_secs(30),
        || async {
            let notes = event_notes(&env, Some(ns), "unpriced", "FailedProvisioning").await;
            notes
                .iter()
                .any(|n| n.contains(&format!("nodepool {name}: limit cpu=1 reached")))
                .then_some(notes)
        },
    )
    .await;
    assert!(notes.len() >= 2, "{notes:?}");
    assert!(notes[0].contains("admit no instance type"), "{notes:?}");

    // Without the limit the unpriced type launches, and its NodeClaim says it had no price.
    pools
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"limits": null}})),
        )
        .await
        .unwrap();
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let claim = wait_until(
        "a NodeClaim for t8i.medium",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        },
    )
    .await;
    assert_eq!(candidate_types(&claim), ["t8i.medium"]);
    let unknown = wait_until(
        "the UnknownPrice Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, None, &claim.name_any(), "UnknownPrice")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(unknown.contains("t8i.medium"), "{unknown}");
    wait_until(
        "the t8i.medium instance",
        Duration::from_secs(60),
        || async { (live_instances(&env, &windlass.cluster).await.len() == 1).then_some(()) },
    )
    .await;

    delete_pods(&pods).await;
    claims
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    delete_pool_and_class(&pools, &classes, &unready).await;
    namespace.delete().await;
}
