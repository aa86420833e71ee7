//! Consolidation of underused nodes: two half-used nodes become one (delete), a node whose pod
//! fits a cheaper type is replaced by it (replace), two nodes are replaced together by one
//! cheaper node (multi-node), the replacements Initialized first; the hourly savings are in
//! the Event and the metric. While a ScaledObject whose pods run in the pool scales out, the
//! pool is not consolidated. A spot node stays put: neither drifted (its instance carries its
//! launch template's security groups) nor replaced by a cheaper spot one with spot-to-spot
//! consolidation off.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{
    PoolRun, deployment, deployment_sized, initialized, initialized_claims, patch_pool,
    pool_claims, wait_pods_running,
};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, describe_instance, event_notes, wait_claim_gone,
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

/// Starts `first`, then `second` (each one pod of `size`) so that each gets a node of its own.
async fn two_nodes(
    run: &PoolRun,
    size: (&str, &str),
) -> Vec<windlass::apis::node_claim::NodeClaim> {
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    deployment_sized(env, ns, name, "first", 1, size, json!({})).await;
    let first = initialized_claims(claims, name, 1).await.remove(0);
    let first_node = first.status.as_ref().unwrap().node_name.clone().unwrap();
    wait_pods_running(&pods, 1).await;
    cordon(&nodes, &first_node, true).await;
    deployment_sized(env, ns, name, "second", 1, size, json!({})).await;
    let both = initialized_claims(claims, name, 2).await;
    wait_pods_running(&pods, 2).await;
    cordon(&nodes, &first_node, false).await;
    both
}

#[tokio::test]
async fn two_nodes_are_replaced_together_by_one_cheaper_node() {
    let mut spec = consolidating(&["m5.large"]);
    // The default budget (10%) lets one of two nodes go at a time: two at once need more.
    spec["disruption"]["budgets"] = json!([{"nodes": "100%"}]);
    let run = PoolRun::start("multi", spec).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    // One pod of 1.2 vCPU per m5.large ($0.096/h, 1.93 vCPU allocatable): neither node can
    // take the other's pod and no single type is cheaper, but one c5.xlarge ($0.17/h), allowed
    // once both run (a requirement, so no drift), can take both.
    let old = two_nodes(&run, ("1200m", "2Gi")).await;
    patch_pool(
        &run.pools,
        name,
        json!({"template": {"spec": {"requirements": requirements(&["m5.large", "c5.xlarge"])}}}),
    )
    .await;
    let old_names: Vec<String> = old.iter().map(|c| c.name_any()).collect();
    let started = Instant::now();
    let replacement = wait_until(
        "a replacement for both NodeClaims",
        Duration::from_secs(180),
        || async {
            pool_claims(claims, name).await.into_iter().find(|c| {
                c.annotations()
                    .get("windlass.dev/replaces")
                    .is_some_and(|r| old_names.iter().all(|n| r.split(',').any(|p| p == n)))
            })
        },
    )
    .await;
    println!(
        "{:.1}s after both pods ran, {} replaces {}",
        started.elapsed().as_secs_f64(),
        replacement.name_any(),
        old_names.join(", ")
    );
    let deleted = wait_until(
        "both old NodeClaims to be deleted",
        Duration::from_secs(150),
        || async {
            let list = pool_claims(claims, name).await;
            let going = old_names.iter().all(|n| {
                list.iter()
                    .find(|c| c.name_any() == *n)
                    .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            });
            let replacement = list
                .into_iter()
                .find(|c| c.name_any() == replacement.name_any());
            going.then_some(replacement)
        },
    )
    .await
    .expect("the replacement stays");
    assert!(
        initialized(&deleted),
        "the replacement was Initialized before the old nodes were deleted"
    );
    let node = Api::<Node>::all(env.client.clone())
        .get(deleted.status.as_ref().unwrap().node_name.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        node.labels()
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("c5.xlarge")
    );
    for claim in &old {
        wait_claim_gone(claims, &claim.name_any()).await;
        assert_terminated(env, &claim_instance(claim.status.as_ref().unwrap())).await;
    }
    wait_pods_running(&pods, 2).await;
    let notes = event_notes(env, None, &old_names[0], "Disrupting").await;
    println!("{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the pods of these 2 nodes") && n.contains("(consolidation)")),
        "the Event says both nodes go together: {notes:?}"
    );
    let saved = run
        .windlass
        .metric(&format!(
            "windlass_consolidation_savings_dollars_per_hour_total{{nodepool=\"{name}\"}}"
        ))
        .unwrap();
    assert!(
        (saved - 0.022).abs() < 1e-9,
        "2 × $0.096/h for $0.17/h saves $0.022/h, not {saved}"
    );
    run.finish().await;
}

