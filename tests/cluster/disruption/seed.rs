//! Seed 001 end to end, both halves in one process: messages arrive, the ScaledObject scales
//! its Deployment out, Windlass launches a node per pod, a replica pinned by hand beyond the
//! NodePool's limits stays Pending with the limit as its reason, the queue drains, the replicas
//! go to zero, and every launched instance is terminated, one node at a time under a budget of
//! one.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::labels::PAUSED_REPLICAS_ANNOTATION;
use windlass::apis::scaled_object::ScaledObject;

use super::{MostAtOnce, PoolRun, Timeline, pool_claims, wait_pods_running, worker_deployment};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, event_notes, live_instances, pool_condition,
};
use crate::support::wait_until;

/// maxReplicaCount, at queueLength 1: one replica per message.
const REPLICAS: usize = 2;

#[tokio::test]
async fn seed_001_scales_out_launches_nodes_and_gives_every_instance_back() {
    let run = PoolRun::start(
        "seed",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s",
                              "budgets": [{"nodes": "1"}]},
               "limits": {"cpu": "4", "memory": "8Gi"}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let selector = format!("windlass.dev/nodepool={name}");
    let queue = env.queue("seed").await;
    let deployments = worker_deployment(env, ns, name, 0).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    let object: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "maxReplicaCount": REPLICAS,
            "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap();
    objects
        .create(&PostParams::default(), &object)
        .await
        .unwrap();

    // The budget holds over the whole run: never two of the pool's NodeClaims deleting at once.
    let deleting = MostAtOnce::watch(claims, name, |c| c.metadata.deletion_timestamp.is_some());

    let timeline = Timeline::start();
    let mark = |what: &str| timeline.mark(what);
    env.send_messages(&queue, REPLICAS).await;
    mark(&format!("{REPLICAS} messages on the queue"));
    wait_until("the scale-out", Duration::from_secs(30), || async {
        let d = deployments.get("worker").await.ok()?;
        (d.spec?.replicas? == REPLICAS as i32).then_some(())
    })
    .await;
    mark(&format!("Deployment scaled to {REPLICAS}"));
    wait_until("a NodeClaim per pod", Duration::from_secs(60), || async {
        let list = claims
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        (list.items.len() == REPLICAS).then_some(())
    })
    .await;
    mark(&format!("{REPLICAS} NodeClaims created"));
    wait_until(
        "the pool's status to show its budget",
        Duration::from_secs(30),
        || async {
            let pool = run.pools.get(name).await.ok()?;
            let allowed = pool.status?.allowed_disruptions;
            (allowed.get("Empty") == Some(&1)).then_some(())
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_pods_running(&pods, REPLICAS).await;
    mark(&format!("{REPLICAS} pods Running, one per node"));
    let launched = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    let instances: BTreeSet<String> = launched
        .iter()
        .map(|c| claim_instance(c.status.as_ref().unwrap()))
        .collect();
    let nodes: BTreeSet<String> = launched
        .iter()
        .filter_map(|c| c.status.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(instances.len(), REPLICAS, "one instance per pod");

    // By hand, the way KEDA users pin replicas: paused-replicas holds the Deployment at 3 and
    // stops the ScaledObject from scaling it, so the third pod asks for a node past the limits.
    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PAUSED_REPLICAS_ANNOTATION: "3"}}})),
        )
        .await
        .unwrap();
    wait_until(
        "the Deployment pinned at 3",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("worker").await.ok()?;
            (d.spec?.replicas? == 3).then_some(())
        },
    )
    .await;
    mark("paused-replicas 3 set by hand: Deployment at 3");
    let limit = format!("nodepool {name}: limit ");
    let (pending, note) = wait_until(
        "the third pod's FailedProvisioning Event naming the limit",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let pending = list.items.into_iter().find(|p| {
                p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                    && p.metadata.deletion_timestamp.is_none()
            })?;
            let pending = pending.name_any();
            let notes = event_notes(env, Some(ns), &pending, "FailedProvisioning").await;
            let note = notes
                .into_iter()
                .find(|n| n.contains(&limit) && n.contains("reached"))?;
            Some((pending, note))
        },
    )
    .await;
    mark(&format!("pod {pending} stays Pending: {note}"));
    let reached = wait_until(
        "the NodePool's LimitReached condition",
        Duration::from_secs(30),
        || pool_condition(&run.pools, name, "LimitReached", "True"),
    )
    .await;
    mark(&format!("NodePool LimitReached: {}", reached.message));
    assert_eq!(
        pool_claims(claims, name).await.len(),
        REPLICAS,
        "no NodeClaim beyond the limits"
    );
    let pod = pods.get(&pending).await.unwrap();
    assert_eq!(
        pod.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "the pod past the limits is not running"
    );
    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {PAUSED_REPLICAS_ANNOTATION: null}}})),
        )
        .await
        .unwrap();
    mark("paused-replicas taken off");

    env.sqs()
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    mark("queue drained");
    wait_until("the scale-in", Duration::from_secs(60), || async {
        let d = deployments.get("worker").await.ok()?;
        (d.spec?.replicas? == 0).then_some(())
    })
    .await;
    mark("Deployment scaled to 0");
    wait_until(
        "every NodeClaim to go",
        Duration::from_secs(150),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
    mark("every NodeClaim gone");
    let node_api: Api<Node> = Api::all(env.client.clone());
    for node in &nodes {
        assert!(
            node_api.get_opt(node).await.unwrap().is_none(),
            "Node {node} is gone"
        );
    }
    for instance in &instances {
        assert_terminated(env, instance).await;
    }
    assert!(
        live_instances(env, &run.windlass.cluster).await.is_empty(),
        "no instance of this install is left running"
    );
    mark(&format!(
        "all {} instances terminated in moto, their Nodes gone",
        instances.len()
    ));
    assert_eq!(
        deleting.stop(),
        1,
        "a budget of one node disrupts one node at a time"
    );

    objects.delete("worker", &Default::default()).await.unwrap();
    wait_until(
        "the ScaledObject to go",
        Duration::from_secs(30),
        || async {
            objects
                .get_opt("worker")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    run.finish().await;
}
