//! Replacement: a drifted or expired node gets its replacement launched and Initialized before
//! it is drained, its pods move there, and a budget of one node replaces one node at a time. A
//! node in a subnet its EC2NodeClass no longer selects is replaced into the selected one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{
    MostAtOnce, PoolRun, initialized, initialized_claims, patch_pool, pool_claims,
    wait_pod_running_on, wait_pods_running, worker_deployment,
};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, describe_instance, event_notes, wait_claim_gone,
};
use crate::support::wait_until;

#[tokio::test]
async fn a_template_change_replaces_each_node_one_budget_at_a_time() {
    let run = PoolRun::start(
        "drift",
        json!({"disruption": {"consolidateAfter": "Never", "budgets": [{"nodes": "1"}]}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    worker_deployment(env, ns, name, 2).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let old = initialized_claims(claims, name, 2).await;
    wait_pods_running(&pods, 2).await;
    let old_names: BTreeSet<String> = old.iter().map(|c| c.name_any()).collect();
    let old_instances: Vec<String> = old
        .iter()
        .map(|c| claim_instance(c.status.as_ref().unwrap()))
        .collect();

    // Never more than one node being replaced or drained at once.
    let disrupting = MostAtOnce::watch(claims, name, |c| {
        c.metadata.deletion_timestamp.is_some()
            || c.annotations().contains_key("windlass.dev/disruption")
    });

    let started = Instant::now();
    patch_pool(
        &run.pools,
        name,
        json!({"template": {"metadata": {"labels": {"generation": "two"}}}}),
    )
    .await;
    let drifted = wait_until(
        "both NodeClaims Drifted",
        Duration::from_secs(30),
        || async {
            let list = pool_claims(claims, name).await;
            let drifted: Vec<String> = list
                .iter()
                .filter(|c| old_names.contains(&c.name_any()))
                .filter_map(|c| {
                    c.status
                        .as_ref()?
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Drifted" && c.status == "True")
                        .map(|c| c.message.clone())
                })
                .collect();
            (drifted.len() == 2).then_some(drifted)
        },
    )
    .await;
    println!(
        "{:>5.1}s Drifted: {}",
        started.elapsed().as_secs_f64(),
        drifted[0]
    );
    assert!(drifted[0].contains("template changed"), "{drifted:?}");
    wait_until(
        "an old NodeClaim to be Disrupting",
        Duration::from_secs(60),
        || async {
            pool_claims(claims, name).await.into_iter().find(|c| {
                old_names.contains(&c.name_any())
                    && c.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| {
                            c.type_ == "Disrupting" && c.status == "True" && c.reason == "Drifted"
                        })
                    })
            })
        },
    )
    .await;
    let new = wait_until(
        "two new NodeClaims and the old ones gone",
        Duration::from_secs(240),
        || async {
            let list = pool_claims(claims, name).await;
            let done = list.len() == 2
                && list
                    .iter()
                    .all(|c| !old_names.contains(&c.name_any()) && initialized(c));
            done.then_some(list)
        },
    )
    .await;
    println!(
        "{:>5.1}s both nodes replaced",
        started.elapsed().as_secs_f64()
    );
    for claim in &new {
        assert_eq!(
            claim.labels().get("generation").map(String::as_str),
            Some("two")
        );
        assert!(
            claim
                .annotations()
                .get("windlass.dev/replaces")
                .is_some_and(|old| old_names.contains(old)),
            "{} names the node it replaced",
            claim.name_any()
        );
    }
    wait_pods_running(&pods, 2).await;
    for instance in &old_instances {
        assert_terminated(env, instance).await;
    }
    assert_eq!(
        disrupting.stop(),
        1,
        "a budget of one node replaces one node at a time"
    );
    let notes = event_notes(env, None, old_names.first().unwrap(), "Disrupting").await;
    assert!(
        notes.iter().any(|n| n.contains("(drift)")),
        "a Disrupting Event says why: {notes:?}"
    );
    assert_eq!(
        run.windlass.metric(&format!(
            "windlass_disruption_actions_total{{nodepool=\"{name}\",reason=\"drifted\"}}"
        )),
        Some(2.0)
    );
    run.finish().await;
}

