//! The jobs API against the real cluster and SQS: submissions become messages and Jobs, bad
//! or unauthenticated requests enqueue nothing, and stats report the ScaledJobs' counters.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use windlass::apis::scaled_job::ScaledJob;

use crate::support::{
    JOBS_TOKEN, TestEnv, TestNamespace, delete_node, http_request, install_crds, start_windlass,
    test_node, wait_until,
};

fn scaled_job(name: &str, queue_url: &str, node_label: &str, fail: bool) -> ScaledJob {
    let annotations = if fail {
        json!({"windlass.dev/test-outcome": "fail"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob", "metadata": {"name": name},
        "spec": {
            "pollingInterval": 1, "maxReplicaCount": 10,
            "jobTargetRef": {"backoffLimit": 2, "template": {
                "metadata": {"annotations": annotations},
                "spec": {"restartPolicy": "Never", "nodeSelector": {"windlass.dev/test-node": node_label},
                         "containers": [{"name": "data-processor", "image": "registry.example.com/data-processor:1"}]}
            }},
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue_url, "queueLength": "1"}}]
        }
    }))
    .unwrap()
}

fn post(port: u16, token: Option<&str>, body: &Value) -> (u16, Value) {
    let (status, body) = http_request(port, "POST", "/jobs", token, body.to_string().as_bytes())
        .expect("the jobs API answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn wait_for_jobs_api(port: u16) {
    wait_until(
        "the jobs API to answer",
        Duration::from_secs(30),
        || async {
            http_request(port, "GET", "/jobs/stats", Some(JOBS_TOKEN), b"")
                .filter(|(status, _)| *status == 200)
        },
    )
    .await;
}

async fn visible_messages(env: &TestEnv, queue: &str) -> u64 {
    let attributes = env
        .sqs()
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attributes
        .attributes()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn submissions_become_messages_and_jobs_and_bad_requests_enqueue_nothing() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "jobs-api").await;
    let ns = namespace.name.as_str();
    let queue = env.queue("jobs-api").await;
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(
            &PostParams::default(),
            &scaled_job("data-processor", &queue, "no-such-node", false),
        )
        .await
        .unwrap();
    let windlass = start_windlass(ns);
    let port = windlass.jobs_port;
    wait_for_jobs_api(port).await;

    let submission =
        json!({"scaledJob": "data-processor", "namespace": ns, "payload": {"report": "daily"}});
    assert_eq!(post(port, None, &submission).0, 401);
    assert_eq!(post(port, Some("wrong-token"), &submission).0, 401);
    assert_eq!(
        http_request(port, "GET", "/jobs/stats", None, b"")
            .unwrap()
            .0,
        401
    );
    let (status, error) = post(
        port,
        Some(JOBS_TOKEN),
        &json!({"namespace": ns, "payload": 1}),
    );
    assert_eq!(
        (status, error["field"].as_str()),
        (400, Some("scaledJob")),
        "{error}"
    );
    let (status, error) = post(
        port,
        Some(JOBS_TOKEN),
        &json!({"scaledJob": "nope", "namespace": ns}),
    );
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"], format!("ScaledJob {ns}/nope not found"));
    let oversized =
        json!({"scaledJob": "data-processor", "namespace": ns, "payload": "x".repeat(70 * 1024)});
    assert_eq!(post(port, Some(JOBS_TOKEN), &oversized).0, 413);
    assert_eq!(
        visible_messages(&env, &queue).await,
        0,
        "a rejected request enqueued something"
    );

    let mut ids = BTreeSet::new();
    for n in 0..5 {
        let (status, accepted) = post(
            port,
            Some(JOBS_TOKEN),
            &json!({"scaledJob": "data-processor", "namespace": ns, "payload": {"n": n}}),
        );
        assert_eq!(status, 202, "{accepted}");
        ids.insert(accepted["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 5, "ids are unique");
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        "five Jobs for five submissions",
        Duration::from_secs(30),
        || async {
            let list = jobs
                .list(&ListParams::default().labels("windlass.dev/scaled-job=data-processor"))
                .await
                .ok()?;
            (list.items.len() == 5).then_some(())
        },
    )
    .await;
    let received = env
        .sqs()
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let message_ids: BTreeSet<String> = received
        .messages()
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(m.body().unwrap()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(message_ids, ids, "each 202 id is on the queue");
    namespace.delete().await;
}

#[tokio::test]
async fn stats_report_failed_jobs_with_two_retries_each() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "jobs-stats").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-jobs-stats").await;
    let queue = env.queue("jobs-stats").await;
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(
            &PostParams::default(),
            &scaled_job("fails", &queue, &node, true),
        )
        .await
        .unwrap();
    let windlass = start_windlass(ns);
    let port = windlass.jobs_port;
    wait_for_jobs_api(port).await;
    for _ in 0..2 {
        assert_eq!(
            post(
                port,
                Some(JOBS_TOKEN),
                &json!({"scaledJob": "fails", "namespace": ns})
            )
            .0,
            202
        );
    }
    let path = format!("/jobs/stats?namespace={ns}&scaledJob=fails");
    let stats = wait_until(
        "stats to show two failed jobs",
        Duration::from_secs(150),
        || async {
            let (status, body) = http_request(port, "GET", &path, Some(JOBS_TOKEN), b"")?;
            let stats: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && stats["failed"].as_i64()? >= 2).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["succeeded"], 0);
    assert_eq!(
        stats["retries"].as_i64(),
        stats["failed"].as_i64().map(|f| 2 * f),
        "{stats}"
    );
    assert_eq!(stats["scaledJobs"][0]["scaledJob"], "fails");
    assert_eq!(stats["scaledJobs"][0]["failed"], stats["failed"]);
    namespace.delete().await;
    delete_node(&env.client, &node).await;
}
