//! ScaledJobs against the real cluster and SQS: one Job per message up to max, no extra Jobs
//! while their pods wait for a node, each strategy's and multi-trigger calculation's count,
//! activation and pause, pendingPodConditions, rollouts and their propagation, and outcome
//! counters that survive history cleanup and controller restarts without counting a Job twice,
//! and polls that read Jobs and pods from the controller's watches rather than listing them.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use windlass::apis::scaled_job::{ScaledJob, ScaledJobStatus};

use crate::release::{RELEASE, RELEASE_NAMESPACE};
use crate::scaled_object::merge;
use crate::support::{
    TestEnv, TestNamespace, delete_node, install_crds, start_windlass, test_node, wait_until,
};

pub fn scaled_job(
    name: &str,
    queue_url: &str,
    max: i32,
    pod: Value,
    limits: (i32, i32),
) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1",
        "kind": "ScaledJob",
        "metadata": {"name": name},
        "spec": {
            "pollingInterval": 1,
            "maxReplicaCount": max,
            "successfulJobsHistoryLimit": limits.0,
            "failedJobsHistoryLimit": limits.1,
            "jobTargetRef": {"backoffLimit": 2, "template": pod},
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue_url, "queueLength": "1"}}]
        }
    }))
    .unwrap()
}

/// A Job pod template: pinned to `node_label`'s node, failing when `fail`.
pub fn pod(node_label: &str, fail: bool) -> Value {
    let annotations = if fail {
        json!({"windlass.dev/test-outcome": "fail"})
    } else {
        json!({})
    };
    json!({
        "metadata": {"annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"windlass.dev/test-node": node_label},
            "containers": [{"name": "data-processor", "image": "registry.example.com/data-processor:1",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
        }
    })
}

async fn jobs_of(client: &Client, namespace: &str, name: &str) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default().labels(&format!("windlass.dev/scaled-job={name}")))
        .await
        .unwrap()
        .items
}

fn ended(job: &Job, condition: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == condition && c.status == "True")
        })
}

async fn status(api: &Api<ScaledJob>, name: &str) -> ScaledJobStatus {
    api.get(name).await.unwrap().status.unwrap_or_default()
}

async fn clean_up(env: &TestEnv, namespace: TestNamespace, node: Option<&str>) {
    namespace.delete().await;
    if let Some(node) = node {
        delete_node(&env.client, node).await;
    }
}

#[tokio::test]
async fn one_job_per_message_up_to_max_and_none_extra_while_pods_wait_for_a_node() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-create").await;
    let (queue, capped_queue) = (env.queue("sj-five").await, env.queue("sj-capped").await);
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    // No node has this label: every pod stays Pending, as while waiting for a new node.
    let nowhere = pod("no-such-node", false);
    api.create(
        &PostParams::default(),
        &scaled_job("five", &queue, 10, nowhere.clone(), (100, 100)),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &scaled_job("capped", &capped_queue, 3, nowhere, (100, 100)),
    )
    .await
    .unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_until(
        "both ScaledJobs to be polling",
        Duration::from_secs(30),
        || async {
            let ready = |status: ScaledJobStatus| {
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            };
            (ready(status(&api, "five").await) && ready(status(&api, "capped").await)).then_some(())
        },
    )
    .await;

    env.send_messages(&queue, 5).await;
    env.send_messages(&capped_queue, 5).await;
    let sent = std::time::Instant::now();
    for (name, expected) in [("five", 5), ("capped", 3)] {
        wait_until(
            &format!("{name} to have {expected} Jobs"),
            Duration::from_secs(30),
            || async {
                (jobs_of(&env.client, &namespace.name, name).await.len() == expected).then_some(())
            },
        )
        .await;
    }
    println!("messages visible -> 5 and 3 Jobs in {:?}", sent.elapsed());
    // Five more polls with the same 5 visible messages and 5 pending Jobs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        jobs_of(&env.client, &namespace.name, "five").await.len(),
        5,
        "Jobs created again for messages whose Jobs wait to start"
    );
    assert_eq!(
        jobs_of(&env.client, &namespace.name, "capped").await.len(),
        3,
        "more Jobs than maxReplicaCount"
    );
    let five = status(&api, "five").await;
    assert_eq!((five.running_jobs, five.pending_jobs), (5, 5));
    clean_up(&env, namespace, None).await;
}

