//! Scaling objects that pass the schema but cannot work — a queue that does not exist, a role
//! without permission on the queue, a scale target or TriggerAuthentication that does not
//! exist — side by side with healthy ones in one install: each bad one is Ready=False with a
//! Warning Event saying why, and the healthy ones scale meanwhile.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use windlass::apis::scaled_job::ScaledJob;
use windlass::apis::scaled_object::ScaledObject;

use crate::pod_identity::enforced_role;
use crate::scaled_job::{pod, scaled_job};
use crate::scaled_object::{
    clean_up, deployment, merge, replicas, scaled_object, trigger_authentication,
    wait_for_condition, wait_for_replicas, warning_event,
};
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, test_node, wait_until};

/// The ScaledJob's Ready condition once it is False: its reason and message.
async fn scaled_job_not_ready(api: &Api<ScaledJob>, name: &str) -> (String, String) {
    wait_until(
        &format!("ScaledJob {name} Ready=False"),
        Duration::from_secs(30),
        || async {
            let status = api.get(name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
                .map(|c| (c.reason, c.message))
        },
    )
    .await
}

async fn jobs_of(client: &Client, namespace: &str, name: &str) -> usize {
    Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("windlass.dev/scaled-job={name}")))
        .await
        .unwrap()
        .items
        .len()
}

/// A missing queue, a role allowed only another queue, a missing Deployment and a missing
/// TriggerAuthentication on ScaledObjects; a missing queue and the role without permission on
/// ScaledJobs. Each is Ready=False with the reason and message the README lists, and a Warning
/// Event with the same message; nothing is scaled for them. Meanwhile the healthy
/// ScaledObject scales its Deployment to 2 and the healthy ScaledJob starts 2 Jobs.
#[tokio::test]
async fn unworkable_scaling_objects_say_why_while_healthy_ones_scale() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "unworkable").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-unworkable").await;
    let (queue, job_queue, denied_queue) = (
        env.queue("unworkable").await,
        env.queue("unworkable-jobs").await,
        env.queue("unworkable-denied").await,
    );
    env.send_messages(&queue, 4).await;
    env.send_messages(&job_queue, 2).await;
    env.send_messages(&denied_queue, 4).await;
    let missing_queue = format!("{queue}-never-created");
    // Allowed to read `queue` only.
    let role = enforced_role(&env, "unworkable-reader", &queue, &[]).await;
    let role_name = role.rsplit('/').next().unwrap().to_owned();
    trigger_authentication(
        &env.client,
        ns,
        "other-queue-role",
        json!({"podIdentity": {"provider": "aws", "roleArn": role}}),
    )
    .await;

    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    let with_auth = |queue_url: &str, authentication: &str| {
        json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
            "metadata": {"queueURL": queue_url, "queueLength": "2"},
            "authenticationRef": {"name": authentication}}]}})
    };
    for (name, target, queue_url, extra) in [
        ("healthy", "healthy", queue.as_str(), json!({})),
        ("no-queue", "no-queue", missing_queue.as_str(), json!({})),
        (
            "no-permission",
            "no-permission",
            denied_queue.as_str(),
            with_auth(&denied_queue, "other-queue-role"),
        ),
        ("no-target", "absent", queue.as_str(), json!({})),
        (
            "no-auth",
            "no-auth",
            queue.as_str(),
            with_auth(&queue, "absent-auth"),
        ),
    ] {
        if target != "absent" {
            deployment(&env.client, ns, target, &node, 0).await;
        }
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, target, queue_url, extra),
            )
            .await
            .unwrap();
    }
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    // No node has this label: the Jobs' pods stay Pending, and no Job ends meanwhile.
    let pending = pod("no-such-node", false);
    for (name, queue_url) in [
        ("healthy-job", job_queue.as_str()),
        ("job-no-queue", missing_queue.as_str()),
        ("job-no-permission", denied_queue.as_str()),
    ] {
        let mut job =
            serde_json::to_value(scaled_job(name, queue_url, 10, pending.clone(), (10, 10)))
                .unwrap();
        if name == "job-no-permission" {
            merge(
                &mut job,
                json!({"spec": {"triggers": [{"type": "aws-sqs-queue",
                    "metadata": {"queueURL": queue_url, "queueLength": "1"},
                    "authenticationRef": {"name": "other-queue-role"}}]}}),
            );
        }
        scaled_jobs
            .create(
                &PostParams::default(),
                &serde_json::from_value(job).unwrap(),
            )
            .await
            .unwrap();
    }
    let _windlass = start_windlass(ns);

    // The healthy ones are served.
    wait_for_replicas(&env.client, ns, "healthy", 2, Duration::from_secs(30)).await;
    wait_until(
        "the healthy ScaledJob's 2 Jobs",
        Duration::from_secs(30),
        || async { (jobs_of(&env.client, ns, "healthy-job").await == 2).then_some(()) },
    )
    .await;

    // Each bad one says why, in Ready and in a Warning Event with the same message.
    let (_, reason, message) = wait_for_condition(&objects, "no-queue", "Ready", "False").await;
    assert_eq!(reason, "TriggerError");
    assert!(
        message.starts_with(&format!("queue: reading queue {missing_queue}: "))
            && (message.contains("QueueDoesNotExist") || message.contains("NonExistentQueue")),
        "{message}"
    );
    warning_event(&env.client, ns, "no-queue", &message).await;

    let (_, reason, message) =
        wait_for_condition(&objects, "no-permission", "Ready", "False").await;
    assert_eq!(reason, "TriggerError");
    let denied = format!("AccessDenied: User: arn:aws:sts::123456789012:assumed-role/{role_name}/");
    assert!(message.contains(&denied), "{message}");
    warning_event(&env.client, ns, "no-permission", &message).await;

    let (_, reason, message) = wait_for_condition(&objects, "no-target", "Ready", "False").await;
    assert_eq!(reason, "ScaleTargetError");
    assert_eq!(
        message,
        "scaleTargetRef apps/v1.Deployment \"absent\" not found"
    );
    warning_event(&env.client, ns, "no-target", &message).await;

    let (_, reason, message) = wait_for_condition(&objects, "no-auth", "Ready", "False").await;
    assert_eq!(reason, "AuthenticationError");
    assert_eq!(
        message,
        "triggers[0].authenticationRef: TriggerAuthentication \"absent-auth\" not found"
    );
    warning_event(&env.client, ns, "no-auth", &message).await;

    let (reason, message) = scaled_job_not_ready(&scaled_jobs, "job-no-queue").await;
    assert_eq!(reason, "TriggerError");
    assert!(
        message.contains(&format!("reading queue {missing_queue}: "))
            && (message.contains("QueueDoesNotExist") || message.contains("NonExistentQueue")),
        "{message}"
    );
    warning_event(&env.client, ns, "job-no-queue", &message).await;

    let (reason, message) = scaled_job_not_ready(&scaled_jobs, "job-no-permission").await;
    assert_eq!(reason, "TriggerError");
    assert!(message.contains(&denied), "{message}");
    warning_event(&env.client, ns, "job-no-permission", &message).await;

    // Nothing was scaled for them, and their queues were left alone.
    for name in ["no-queue", "no-permission", "no-auth"] {
        assert_eq!(replicas(&env.client, ns, name).await, Some(0), "{name}");
    }
    for name in ["job-no-queue", "job-no-permission"] {
        assert_eq!(jobs_of(&env.client, ns, name).await, 0, "{name}");
    }
    assert_eq!(replicas(&env.client, ns, "healthy").await, Some(2));
    clean_up(&env, namespace, &objects, &node).await;
}
