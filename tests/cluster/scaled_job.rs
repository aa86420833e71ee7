//! ScaledJobs against the real cluster and SQS: one Job per message up to max, no extra Jobs
//! while their pods wait for a node, and outcome counters that survive history cleanup and
//! controller restarts without counting a Job twice.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use windlass::apis::scaled_job::{ScaledJob, ScaledJobStatus};

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