#[tokio::test]
async fn failing_jobs_are_retried_and_counted_beyond_history_cleanup() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-fail").await;
    let node = test_node(&env.client, "kwok-sj-fail").await;
    let queue = env.queue("sj-fail").await;
    env.send_messages(&queue, 2).await;
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    api.create(
        &PostParams::default(),
        &scaled_job("fails", &queue, 2, pod(&node, true), (10, 1)),
    )
    .await
    .unwrap();
    let windlass = start_windlass(&namespace.name);

    let counted = wait_until(
        "two failed Jobs counted",
        Duration::from_secs(150),
        || async { Some(status(&api, "fails").await).filter(|s| s.failed >= 2) },
    )
    .await;
    assert_eq!(counted.succeeded, 0);
    assert_eq!(
        counted.retries,
        2 * counted.failed,
        "each failed Job was retried backoffLimit (2) times: {counted:?}"
    );
    wait_until(
        "failed Jobs beyond failedJobsHistoryLimit 1 to be deleted",
        Duration::from_secs(30),
        || async {
            let failed = jobs_of(&env.client, &namespace.name, "fails")
                .await
                .iter()
                .filter(|j| ended(j, "Failed"))
                .count();
            (failed <= 1).then_some(())
        },
    )
    .await;
    let after = status(&api, "fails").await;
    assert!(
        after.failed >= counted.failed,
        "a count was lost to history cleanup: {after:?}"
    );
    let labels = format!(r#"{{namespace="{}",name="fails"}}"#, namespace.name);
    let sample = |name: &str| windlass.metric(&format!("windlass_scaled_job_{name}{labels}"));
    let (failed, retries, created) = wait_until(
        "the failed Jobs and their retries on /metrics",
        Duration::from_secs(30),
        || {
            let counts = (
                sample("jobs_failed_total"),
                sample("retries_total"),
                sample("jobs_created_total"),
            );
            std::future::ready(match counts {
                (Some(failed), Some(retries), Some(created))
                    if failed >= 2.0 && retries == 2.0 * failed =>
                {
                    Some((failed, retries, created))
                }
                _ => None,
            })
        },
    )
    .await;
    println!("/metrics: {created} Jobs created, {failed} failed, {retries} retries");
    assert!(created >= failed, "{created} created, {failed} failed");
    assert_eq!(sample("jobs_succeeded_total"), Some(0.0));
    clean_up(&env, namespace, Some(&node)).await;
}

#[tokio::test]
async fn succeeded_jobs_are_counted_once_even_across_a_controller_restart() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-count").await;
    let node = test_node(&env.client, "kwok-sj-count").await;
    let queue = env.queue("sj-count").await;
    env.send_messages(&queue, 3).await;
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    api.create(
        &PostParams::default(),
        &scaled_job("works", &queue, 3, pod(&node, false), (100, 100)),
    )
    .await
    .unwrap();
    let windlass = start_windlass(&namespace.name);
    // The fake workers do not consume messages, so Jobs keep coming until the queue is purged.
    wait_until(
        "3 succeeded Jobs counted",
        Duration::from_secs(60),
        || async { (status(&api, "works").await.succeeded >= 3).then_some(()) },
    )
    .await;
    env.sqs()
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    let settled = wait_until(
        "every Job finished and counted",
        Duration::from_secs(60),
        || async {
            let jobs = jobs_of(&env.client, &namespace.name, "works").await;
            let complete = jobs.iter().filter(|j| ended(j, "Complete")).count() as i64;
            let status = status(&api, "works").await;
            (complete == jobs.len() as i64
                && status.succeeded == complete
                && status.running_jobs == 0)
                .then_some(status)
        },
    )
    .await;
    assert_eq!(settled.counted_jobs.len() as i64, settled.succeeded);
    let labels = format!(r#"{{namespace="{}",name="works"}}"#, namespace.name);
    let succeeded = settled.succeeded as f64;
    let on_metrics = |windlass: &crate::support::Windlass, name: &str| {
        windlass.metric(&format!("windlass_scaled_job_{name}{labels}"))
    };
    wait_until(
        "every created Job counted succeeded on /metrics",
        Duration::from_secs(30),
        || {
            std::future::ready(
                (on_metrics(&windlass, "jobs_created_total") == Some(succeeded)
                    && on_metrics(&windlass, "jobs_succeeded_total") == Some(succeeded)
                    && on_metrics(&windlass, "jobs_running") == Some(0.0)
                    && on_metrics(&windlass, "jobs_pending") == Some(0.0))
                .then_some(()),
            )
        },
    )
    .await;
    assert_eq!(on_metrics(&windlass, "jobs_failed_total"), Some(0.0));
    assert_eq!(on_metrics(&windlass, "retries_total"), Some(0.0));

    drop(windlass);
    let restarted = start_windlass(&namespace.name);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let recounted = wait_until(
        "the restarted controller's succeeded count",
        Duration::from_secs(30),
        || std::future::ready(on_metrics(&restarted, "jobs_succeeded_total")),
    )
    .await;
    assert_eq!(
        recounted, 0.0,
        "a restarted controller counts only the Jobs it sees finish"
    );
    let after_restart = status(&api, "works").await;
    assert_eq!(
        (
            after_restart.succeeded,
            after_restart.failed,
            after_restart.retries
        ),
        (settled.succeeded, 0, 0),
        "counts changed across a restart"
    );
    clean_up(&env, namespace, Some(&node)).await;
}

