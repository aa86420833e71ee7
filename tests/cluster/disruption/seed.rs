//! Seed 001 end to end, both halves in one process: messages arrive, the ScaledObject scales
//! its Deployment out, Windlass launches a node per pod, the queue drains, the replicas go to
//! zero, and every launched instance is terminated, one node at a time under a budget of one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use windlass::apis::scaled_object::ScaledObject;

use super::{MostAtOnce, PoolRun, wait_pods_running, worker_deployment};
use crate::provisioning::fixture::{assert_terminated, claim_instance, live_instances};
use crate::support::wait_until;

const REPLICAS: usize = 3;

#[tokio::test]
async fn seed_001_scales_out_launches_nodes_and_gives_every_instance_back() {
    let run = PoolRun::start(
        "seed",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s",
                              "budgets": [{"nodes": "1"}]}}),
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
            "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {"queueURL": queue, "queueLength": "2"}}]
        }
    }))
    .unwrap();
    objects
        .create(&PostParams::default(), &object)
        .await
        .unwrap();

    // The budget holds over the whole run: never two of the pool's NodeClaims deleting at once.
    let deleting = MostAtOnce::watch(claims, name, |c| c.metadata.deletion_timestamp.is_some());

    let started = Instant::now();
    let mark = |what: &str| println!("{:>6.1}s {what}", started.elapsed().as_secs_f64());
    env.send_messages(&queue, 2 * REPLICAS).await;
    mark(&format!("{} messages on the queue", 2 * REPLICAS));
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