#[tokio::test]
async fn an_expired_node_is_replaced_and_its_replacement_is_ready_before_it_drains() {
    let run = PoolRun::start(
        "expire",
        json!({"disruption": {"consolidateAfter": "Never"},
               "template": {"spec": {"expireAfter": "45s"}}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    worker_deployment(env, ns, name, 1).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let old = initialized_claims(claims, name, 1).await.remove(0);
    wait_pods_running(&pods, 1).await;
    // Claims made from now on live for ever; the one launched keeps its 45 s.
    patch_pool(
        &run.pools,
        name,
        json!({"template": {"spec": {"expireAfter": "Never"}}}),
    )
    .await;
    let created = old.metadata.creation_timestamp.clone().unwrap().0;
    let (replacement, deleting) = wait_until(
        "the old NodeClaim to be deleted",
        Duration::from_secs(150),
        || async {
            let list = pool_claims(claims, name).await;
            let old_now = list.iter().find(|c| c.name_any() == old.name_any());
            let deleting = old_now.is_none_or(|c| c.metadata.deletion_timestamp.is_some());
            let replacement = list
                .iter()
                .find(|c| c.annotations().get("windlass.dev/replaces") == Some(&old.name_any()))
                .cloned();
            deleting.then_some((replacement, jiff::Timestamp::now()))
        },
    )
    .await;
    let lived = deleting.duration_since(created);
    println!("old NodeClaim deleted {lived:#} after its creation");
    assert!(
        lived >= jiff::SignedDuration::from_secs(45),
        "not before its expireAfter: {lived:#}"
    );
    let replacement = replacement.expect("a replacement NodeClaim names the one it replaces");
    assert!(
        initialized(&replacement),
        "the replacement was Initialized before the old node was deleted"
    );
    assert_eq!(replacement.spec.expire_after, "Never");
    wait_pod_running_on(&pods, &replacement, "the pod to run on the replacement").await;
    wait_claim_gone(claims, &old.name_any()).await;
    assert_terminated(env, &claim_instance(old.status.as_ref().unwrap())).await;
    run.finish().await;
}

#[tokio::test]
async fn a_node_outside_its_class_subnets_is_replaced_into_them() {
    let run = PoolRun::start(
        "netdrift",
        json!({"disruption": {"consolidateAfter": "Never"}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    worker_deployment(env, ns, name, 1).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let old = initialized_claims(claims, name, 1).await.remove(0);
    wait_pods_running(&pods, 1).await;
    let old_instance = claim_instance(old.status.as_ref().unwrap());
    let launched = describe_instance(env, &old_instance).await;
    let launched_in = launched
        .subnet_id()
        .expect("the instance's subnet")
        .to_owned();
    let vpc = launched.vpc_id().expect("the instance's VPC").to_owned();
    let subnets = env
        .ec2()
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(&vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let other = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id())
        .find(|s| *s != launched_in)
        .expect("another subnet in the VPC")
        .to_owned();

    // The class now selects only another subnet.
    let started = Instant::now();
    run.classes
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"subnetSelectorTerms": [{"id": other}]}})),
        )
        .await
        .unwrap();
    let (reason, message) = wait_until(
        "the NodeClaim to drift by its subnet",
        Duration::from_secs(90),
        || async {
            let claim = claims.get(&old.name_any()).await.ok()?;
            let drifted = claim
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Drifted" && c.status == "True")?;
            Some((drifted.reason, drifted.message))
        },
    )
    .await;
    println!(
        "Drifted {:.1}s after the selector change: {reason}: {message}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(reason, "SubnetDrifted");
    assert!(message.contains(&launched_in), "{message}");
    let replacement = wait_until(
        "a replacement NodeClaim, Initialized",
        Duration::from_secs(120),
        || async {
            pool_claims(claims, name).await.into_iter().find(|c| {
                c.annotations().get("windlass.dev/replaces") == Some(&old.name_any())
                    && initialized(c)
            })
        },
    )
    .await;
    wait_claim_gone(claims, &old.name_any()).await;
    assert_terminated(env, &old_instance).await;
    let new_instance =
        describe_instance(env, &claim_instance(replacement.status.as_ref().unwrap())).await;
    assert_eq!(
        new_instance.subnet_id(),
        Some(other.as_str()),
        "the replacement runs in the selected subnet"
    );
    wait_pod_running_on(&pods, &replacement, "the pod to run on the replacement").await;
    println!(
        "replaced into {other} {:.1}s after the selector change",
        started.elapsed().as_secs_f64()
    );
    run.finish().await;
}