#[tokio::test]
async fn a_pool_is_not_consolidated_while_a_scaled_object_scales_out_onto_it() {
    // A budget of no node keeps the pool as it is until the scale-out has begun: on a loaded
    // machine the steps to the raise can take longer than a consolidation's 15 s validation.
    let mut spec = consolidating(&["m5.xlarge"]);
    spec["disruption"]["budgets"] = json!([{"nodes": "0"}]);
    let run = PoolRun::start("hold", spec).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    // Two pods of 1 vCPU on two m5.xlarge: one node could take both, and a third.
    let both = two_nodes(&run, ("1", "2Gi")).await;
    let queue = env.queue("hold").await;
    let scaled_object: windlass::apis::scaled_object::ScaledObject =
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "second"},
            "spec": {
                "scaleTargetRef": {"name": "second"},
                "pollingInterval": 2, "cooldownPeriod": 600,
                "minReplicaCount": 1, "maxReplicaCount": 2,
                "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
            }
        }))
        .unwrap();
    let objects: Api<windlass::apis::scaled_object::ScaledObject> =
        Api::namespaced(env.client.clone(), ns);
    objects
        .create(&kube::api::PostParams::default(), &scaled_object)
        .await
        .unwrap();
    env.send_messages(&queue, 2).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(env.client.clone(), ns);
    wait_until("the scale-out to 2", Duration::from_secs(60), || async {
        let d = deployments.get("second").await.ok()?;
        (d.spec?.replicas? == 2).then_some(())
    })
    .await;
    let raised = Instant::now();
    patch_pool(
        &run.pools,
        name,
        json!({"disruption": {"budgets": [{"nodes": "100%"}]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_pods_running(&pods, 3).await;
    // Without the hold one node was marked for consolidation 58 s after the raise. With it
    // nothing can be before 75 s: the hold's minute from the raise, then 15 s of validation.
    while raised.elapsed() < Duration::from_secs(68) {
        let list = pool_claims(claims, name).await;
        assert!(
            list.len() == 2
                && list.iter().all(|c| c.metadata.deletion_timestamp.is_none()
                    && !c.annotations().contains_key("windlass.dev/disruption")),
            "no node is consolidated {:.0}s into the scale-out",
            raised.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let notes = event_notes(env, None, name, "ConsolidationHeld").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&format!("ScaledObject/{ns}/second"))),
        "a ConsolidationHeld Event on the pool names the ScaledObject: {notes:?}"
    );
    // Once the scale-out has settled the pool consolidates as before: about 96 s after the raise
    // alone, later when the whole suite loads the machine (120 s timed out once in CI).
    wait_until(
        "one of the two nodes to be consolidated",
        Duration::from_secs(180),
        || async {
            // A deleted claim can be gone before a poll sees its deletion timestamp.
            let list = pool_claims(claims, name).await;
            (list.len() < 2
                || list.iter().any(|c| {
                    c.metadata.deletion_timestamp.is_some()
                        || !both.iter().any(|b| b.name_any() == c.name_any())
                }))
            .then_some(())
        },
    )
    .await;
    println!(
        "consolidated {:.1}s after the raise",
        raised.elapsed().as_secs_f64()
    );
    assert!(
        raised.elapsed() >= Duration::from_secs(60),
        "not before the hold ends"
    );
    objects
        .delete("second", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        "the ScaledObject to be gone",
        Duration::from_secs(30),
        || async {
            objects
                .get_opt("second")
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
async fn a_spot_node_is_neither_drifted_nor_replaced_by_spot() {
    let run = PoolRun::start(
        "spotstays",
        json!({"disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5s"},
               "template": {"spec": {"requirements": [
                   {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["spot", "on-demand"]}
               ]}}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    deployment(env, ns, name, "worker", 1, "1", json!({})).await;
    let claim = initialized_claims(claims, name, 1).await.remove(0);
    wait_pods_running(&pods, 1).await;
    let node_name = claim.status.as_ref().unwrap().node_name.clone().unwrap();
    let node = nodes.get(&node_name).await.unwrap();
    assert_eq!(
        node.labels()
            .get("windlass.dev/capacity-type")
            .map(String::as_str),
        Some("spot"),
        "a pool allowing spot launches spot"
    );
    let instance = describe_instance(env, &claim_instance(claim.status.as_ref().unwrap())).await;
    let mut launched: Vec<&str> = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    launched.sort_unstable();
    let class = run.classes.get(name).await.unwrap();
    let mut resolved: Vec<&str> = class
        .status
        .as_ref()
        .unwrap()
        .security_groups
        .iter()
        .map(|g| g.id.as_str())
        .collect();
    resolved.sort_unstable();
    assert_eq!(
        launched, resolved,
        "the instance has its launch template's groups"
    );

    // Drift and consolidation both look at the node within this window: a listing of
    // instances every 30 s, and consolidation once it is Consolidatable (5 s after its pod).
    let started = Instant::now();
    let mut consolidatable = false;
    while started.elapsed() < Duration::from_secs(90) {
        let list = pool_claims(claims, name).await;
        assert_eq!(
            list.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
            [claim.name_any()],
            "the same NodeClaim, alone, after {:.0}s",
            started.elapsed().as_secs_f64()
        );
        let conditions = &list[0].status.as_ref().unwrap().conditions;
        let drifted = conditions.iter().find(|c| c.type_ == "Drifted");
        assert!(drifted.is_none(), "drifted: {drifted:?}");
        assert!(list[0].metadata.deletion_timestamp.is_none());
        consolidatable |= conditions
            .iter()
            .any(|c| c.type_ == "Consolidatable" && c.status == "True");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(consolidatable, "consolidation had the node as a candidate");
    println!(
        "spot node {node_name} ({}) kept for {:.0}s, not drifted",
        node.labels()
            .get("node.kubernetes.io/instance-type")
            .map_or("?", String::as_str),
        started.elapsed().as_secs_f64()
    );
    run.finish().await;
}