#[tokio::test]
async fn a_spec_change_replaces_unfinished_jobs_unless_the_rollout_is_gradual() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-rollout").await;
    let ns = namespace.name.as_str();
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    for (name, gradual) in [("replaced", false), ("gradual", true)] {
        let queue = env.queue(&format!("sj-{name}")).await;
        env.send_messages(&queue, 2).await;
        let mut object = scaled_job(name, &queue, 5, pod("no-such-node", false), (100, 100));
        if gradual {
            object.spec.rollout =
                Some(serde_json::from_value(json!({"strategy": "gradual"})).unwrap());
        }
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    let _windlass = start_windlass(ns);
    let generation = |job: &Job| {
        job.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("windlass.dev/scaled-job-generation").cloned())
    };
    for name in ["replaced", "gradual"] {
        wait_until(
            &format!("{name}: 2 Jobs of generation 1"),
            Duration::from_secs(30),
            || async {
                let jobs = jobs_of(&env.client, ns, name).await;
                (jobs.len() == 2 && jobs.iter().all(|j| generation(j).as_deref() == Some("1")))
                    .then_some(())
            },
        )
        .await;
        let change = json!({"spec": {"jobTargetRef": {"template": {"metadata": {"labels": {"revision": "2"}}}}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(change))
            .await
            .unwrap();
    }
    wait_until(
        "replaced: only generation-2 Jobs, 2 of them",
        Duration::from_secs(30),
        || async {
            let jobs = jobs_of(&env.client, ns, "replaced").await;
            let live: Vec<_> = jobs
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == 2 && live.iter().all(|j| generation(j).as_deref() == Some("2")))
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gradual = jobs_of(&env.client, ns, "gradual").await;
    assert_eq!(
        gradual
            .iter()
            .filter(|j| generation(j).as_deref() == Some("1"))
            .count(),
        2,
        "gradual deleted unfinished Jobs"
    );
    assert_eq!(
        gradual.len(),
        2,
        "2 unfinished Jobs already cover the 2 messages"
    );
    clean_up(&env, namespace, None).await;
}

/// KEDA's `autoscaling.keda.sh/paused` on a ScaledJob: no Jobs while it is set, whatever the
/// queue holds; Jobs once it is removed.
#[tokio::test]
async fn a_paused_scaled_job_creates_no_jobs_until_unpaused() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-pause").await;
    let queue = env.queue("sj-pause").await;
    env.send_messages(&queue, 3).await;
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    let mut paused = scaled_job("paused", &queue, 10, pod("no-such-node", false), (100, 100));
    paused.metadata.annotations = Some(
        [("autoscaling.keda.sh/paused".to_owned(), "true".to_owned())]
            .into_iter()
            .collect(),
    );
    api.create(&PostParams::default(), &paused).await.unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_until("Paused=True", Duration::from_secs(30), || async {
        status(&api, "paused")
            .await
            .conditions
            .iter()
            .any(|c| c.type_ == "Paused" && c.status == "True")
            .then_some(())
    })
    .await;
    // Three polls at a 1 s interval with 3 messages waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        jobs_of(&env.client, &namespace.name, "paused")
            .await
            .is_empty(),
        "a paused ScaledJob created Jobs"
    );

    let unpause = json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": null}}});
    api.patch("paused", &PatchParams::default(), &Patch::Merge(unpause))
        .await
        .unwrap();
    wait_until("3 Jobs once unpaused", Duration::from_secs(30), || async {
        (jobs_of(&env.client, &namespace.name, "paused").await.len() == 3).then_some(())
    })
    .await;
    clean_up(&env, namespace, None).await;
}

