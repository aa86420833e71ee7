//! Consolidation of underused nodes: two half-used nodes become one (delete), and a node whose
//! pod fits a cheaper type is replaced by it (replace), the replacement Initialized first; the
//! hourly savings are in the Event and the metric.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{
    PoolRun, deployment, initialized, initialized_claims, patch_pool, pool_claims,
    wait_pods_running,
};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, event_notes, wait_claim_gone,
};
use crate::support::wait_until;

fn requirements(types: &[&str]) -> serde_json::Value {
    json!([
        {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types}
    ])
}

fn consolidating(types: &[&str]) -> serde_json::Value {
    json!({"disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "10s"},
           "template": {"spec": {"requirements": requirements(types)}}})
}

async fn cordon(nodes: &Api<Node>, name: &str, unschedulable: bool) {
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn two_half_used_nodes_become_one() {
    let run = PoolRun::start("consolidate", consolidating(&["m5.xlarge"])).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    // Two pods of 1.5 vCPU on two m5.xlarge nodes (3.92 vCPU each): either node can take both.
    deployment(env, ns, name, "first", 1, "1500m", json!({})).await;
    let first = initialized_claims(claims, name, 1).await.remove(0);
    let first_node = first.status.as_ref().unwrap().node_name.clone().unwrap();
    wait_pods_running(&pods, 1).await;
    cordon(&nodes, &first_node, true).await;
    deployment(env, ns, name, "second", 1, "1500m", json!({})).await;
    let both = initialized_claims(claims, name, 2).await;
    wait_pods_running(&pods, 2).await;
    cordon(&nodes, &first_node, false).await;
    let started = Instant::now();
    let instances: Vec<String> = both
        .iter()
        .map(|c| claim_instance(c.status.as_ref().unwrap()))
        .collect();

    wait_until(
        "a NodeClaim to be Consolidatable",
        Duration::from_secs(90),
        || async {
            pool_claims(claims, name).await.into_iter().find(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Consolidatable" && c.status == "True")
                })
            })
        },
    )
    .await;
    let left = wait_until(
        "one of the two NodeClaims to go",
        Duration::from_secs(150),
        || async {
            let list = pool_claims(claims, name).await;
            (list.len() == 1 && list[0].metadata.deletion_timestamp.is_none()).then_some(list)
        },
    )
    .await
    .remove(0);
    println!(
        "{:.1}s after both pods ran, one node was consolidated away",
        started.elapsed().as_secs_f64()
    );
    let kept = left.status.as_ref().unwrap().node_name.clone();
    wait_until(
        "both pods on the node that stays",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let running: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            (running.len() == 2
                && running
                    .iter()
                    .all(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()) == kept))
            .then_some(())
        },
    )
    .await;
    let removed = both
        .iter()
        .find(|c| c.name_any() != left.name_any())
        .unwrap();
    let removed_instance = instances
        .iter()
        .find(|i| **i == claim_instance(removed.status.as_ref().unwrap()))
        .unwrap();
    assert_terminated(env, removed_instance).await;
    let notes = event_notes(env, None, &removed.name_any(), "Disrupting").await;
    println!("{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("fit on other nodes") && n.contains("(consolidation), saving $")),
        "a Disrupting Event says why and what it saves: {notes:?}"
    );
    assert_eq!(
        run.windlass.metric(&format!(
            "windlass_disruption_actions_total{{nodepool=\"{name}\",reason=\"underutilized\"}}"
        )),
        Some(1.0)
    );
    run.finish().await;
}

#[tokio::test]
async fn a_node_is_replaced_by_a_cheaper_type_its_pod_fits() {
    let run = PoolRun::start("cheaper", consolidating(&["m5.xlarge"])).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    deployment(env, ns, name, "worker", 1, "1500m", json!({})).await;
    let old = initialized_claims(claims, name, 1).await.remove(0);
    wait_pods_running(&pods, 1).await;
    // A smaller type becomes allowed: a requirement, not a hashed field, so this is no drift.
    patch_pool(
        &run.pools,
        name,
        json!({"template": {"spec": {"requirements": requirements(&["m5.large", "m5.xlarge"])}}}),
    )
    .await;
    let started = Instant::now();
    let (replacement, deleting) = wait_until(
        "the old NodeClaim to be deleted",
        Duration::from_secs(150),
        || async {
            let list = pool_claims(claims, name).await;
            let gone = list
                .iter()
                .find(|c| c.name_any() == old.name_any())
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some());
            let replacement = list
                .into_iter()
                .find(|c| c.annotations().get("windlass.dev/replaces") == Some(&old.name_any()));
            gone.then_some((replacement, started.elapsed()))
        },
    )
    .await;
    println!(
        "old m5.xlarge deleted {:.1}s after m5.large was allowed",
        deleting.as_secs_f64()
    );
    let replacement = replacement.expect("a replacement NodeClaim names the one it replaces");
    assert!(
        initialized(&replacement),
        "the replacement was Initialized before the old node was deleted"
    );
    let node = Api::<Node>::all(env.client.clone())
        .get(
            replacement
                .status
                .as_ref()
                .unwrap()
                .node_name
                .as_ref()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        node.labels()
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m5.large")
    );
    wait_claim_gone(claims, &old.name_any()).await;
    assert_terminated(env, &claim_instance(old.status.as_ref().unwrap())).await;
    wait_pods_running(&pods, 1).await;
    let notes = event_notes(env, None, &old.name_any(), "Disrupting").await;
    println!("{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("(consolidation), saving $0.0960/h")),
        "m5.xlarge ($0.192/h) for m5.large ($0.096/h): {notes:?}"
    );
    let saved = run
        .windlass
        .metric(&format!(
            "windlass_consolidation_savings_dollars_per_hour_total{{nodepool=\"{name}\"}}"
        ))
        .unwrap();
    assert!((saved - 0.096).abs() < 1e-9, "saved {saved} $/h");
    run.finish().await;
}
