//! The worker as a process against a real SQS endpoint (moto, or LocalStack via
//! AWS_ENDPOINT_URL): one message per run, deleted on success, returned on failure.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

async fn sqs() -> Client {
    Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}

async fn queue(sqs: &Client, name: &str) -> String {
    let unique = format!(
        "{name}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    sqs.create_queue()
        .queue_name(unique)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned()
}

async fn send(sqs: &Client, queue: &str, body: &str) {
    sqs.send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

async fn count(sqs: &Client, queue: &str, attribute: QueueAttributeName) -> u64 {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(attribute.clone())
        .send()
        .await
        .unwrap();
    attributes.attributes().unwrap()[&attribute]
        .parse()
        .unwrap()
}

fn run_worker(queue: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_data-processor"))
        .env("QUEUE_URL", queue)
        .env("WAIT_SECONDS", "1")
        .output()
        .expect("running data-processor")
}

#[tokio::test]
async fn a_successful_job_deletes_its_message() {
    let sqs = sqs().await;
    let queue = queue(&sqs, "worker-ok").await;
    send(&sqs, &queue, r#"{"id": "job-1", "payload": {"rows": 3}}"#).await;
    let output = run_worker(&queue);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("job job-1 succeeded"));
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessages
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_failing_job_exits_non_zero_and_returns_its_message_for_the_retry() {
    let sqs = sqs().await;
    let queue = queue(&sqs, "worker-fail").await;
    send(
        &sqs,
        &queue,
        r#"{"id": "job-2", "payload": {"outcome": "fail"}}"#,
    )
    .await;
    let output = run_worker(&queue);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessages
        )
        .await,
        1
    );
}

#[tokio::test]
async fn two_retries_get_a_job_that_fails_twice_through() {
    let sqs = sqs().await;
    let queue = queue(&sqs, "worker-retry").await;
    send(
        &sqs,
        &queue,
        r#"{"id": "job-3", "payload": {"failTimes": 2}}"#,
    )
    .await;
    // What a Job with backoffLimit 2 does: the first attempt and two retries.
    let codes: Vec<_> = (0..3).map(|_| run_worker(&queue).status.code()).collect();
    assert_eq!(codes, [Some(1), Some(1), Some(0)]);
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessages
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_slow_job_keeps_its_message_while_it_works() {
    let sqs = sqs().await;
    let queue = queue(&sqs, "worker-slow").await;
    send(
        &sqs,
        &queue,
        r#"{"id": "job-4", "payload": {"sleepSeconds": 2}}"#,
    )
    .await;
    let started = Instant::now();
    let output = run_worker(&queue);
    assert!(output.status.success(), "{output:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessages
        )
        .await,
        0
    );
}

#[tokio::test]
async fn an_empty_queue_is_no_work_and_a_foreign_message_is_left_alone() {
    let sqs = sqs().await;
    let queue = queue(&sqs, "worker-empty").await;
    let output = run_worker(&queue);
    assert!(output.status.success(), "{output:?}");
    send(&sqs, &queue, "not json").await;
    let output = run_worker(&queue);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        count(
            &sqs,
            &queue,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible
        )
        .await,
        1
    );
}