/// [`scaled_job`] (history limits 100) with `extra` merged into it.
fn scaled_job_with(name: &str, queue_url: &str, max: i32, pod: Value, extra: Value) -> ScaledJob {
    let mut object =
        serde_json::to_value(scaled_job(name, queue_url, max, pod, (100, 100))).unwrap();
    merge(&mut object, extra);
    serde_json::from_value(object).unwrap()
}

/// An `aws-sqs-queue` trigger on `queue_url` (queueLength 1) with `metadata` added.
fn queue_trigger(queue_url: &str, metadata: Value) -> Value {
    let mut trigger =
        json!({"type": "aws-sqs-queue", "metadata": {"queueURL": queue_url, "queueLength": "1"}});
    merge(&mut trigger["metadata"], metadata);
    trigger
}

fn generation(job: &Job) -> Option<&str> {
    job.labels()
        .get("windlass.dev/scaled-job-generation")
        .map(String::as_str)
}

/// Every scaling strategy, multipleScalersCalculation, activation threshold and pause switch,
/// with Job pods that no node takes (as while they wait for a new node), each holding at its
/// count over four more polls. On 4 messages: `custom` (deduction 1, running share 0.5) makes
/// 3, 2, 1 Jobs in three polls and holds at 6; `accurate` with max 6 makes 4 and holds, where
/// KEDA's comparison would add 2 idle Jobs; `eager` makes 4, then 2 into the free slots (max
/// 10 less 4 running less 4 pending), and holds at 6. On 2 and 6 messages: max 6, min 2, avg 4,
/// sum 8. An activationQueueLength of 4 makes none, of 3 makes 4. `paused` makes none, and a
/// Windlass `paused: "false"` beats KEDA's `"true"`.
#[tokio::test]
async fn strategies_calculations_activation_and_pause_decide_the_jobs_while_pods_wait() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-strategies").await;
    let ns = namespace.name.as_str();
    let (four, two, six) = (
        env.queue("sj-four").await,
        env.queue("sj-two").await,
        env.queue("sj-six").await,
    );
    env.send_messages(&four, 4).await;
    env.send_messages(&two, 2).await;
    env.send_messages(&six, 6).await;
    let strategy = |strategy: Value| json!({"spec": {"scalingStrategy": strategy}});
    let calculation = |how: &str| {
        json!({"spec": {"scalingStrategy": {"multipleScalersCalculation": how},
            "triggers": [queue_trigger(&two, json!({})), queue_trigger(&six, json!({}))]}})
    };
    let activation = |threshold: &str| json!({"spec": {"triggers": [queue_trigger(&four, json!({"activationQueueLength": threshold}))]}});
    let annotated = |annotations: Value| json!({"metadata": {"annotations": annotations}});
    // (object, maxReplicaCount, its settings, the Jobs it holds at)
    let cases = [
        (
            "custom",
            10,
            strategy(
                json!({"strategy": "custom", "customScalingQueueLengthDeduction": 1,
                "customScalingRunningJobPercentage": "0.5"}),
            ),
            6,
        ),
        ("accurate", 6, strategy(json!({"strategy": "accurate"})), 4),
        ("eager", 10, strategy(json!({"strategy": "eager"})), 6),
        ("max", 20, calculation("max"), 6),
        ("min", 20, calculation("min"), 2),
        ("avg", 20, calculation("avg"), 4),
        ("sum", 20, calculation("sum"), 8),
        ("below-activation", 10, activation("4"), 0),
        ("above-activation", 10, activation("3"), 4),
        (
            "paused",
            10,
            annotated(json!({"autoscaling.windlass.dev/paused": "true"})),
            0,
        ),
        (
            "unpaused-by-windlass",
            10,
            annotated(json!({"autoscaling.keda.sh/paused": "true",
                "autoscaling.windlass.dev/paused": "false"})),
            4,
        ),
    ];
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    let nowhere = pod("no-such-node", false);
    for (name, max, settings, _) in &cases {
        api.create(
            &PostParams::default(),
            &scaled_job_with(name, &four, *max, nowhere.clone(), settings.clone()),
        )
        .await
        .unwrap();
    }
    let _windlass = start_windlass(ns);

    for (name, _, _, expected) in &cases {
        wait_until(
            &format!("{name} to have {expected} Jobs after reading its queues"),
            Duration::from_secs(30),
            || async {
                let polled = !status(&api, name).await.trigger_values.is_empty();
                let jobs = jobs_of(&env.client, ns, name).await.len();
                (polled && jobs == *expected).then_some(())
            },
        )
        .await;
    }
    // Four more polls with the same messages and every Job still waiting.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (name, _, _, expected) in &cases {
        assert_eq!(
            jobs_of(&env.client, ns, name).await.len(),
            *expected,
            "{name} did not hold at {expected} Jobs"
        );
    }
    let eager = status(&api, "eager").await;
    assert_eq!((eager.running_jobs, eager.pending_jobs), (6, 6));
    let condition = |status: &ScaledJobStatus, type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
    };
    let below = status(&api, "below-activation").await;
    assert_eq!(condition(&below, "Active").as_deref(), Some("False"));
    assert_eq!(below.trigger_values["trigger-0"].value, 4.0);
    let paused = status(&api, "paused").await;
    assert_eq!(condition(&paused, "Paused").as_deref(), Some("True"));
    let unpaused = status(&api, "unpaused-by-windlass").await;
    assert_eq!(condition(&unpaused, "Paused").as_deref(), Some("False"));
    clean_up(&env, namespace, None).await;
}

