//! Interruption: an EC2 spot interruption warning on the interruption queue drains the node
//! it names at once, a new node takes its pod, and every message is deleted, the unreadable
//! ones too, without the controller stopping.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{
    PoolRun, initialized, initialized_claims, pool_claims, wait_pod_running_on, worker_deployment,
};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, event_notes, wait_claim_gone,
};
use crate::support::{TestEnv, wait_until};

async fn send(env: &TestEnv, queue: &str, body: &str) {
    env.sqs()
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

/// Messages on the queue, visible or being handled.
async fn left_on(env: &TestEnv, queue: &str) -> Option<u64> {
    let output = env
        .sqs()
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .ok()?;
    let attributes = output.attributes()?;
    let count = |name| attributes.get(&name)?.parse::<u64>().ok();
    Some(
        count(QueueAttributeName::ApproximateNumberOfMessages)?
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
    )
}

#[tokio::test]
async fn a_spot_interruption_drains_its_node_and_a_new_node_takes_the_pod() {
    let queue = TestEnv::connect().await.queue("interruption").await;
    let mut run = PoolRun::start_with(
        "interrupt",
        json!({"disruption": {"consolidateAfter": "Never"}}),
        &["--interruption-queue", &queue],
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    worker_deployment(env, ns, name, 1).await;
    let old = initialized_claims(claims, name, 1).await.remove(0);
    let instance = claim_instance(old.status.as_ref().unwrap());
    send(env, &queue, "not an EventBridge event").await;
    let warning = json!({
        "version": "0", "id": "1", "source": "aws.ec2",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "account": "123456789012", "time": "2026-12-02T00:00:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": "terminate"}
    });
    let sent = Instant::now();
    send(env, &queue, &warning.to_string()).await;

    wait_until(
        "the interrupted NodeClaim to be deleted",
        Duration::from_secs(60),
        || async {
            let list = pool_claims(claims, name).await;
            list.iter()
                .find(|c| c.name_any() == old.name_any())
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    println!(
        "interrupted NodeClaim deleted {:.1}s after the warning was sent",
        sent.elapsed().as_secs_f64()
    );
    let new = wait_until(
        "a new node for the evicted pod",
        Duration::from_secs(90),
        || async {
            let list = pool_claims(claims, name).await;
            list.into_iter()
                .find(|c| c.name_any() != old.name_any() && initialized(c))
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_pod_running_on(&pods, &new, "the pod to run on the new node").await;
    println!(
        "the pod runs on a new node {:.1}s after the warning",
        sent.elapsed().as_secs_f64()
    );
    wait_claim_gone(claims, &old.name_any()).await;
    assert_terminated(env, &instance).await;
    let notes = event_notes(env, None, &old.name_any(), "SpotInterrupted").await;
    assert!(
        notes.iter().any(|n| n.contains(&instance)),
        "a SpotInterrupted Event names the instance: {notes:?}"
    );
    wait_until("the queue to be empty", Duration::from_secs(30), || async {
        (left_on(env, &queue).await? == 0).then_some(())
    })
    .await;
    for kind in ["spot-interruption", "unreadable"] {
        assert_eq!(
            run.windlass.metric(&format!(
                "windlass_interruption_messages_total{{kind=\"{kind}\"}}"
            )),
            Some(1.0),
            "{kind}"
        );
    }
    assert!(
        run.windlass.process.try_wait().is_none(),
        "an unreadable message does not stop the controller"
    );
    run.finish().await;
}
