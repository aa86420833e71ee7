//! Demand-aware provisioning: a ScaledObject's scale-out launches its nodes in the tick it
//! decides, before its pods exist and are marked Unschedulable, and nothing is launched again
//! when they come. Side by side in one run, a second ScaledObject on the same pool opts out
//! (`windlass.dev/demand-aware: "false"`) and takes the pending-pod path: the test prints each
//! path's message → pod Running latency and checks that the demand-aware one is not slower.
//! A later scale-out that fits the nodes already there launches nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use windlass::apis::scaled_object::ScaledObject;

use crate::disruption::{PoolRun, deployment_sized};
use crate::support::{TestEnv, wait_until};

const REPLICAS: usize = 3;

/// A ScaledObject scaling Deployment `name` by `queue`, one replica per message.
async fn scaled_object(env: &TestEnv, ns: &str, name: &str, queue: &str, demand_aware: bool) {
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
            "maxReplicaCount": REPLICAS,
            "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap();
    Api::<ScaledObject>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// One pod per node: pods of `app` keep apart.
fn apart(app: &str) -> serde_json::Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}
    ]}})
}

fn is_running(pod: &Pod) -> bool {
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
    let size = ("1", "3Gi");
    for app in ["ahead", "pending"] {
        deployment_sized(env, ns, name, app, 0, size, apart(app)).await;
    }
    let (ahead_queue, pending_queue) = (env.queue("ahead").await, env.queue("pending").await);
    scaled_object(env, ns, "ahead", &ahead_queue, true).await;
    scaled_object(env, ns, "pending", &pending_queue, false).await;
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    let created = || {
        run.windlass
            .metric(&format!("windlass_nodeclaims_created_total{pool_label}"))
            .unwrap_or(0.0)
    };
    let created_ahead = || {
        run.windlass
            .metric(&format!(
                "windlass_nodeclaims_created_ahead_total{pool_label}"
            ))
            .unwrap_or(0.0)
    };

    let started = Instant::now();
    tokio::join!(
        env.send_messages(&ahead_queue, REPLICAS),
        env.send_messages(&pending_queue, REPLICAS)
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
    assert_eq!(
        created(),
        2.0 * REPLICAS as f64,
        "one NodeClaim per pod: nothing was launched twice"
    );
    assert_eq!(
        created_ahead(),
        REPLICAS as f64,
        "the demand-aware object's NodeClaims were created ahead, the other's were not"
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
    scaled_object(env, ns, "small", &small_queue, true).await;
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
        (created(), created_ahead()),
        (2.0 * REPLICAS as f64, REPLICAS as f64),
        "no NodeClaim for a demand that fits"
    );
    run.finish().await;
}