/// `pendingPodConditions` decide which started Jobs are still pending. With `["Ready",
/// "example.com/warm-cache"]`, Jobs whose pods run (and are Ready) without the second condition
/// stay pending, so the accurate strategy (2 messages, max 4) holds at 2; once the test sets
/// that condition on their pods, 2 more Jobs follow. The same ScaledJob without
/// pendingPodConditions counts a running pod as started and reaches 4 by itself.
#[tokio::test]
async fn pending_pod_conditions_decide_which_running_jobs_are_pending() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-pending").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-sj-pending").await;
    let queue = env.queue("sj-pending").await;
    env.send_messages(&queue, 2).await;
    // Runs until the annotation is taken off (the stack's kwok stages).
    let mut running = pod(&node, false);
    running["metadata"]["annotations"] = json!({"windlass.dev/test-outcome": "hold"});
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    for (name, conditions) in [
        ("by-phase", json!([])),
        ("by-conditions", json!(["Ready", "example.com/warm-cache"])),
    ] {
        let settings = json!({"spec": {"scalingStrategy":
            {"strategy": "accurate", "pendingPodConditions": conditions}}});
        api.create(
            &PostParams::default(),
            &scaled_job_with(name, &queue, 4, running.clone(), settings),
        )
        .await
        .unwrap();
    }
    let _windlass = start_windlass(ns);

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let running_pods = |name: &str| {
        let pods = pods.clone();
        let selector = format!("windlass.dev/scaled-job={name}");
        async move {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| p.name_any())
                .collect::<Vec<_>>()
        }
    };
    wait_until(
        "by-phase to have 4 Jobs",
        Duration::from_secs(30),
        || async { (jobs_of(&env.client, ns, "by-phase").await.len() == 4).then_some(()) },
    )
    .await;
    let warming = wait_until(
        "by-conditions' 2 pods to run",
        Duration::from_secs(30),
        || async { Some(running_pods("by-conditions").await).filter(|p| p.len() == 2) },
    )
    .await;
    // Three more polls with both pods running.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        jobs_of(&env.client, ns, "by-conditions").await.len(),
        2,
        "Jobs whose pods lack a pendingPodConditions condition counted as started"
    );
    let held = status(&api, "by-conditions").await;
    assert_eq!((held.running_jobs, held.pending_jobs), (2, 2));

    let warm =
        json!({"status": {"conditions": [{"type": "example.com/warm-cache", "status": "True"}]}});
    for pod in &warming {
        pods.patch_status(
            pod,
            &PatchParams::default(),
            &Patch::Strategic(warm.clone()),
        )
        .await
        .unwrap();
    }
    wait_until(
        "by-conditions to have 4 Jobs once its pods are warm",
        Duration::from_secs(30),
        || async { (jobs_of(&env.client, ns, "by-conditions").await.len() == 4).then_some(()) },
    )
    .await;
    clean_up(&env, namespace, Some(&node)).await;
}

