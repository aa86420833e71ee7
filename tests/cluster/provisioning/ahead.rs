//! Demand-aware provisioning: a ScaledObject's scale-out launches its nodes in the tick it
//! decides, before its pods exist and are marked Unschedulable, and nothing is launched again
//! when they come. Side by side in one run, a second ScaledObject that opts out
//! (`windlass.dev/demand-aware: "false"`) takes the pending-pod path, on a NodePool of its own so
//! neither takes the other's room: the test prints each path's message → pod Running latency
//! and checks that the demand-aware one is not slower. A later scale-out that fits the nodes
//! already there launches nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use windlass::apis::scaled_object::ScaledObject;

use super::fixture::{delete_pool_and_class, node_class_and_pool};
use crate::disruption::{PoolRun, deployment_sized, patch_pool};
use crate::support::{TestEnv, unique, wait_until};
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_pool::NodePool;

const REPLICAS: usize = 3;

/// A ScaledObject scaling Deployment `name` by `queue`, one replica per message, up to `max`.
async fn scaled_object(
    env: &TestEnv,
    ns: &str,
    name: &str,
    queue: &str,
    demand_aware: bool,
    max: usize,
) {
    let annotations = if demand_aware {
        json!({})
    } else {
        json!({"windlass.dev/demand-aware": "false"})
    };
    let object: ScaledObject = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "maxReplicaCount": max,
            "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap();
    Api::<ScaledObject>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// Two paths side by side: Deployment and ScaledObject `aware` (demand-aware) on the run's
/// `pool`, and `pending` (opted out) on a NodePool of its own, so neither takes the other's
/// room; pods of `size` kept one per node, up to `max` replicas each, empty nodes consolidated
/// after `consolidate_after`.
pub struct SideBySide {
    pending_pool: String,
    classes: Api<EC2NodeClass>,
    pools: Api<NodePool>,
    pub aware_queue: String,
    pub pending_queue: String,
}

impl SideBySide {
    pub async fn start(
        env: &TestEnv,
        ns: &str,
        pool: &str,
        (aware, pending): (&str, &str),
        size: (&str, &str),
        consolidate_after: &str,
        max: usize,
    ) -> Self {
        let pending_pool = unique(pending);
        let (classes, pools) = node_class_and_pool(
            env,
            &pending_pool,
            json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
            json!({}),
        )
        .await;
        let disruption = json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": consolidate_after}});
        patch_pool(&pools, &pending_pool, disruption).await;
        deployment_sized(env, ns, pool, aware, 0, size, apart(aware)).await;
        deployment_sized(env, ns, &pending_pool, pending, 0, size, apart(pending)).await;
        let (aware_queue, pending_queue) = (env.queue(aware).await, env.queue(pending).await);
        scaled_object(env, ns, aware, &aware_queue, true, max).await;
        scaled_object(env, ns, pending, &pending_queue, false, max).await;
        Self {
            pending_pool,
            classes,
            pools,
            aware_queue,
            pending_queue,
        }
    }

    /// The opted-out object's NodePool.
    pub fn pending_pool(&self) -> &str {
        &self.pending_pool
    }

    pub async fn delete(self) {
        delete_pool_and_class(&self.pools, &self.classes, &self.pending_pool).await;
    }
}

/// One pod per node: pods of `app` keep apart.
fn apart(app: &str) -> serde_json::Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
    ]}})
}

pub fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Seconds from the start until each of `apps`' pods was first seen Running, by app.
async fn running_times(
    pods: &Api<Pod>,
    apps: &[&str],
    started: Instant,
) -> BTreeMap<String, Vec<f64>> {
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = started + Duration::from_secs(120);
    while seen.len() < apps.len() * REPLICAS {
        assert!(
            Instant::now() < deadline,
            "pods Running after 120 s: {seen:?}"
        );
        for pod in pods.list(&ListParams::default()).await.unwrap() {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if is_running(&pod) && !seen.contains_key(&name) {
                seen.insert(name, started.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut by_app: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (pod, at) in seen {
        let app = apps.iter().find(|app| pod.starts_with(&format!("{app}-")));
        by_app
            .entry(app.expect("a pod of one of the apps").to_string())
            .or_default()
            .push(at);
    }
    for times in by_app.values_mut() {
        times.sort_by(f64::total_cmp);
    }
    by_app
}

/// The `reason` Events about `object` in `ns`.
async fn events_about(env: &TestEnv, ns: &str, object: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
        })
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn a_scale_out_launches_its_nodes_before_its_pods_are_pending() {
    let run = PoolRun::start(
        "ahead",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}}),
    )
    .await;
    let (env, ns, name) = (&run.env, run.ns(), &run.name);
    let paths = SideBySide::start(
        env,
        ns,
        name,
        ("ahead", "pending"),
        ("1", "3Gi"),
        "5s",
        REPLICAS,
    )
    .await;
    let metric = |metric: &str, pool: &str| {
        run.windlass
            .metric(&format!("windlass_{metric}_total{{nodepool=\"{pool}\"}}"))
            .unwrap_or(0.0)
    };
    let created = |pool: &str| {
        (
            metric("nodeclaims_created", pool),
            metric("nodeclaims_created_ahead", pool),
        )
    };

    let started = Instant::now();
    tokio::join!(
        env.send_messages(&paths.aware_queue, REPLICAS),
        env.send_messages(&paths.pending_queue, REPLICAS)
    );
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let times = running_times(&pods, &["ahead", "pending"], started).await;
    let median = |app: &str| times[app][REPLICAS / 2];
    println!("message → pod Running, seconds (each pod, {REPLICAS} per path):");
    println!("  demand-aware:     {:?}", times["ahead"]);
    println!("  pending-pod path: {:?}", times["pending"]);
    println!(
        "  median {:.1} s vs {:.1} s",
        median("ahead"),
        median("pending")
    );
    assert!(
        median("ahead") <= median("pending"),
        "the demand-aware path is slower: {times:?}"
    );
    let one_each = REPLICAS as f64;
    assert_eq!(
        created(name),
        (one_each, one_each),
        "the demand-aware pool: one NodeClaim per pod, each created ahead, none again"
    );
    assert_eq!(
        created(paths.pending_pool()),
        (one_each, 0.0),
        "the pool of the object that opted out: one NodeClaim per pod, none ahead"
    );
    let launched = wait_until(
        "the LaunchedAhead Events",
        Duration::from_secs(10),
        || async {
            let notes = events_about(env, ns, "ahead", "LaunchedAhead").await;
            (notes.len() == REPLICAS).then_some(notes)
        },
    )
    .await;
    assert!(
        launched[0].contains("launched for 1 of its pods before they were pending"),
        "{launched:?}"
    );
    assert!(
        events_about(env, ns, "pending", "LaunchedAhead")
            .await
            .is_empty(),
        "the object that opted out launched nothing ahead"
    );

    // Small pods fit beside the running ones: a scale-out that fits launches nothing.
    deployment_sized(env, ns, name, "small", 0, ("100m", "128Mi"), json!({})).await;
    let small_queue = env.queue("small").await;
    scaled_object(env, ns, "small", &small_queue, true, REPLICAS).await;
    env.send_messages(&small_queue, 2).await;
    wait_until("the small pods to run", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=small"))
            .await
            .ok()?;
        (list.items.len() == 2 && list.items.iter().all(is_running)).then_some(())
    })
    .await;
    assert_eq!(
        created(name),
        (one_each, one_each),
        "no NodeClaim for a demand that fits"
    );
    paths.delete().await;
    run.finish().await;
}
