//! KEDA's metric families on the running controller's `/metrics`: after a ScaledObject and a
//! ScaledJob polled their queues, the `keda_*` series carry KEDA's names, labels and values,
//! follow a pause and go with the object; with `--keda-metrics=false` there are none.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use windlass::apis::scaled_job::ScaledJob;
use windlass::apis::scaled_object::ScaledObject;

use crate::scaled_job::{pod, scaled_job};
use crate::scaled_object::{clean_up, deployment, scaled_object};
use crate::support::{
    TestEnv, TestNamespace, Windlass, http_get, install_crds, start_windlass, start_windlass_with,
    test_node, unique, wait_until,
};

/// The queue's name, the last segment of its URL, as KEDA puts it in the `metric` label.
fn queue_name(queue_url: &str) -> &str {
    queue_url.rsplit('/').next().unwrap()
}

/// KEDA's label set of trigger `index` of `object`, in KEDA's (sorted) order.
fn scaler_labels(
    namespace: &str,
    object: &str,
    kind: &str,
    scaler: &str,
    index: usize,
    queue_url: &str,
) -> String {
    format!(
        r#"{{metric="s{index}-aws-sqs-{}",namespace="{namespace}",scaledObject="{object}",scaler="{scaler}",triggerIndex="{index}",type="{kind}"}}"#,
        queue_name(queue_url)
    )
}

fn scrape(windlass: &Windlass) -> String {
    let (status, body) = http_get(windlass.metrics_port, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn keda_metrics_describe_polled_queues_with_kedas_labels() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "keda-metrics").await;
    let ns = namespace.name.clone();
    let node = test_node(&env.client, "kwok-keda-metrics").await;
    deployment(&env.client, &ns, "worker", &node, 0).await;
    let queue = env.queue("keda-metrics").await;
    env.send_messages(&queue, 6).await;
    let missing = format!("{}-never-created", env.queue("keda-missing").await);
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns);
    // Two triggers on one queue: a named one, and an unnamed one that 6 messages do not
    // activate.
    objects
        .create(
            &PostParams::default(),
            &scaled_object(
                "worker",
                "worker",
                &queue,
                json!({"spec": {"triggers": [
                    {"type": "aws-sqs-queue", "name": "queue",
                     "metadata": {"queueURL": queue, "queueLength": "2"}},
                    {"type": "aws-sqs-queue",
                     "metadata": {"queueURL": queue, "queueLength": "2", "activationQueueLength": "10"}}
                ]}}),
            ),
        )
        .await
        .unwrap();
    let jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), &ns);
    jobs.create(
        &PostParams::default(),
        &scaled_job("broken", &missing, 2, pod("no-such-node", false), (1, 1)),
    )
    .await
    .unwrap();
    let windlass = start_windlass(&ns);

    let named = scaler_labels(&ns, "worker", "scaledobject", "queue", 0, &queue);
    let unnamed = scaler_labels(
        &ns,
        "worker",
        "scaledobject",
        "awsSqsQueueScaler",
        1,
        &queue,
    );
    let broken = scaler_labels(&ns, "broken", "scaledjob", "awsSqsQueueScaler", 0, &missing);
    wait_until(
        "both triggers' values and the ScaledJob's failed read",
        Duration::from_secs(60),
        || async {
            let value =
                |labels: &str| windlass.metric(&format!("keda_scaler_metrics_value{labels}"));
            (value(&named) == Some(6.0)
                && value(&unnamed) == Some(6.0)
                && windlass
                    .metric(&format!(
                        "keda_scaled_job_errors_total{{namespace=\"{ns}\",scaledJob=\"broken\"}}"
                    ))
                    .is_some_and(|errors| errors >= 1.0))
            .then_some(())
        },
    )
    .await;
    let body = scrape(&windlass);
    println!(
        "{}",
        body.lines()
            .filter(|l| l.starts_with("keda_") || l.starts_with("# TYPE keda_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let sample = |name: &str, labels: &str| {
        windlass
            .metric(&format!("{name}{labels}"))
            .unwrap_or_else(|| panic!("no {name}{labels} in\n{body}"))
    };
    assert_eq!(sample("keda_scaler_active", &named), 1.0, "6 > 0");
    assert_eq!(sample("keda_scaler_active", &unnamed), 0.0, "6 <= 10");
    assert_eq!(sample("keda_scaler_detail_errors_total", &named), 0.0);
    assert_eq!(sample("keda_scaler_detail_errors_total", &unnamed), 0.0);
    for labels in [&named, &unnamed, &broken] {
        let latency = sample("keda_scaler_metrics_latency_seconds", labels);
        assert!(latency > 0.0 && latency < 30.0, "{latency} s for {labels}");
    }
    assert!(
        body.contains("# TYPE keda_scaler_metrics_latency_seconds gauge\n"),
        "a gauge, as in KEDA 2.16+"
    );
    let object = format!(r#"{{namespace="{ns}",scaledObject="worker"}}"#);
    assert_eq!(sample("keda_scaled_object_paused", &object), 0.0);
    assert_eq!(sample("keda_scaled_object_errors_total", &object), 0.0);
    assert!(sample("keda_scaler_detail_errors_total", &broken) >= 1.0);
    assert!(
        !body.contains(&format!("keda_scaler_metrics_value{broken}")),
        "a queue never read has no value"
    );
    assert_eq!(
        windlass.metric(&format!(
            r#"windlass_scaler_metric_value{{namespace="{ns}",name="worker",trigger="queue"}}"#
        )),
        Some(6.0),
        "the windlass_* families are still served beside KEDA's"
    );

    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"autoscaling.keda.sh/paused": "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_until(
        "keda_scaled_object_paused to be 1",
        Duration::from_secs(30),
        || {
            std::future::ready(
                windlass
                    .metric(&format!("keda_scaled_object_paused{object}"))
                    .filter(|paused| *paused == 1.0),
            )
        },
    )
    .await;

    objects.delete("worker", &Default::default()).await.unwrap();
    wait_until(
        "the deleted ScaledObject's keda_* series to go",
        Duration::from_secs(30),
        || {
            let body = scrape(&windlass);
            std::future::ready((!body.contains(r#"scaledObject="worker""#)).then_some(()))
        },
    )
    .await;
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn keda_metrics_are_not_served_when_turned_off() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "keda-off").await;
    let ns = namespace.name.clone();
    let node = test_node(&env.client, "kwok-keda-off").await;
    deployment(&env.client, &ns, "worker", &node, 0).await;
    let queue = env.queue("keda-off").await;
    env.send_messages(&queue, 3).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns);
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, json!({})),
        )
        .await
        .unwrap();
    let windlass = start_windlass_with(
        &ns,
        "windlass",
        &unique("cluster"),
        &["--keda-metrics=false"],
    );

    wait_until("the queue to be read", Duration::from_secs(60), || {
        std::future::ready(
            windlass
                .metric(&format!(
                    r#"windlass_scaler_metric_value{{namespace="{ns}",name="worker",trigger="queue"}}"#
                ))
                .filter(|value| *value == 3.0),
        )
    })
    .await;
    let body = scrape(&windlass);
    assert!(!body.contains("keda_"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    clean_up(&env, namespace, &objects, &node).await;
}