/// `rollout.propagationPolicy` of the default rollout, on a spec change: `foreground` leaves the
/// old Job in the API, deleting, until its pod is gone; `background` removes the Job at once and
/// leaves its pod to the garbage collector. The old pods carry a finalizer of the test's, so
/// they outlive their deletion until the test lets them go; then the old Job goes too, and each
/// ScaledJob has a Job of the new generation.
#[tokio::test]
async fn rollout_propagation_policy_decides_whether_old_jobs_wait_for_their_pods() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-propagation").await;
    let ns = namespace.name.as_str();
    let queue = env.queue("sj-propagation").await;
    env.send_messages(&queue, 1).await;
    let mut kept = pod("no-such-node", false);
    kept["metadata"]["finalizers"] = json!(["windlass.dev/test-keep"]);
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    for policy in ["foreground", "background"] {
        let settings = json!({"spec": {"rollout": {"propagationPolicy": policy}}});
        api.create(
            &PostParams::default(),
            &scaled_job_with(policy, &queue, 5, kept.clone(), settings),
        )
        .await
        .unwrap();
    }
    let _windlass = start_windlass(ns);

    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let mut old = Vec::new();
    for name in ["foreground", "background"] {
        let job = wait_until(
            &format!("{name}'s Job of generation 1, with its pod"),
            Duration::from_secs(30),
            || async {
                let job = jobs_of(&env.client, ns, name).await.into_iter().next()?;
                let selector = format!("batch.kubernetes.io/job-name={}", job.name_any());
                let pod = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .next()?;
                (generation(&job) == Some("1")).then(|| (job.name_any(), pod.name_any()))
            },
        )
        .await;
        old.push(job);
        // The new generation's pods carry no finalizer of the test's.
        let change = json!({"spec": {"jobTargetRef": {"template": {"metadata":
            {"labels": {"revision": "2"}, "finalizers": null}}}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(change))
            .await
            .unwrap();
    }
    let [
        (foreground_job, foreground_pod),
        (background_job, background_pod),
    ] = <[_; 2]>::try_from(old).unwrap();

    wait_until(
        "background's old Job to be gone",
        Duration::from_secs(30),
        || async {
            jobs.get_opt(&background_job)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The garbage collector deletes it after its Job; the test's finalizer keeps it.
    wait_until(
        "background's old pod to be deleting",
        Duration::from_secs(30),
        || async {
            let pod = pods.get_opt(&background_pod).await.unwrap()?;
            pod.metadata.deletion_timestamp.map(drop)
        },
    )
    .await;
    let deleting = |job: &Job| {
        job.metadata.deletion_timestamp.is_some()
            && job.finalizers().iter().any(|f| f == "foregroundDeletion")
    };
    wait_until(
        "foreground's old Job to be deleting in the foreground",
        Duration::from_secs(30),
        || async {
            jobs.get_opt(&foreground_job)
                .await
                .unwrap()
                .filter(deleting)
        },
    )
    .await;
    // Two more polls: the Job waits for its pod.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = jobs.get_opt(&foreground_job).await.unwrap();
    assert!(
        waiting.as_ref().is_some_and(deleting),
        "foreground's old Job went while its pod remained: {waiting:?}"
    );

    let release = json!({"metadata": {"finalizers": null}});
    for pod in [&foreground_pod, &background_pod] {
        pods.patch(pod, &PatchParams::default(), &Patch::Merge(release.clone()))
            .await
            .unwrap();
    }
    wait_until(
        "foreground's old Job to go once its pod is gone",
        Duration::from_secs(30),
        || async {
            jobs.get_opt(&foreground_job)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    for name in ["foreground", "background"] {
        wait_until(
            &format!("{name}'s Job of generation 2"),
            Duration::from_secs(30),
            || async {
                jobs_of(&env.client, ns, name)
                    .await
                    .iter()
                    .any(|j| generation(j) == Some("2") && j.metadata.deletion_timestamp.is_none())
                    .then_some(())
            },
        )
        .await;
    }
    clean_up(&env, namespace, None).await;
}

/// A ScaledJob's `queueURLFromEnv` reads its Job template's container: here a Secret key that
/// holds a bare queue name, which GetQueueUrl turns into the queue whose messages become Jobs.
#[tokio::test]
async fn queue_url_from_env_reads_a_secret_key_holding_a_queue_name() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-env").await;
    let queue = env.queue("sj-env").await;
    let queue_name = queue.rsplit('/').next().unwrap();
    env.send_messages(&queue, 2).await;
    let mut template = pod("no-such-node", false);
    template["spec"]["containers"][0]["env"] = json!([{"name": "QUEUE",
        "valueFrom": {"secretKeyRef": {"name": "queue", "key": "name"}}}]);
    let mut object = scaled_job("from-env", "unused", 10, template, (100, 100));
    object.spec.triggers[0].metadata = [("queueURLFromEnv", "QUEUE"), ("queueLength", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    api.create(&PostParams::default(), &object).await.unwrap();
    let _windlass = start_windlass(&namespace.name);
    let ready = |reason: &'static str| {
        let api = api.clone();
        async move {
            status(&api, "from-env")
                .await
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.reason == reason)
        }
    };
    let missing = wait_until(
        "Ready=False naming the Secret",
        Duration::from_secs(30),
        || ready("QueueURLError"),
    )
    .await;
    assert_eq!(
        missing.message,
        format!(
            "triggers[0]: queueURLFromEnv \"QUEUE\" of ScaledJob \"from-env\" jobTargetRef: \
             Secret {}/queue not found",
            namespace.name
        )
    );
    assert!(
        jobs_of(&env.client, &namespace.name, "from-env")
            .await
            .is_empty()
    );

    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "queue"},
        "stringData": {"name": queue_name}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &namespace.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_until("2 Jobs for 2 messages", Duration::from_secs(30), || async {
        (jobs_of(&env.client, &namespace.name, "from-env")
            .await
            .len()
            == 2)
            .then_some(())
    })
    .await;
    clean_up(&env, namespace, None).await;
}

/// The `verb` requests on `resource` in `namespace` that the controller (the release's
/// ServiceAccount, as every `windlass run` of the suite) made, from the API server's audit log.
fn audited(namespace: &str, verb: &str, resource: &str) -> usize {
    let path = std::env::var("WINDLASS_AUDIT_LOG")
        .expect("WINDLASS_AUDIT_LOG is not set: run this on the local stack (hack/stack/stack.sh), which writes an audit log");
    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the audit log {path} cannot be read: {e}"))
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| {
            event["user"]["username"] == user.as_str()
                && event["verb"] == verb
                && event["objectRef"]["resource"] == resource
                && event["objectRef"]["namespace"] == namespace
        })
        .count()
}

#[tokio::test]
async fn polls_read_jobs_and_pods_from_the_watches_and_list_nothing() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "sj-watched").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-sj-watched").await;
    let queue = env.queue("sj-watched").await;
    // Held pods run until the test ends: the Jobs stay unfinished and their pods Running.
    let mut held = pod(&node, false);
    held["metadata"]["annotations"] = json!({"windlass.dev/test-outcome": "hold"});
    let api: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &scaled_job("watched", &queue, 3, held, (100, 100)),
    )
    .await
    .unwrap();
    env.send_messages(&queue, 2).await;
    let windlass = start_windlass(ns);
    wait_until(
        "2 running Jobs whose pods have started",
        Duration::from_secs(60),
        || async {
            let status = status(&api, "watched").await;
            (status.running_jobs == 2 && status.pending_jobs == 0).then_some(())
        },
    )
    .await;
    let polls = || {
        windlass
            .metric("windlass_scaler_poll_lag_seconds_count")
            .unwrap_or_default()
    };
    let lists = || (audited(ns, "list", "jobs"), audited(ns, "list", "pods"));
    let (polls_before, lists_before) = (polls(), lists());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (polled, lists_after) = (polls() - polls_before, lists());
    println!(
        "{polled} polls in 10 s; Job and pod LISTs in {ns}: {lists_before:?} before, {lists_after:?} after"
    );
    assert!(
        polled >= 8.0,
        "pollingInterval 1 polls about 10 times in 10 s, not {polled}"
    );
    assert_eq!(
        lists_after, lists_before,
        "(Job LISTs, pod LISTs) in the namespace grew while the ScaledJob polled"
    );
    assert_eq!(
        jobs_of(&env.client, ns, "watched").await.len(),
        2,
        "a poll soon after the creates created the Jobs again"
    );
    let status = status(&api, "watched").await;
    assert_eq!((status.running_jobs, status.pending_jobs), (2, 0));
    clean_up(&env, namespace, Some(&node)).await;
}
