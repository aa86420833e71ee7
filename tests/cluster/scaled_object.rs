//! ScaledObjects against the real cluster and SQS: scale from zero on messages and back after
//! the cooldown, share one GetQueueAttributes per interval yet read afresh on every poll,
//! count messages by activation, in-flight and delayed settings, wait out an initial cooldown,
//! pause by every switch, fall back by every behavior, read the queue where awsEndpoint says,
//! report a missing queue and bad authentication without touching the replicas, combine two
//! queues with a scalingModifiers formula, leave a target to its older ScaledObject or to an
//! HPA; and TriggerAuthentications' own Ready and their users.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, ServiceAccount};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use windlass::apis::scaled_job::ScaledJob;
use windlass::apis::scaled_object::ScaledObject;
use windlass::apis::trigger_auth::{
    AuthenticationUser, ClusterTriggerAuthentication, TriggerAuthentication,
    TriggerAuthenticationStatus, UserKind,
};

use crate::support::{
    TestEnv, TestNamespace, delete_node, install_crds, start_windlass, start_windlass_in,
    start_windlass_with_env, test_node, wait_until,
};

pub(crate) async fn deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    replicas: i32,
) {
    deployment_with(client, namespace, name, node, replicas, json!({})).await;
}

/// A Deployment whose one container also has the fields of `container` (its `env`, ...).
async fn deployment_with(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    replicas: i32,
    container: Value,
) {
    let mut worker = json!({"name": "worker", "image": "registry.example.com/worker:1"});
    merge(&mut worker, container);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"windlass.dev/test-node": node},
                    "containers": [worker]
                }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

pub(crate) fn scaled_object(
    name: &str,
    target: &str,
    queue_url: &str,
    extra: Value,
) -> ScaledObject {
    let mut object = json!({
        "apiVersion": "windlass.dev/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": target},
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "maxReplicaCount": 10,
            "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {"queueURL": queue_url, "queueLength": "2"}}]
        }
    });
    merge(&mut object, extra);
    serde_json::from_value(object).unwrap()
}

/// Merges `extra` into `base` as a JSON merge patch would, without its null deletions.
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Deletes the test's ScaledObjects while its controller still runs (it removes their
/// finalizers), then the namespace and the node.
pub(crate) async fn clean_up(
    env: &TestEnv,
    namespace: TestNamespace,
    objects: &Api<ScaledObject>,
    node: &str,
) {
    objects
        .delete_collection(&Default::default(), &ListParams::default())
        .await
        .unwrap();
    wait_until(
        "the ScaledObjects to be gone",
        Duration::from_secs(30),
        || async {
            objects
                .list(&ListParams::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(|_| ())
        },
    )
    .await;
    namespace.delete().await;
    delete_node(&env.client, node).await;
}

pub(crate) async fn replicas(client: &Client, namespace: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .ok()?
        .spec?
        .replicas
}

pub(crate) async fn wait_for_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    expected: i32,
    timeout: Duration,
) {
    wait_until(
        &format!("{name} to have {expected} replicas"),
        timeout,
        || async { (replicas(client, namespace, name).await == Some(expected)).then_some(()) },
    )
    .await;
}

fn condition(object: &ScaledObject, type_: &str) -> Option<(String, String, String)> {
    let found = object
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((
        found.status.clone(),
        found.reason.clone(),
        found.message.clone(),
    ))
}

pub(crate) async fn wait_for_condition(
    api: &Api<ScaledObject>,
    name: &str,
    type_: &str,
    status: &str,
) -> (String, String, String) {
    wait_until(
        &format!("{name} condition {type_}={status}"),
        Duration::from_secs(30),
        || async { condition(&api.get(name).await.ok()?, type_).filter(|(s, _, _)| s == status) },
    )
    .await
}

#[tokio::test]
async fn deployment_scales_from_zero_on_messages_and_back_to_zero_after_the_cooldown() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-scale").await;
    let node = test_node(&env.client, "kwok-so").await;
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    let queue = env.queue("so-scale").await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, json!({})),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    assert_eq!(
        replicas(&env.client, &namespace.name, "worker").await,
        Some(0),
        "an empty queue keeps zero replicas"
    );

    env.send_messages(&queue, 6).await;
    let sent = Instant::now();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        3,
        Duration::from_secs(30),
    )
    .await;
    println!("messages visible -> 3 replicas in {:?}", sent.elapsed());
    let status = objects.get("worker").await.unwrap().status.unwrap();
    assert_eq!(status.original_replica_count, Some(0));
    wait_for_condition(&objects, "worker", "Active", "True").await;

    // Timed from before the purge: on a busy moto its answer can come seconds after the queue
    // is empty, and the cooldown runs from the last poll that saw messages, which can start
    // more than one pollingInterval before the purge when a poll runs long; a scale-in that
    // ignored the cooldown would come within about a second.
    let emptied = Instant::now();
    env.sqs()
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        0,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        emptied.elapsed() >= Duration::from_secs(3),
        "scaled to zero before the 5 s cooldown: {:?}",
        emptied.elapsed()
    );

    // The Event follows the scale patch, so on a loaded machine it can land after the
    // replicas are seen at zero.
    let events: Api<Event> = Api::namespaced(env.client.clone(), &namespace.name);
    wait_until(
        "a ScaledUp and a ScaledDown Event",
        Duration::from_secs(20),
        || async {
            let reasons: Vec<String> = events
                .list(
                    &ListParams::default()
                        .fields("involvedObject.name=worker,involvedObject.kind=ScaledObject"),
                )
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            (reasons.iter().any(|r| r == "ScaledUp") && reasons.iter().any(|r| r == "ScaledDown"))
                .then_some(())
        },
    )
    .await;
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn two_scaled_objects_on_one_queue_share_one_get_queue_attributes_per_interval() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-shared").await;
    let node = test_node(&env.client, "kwok-shared").await;
    let queue = env.queue("so-shared").await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let windlass = start_windlass(&namespace.name);
    // One after the other, so their loops start at different moments of the interval.
    for name in ["first", "second"] {
        deployment(&env.client, &namespace.name, name, &node, 0).await;
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, &queue, json!({"spec": {"pollingInterval": 2}})),
            )
            .await
            .unwrap();
        wait_for_condition(&objects, name, "Ready", "True").await;
    }
    let requests = format!("windlass_sqs_get_queue_attributes_total{{queue=\"{queue}\"}}");
    let polls = |name: &str| {
        format!(
            "windlass_scaler_poll_duration_seconds_count{{namespace=\"{}\",name=\"{name}\"}}",
            namespace.name
        )
    };
    let sample = || {
        (
            windlass
                .metric(&polls("first"))
                .expect("first's poll counter"),
            windlass
                .metric(&polls("second"))
                .expect("second's poll counter"),
            windlass.metric(&requests).expect("the request counter"),
        )
    };
    // A poll is counted once it has finished, a moment after it wrote Ready.
    wait_until(
        "both objects' first polls",
        Duration::from_secs(30),
        || async {
            (windlass.metric(&polls("first")).is_some()
                && windlass.metric(&polls("second")).is_some())
            .then_some(())
        },
    )
    .await;
    let (first_before, second_before, requests_before) = sample();
    // A measurement window, not a wait for an outcome: at least 10 s, and long enough for
    // both objects to poll five times (a busy moto makes polls overrun their ticks).
    let window = std::time::Instant::now();
    let (first, second, sent) = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (first_now, second_now, requests_now) = sample();
        let counts = (
            first_now - first_before,
            second_now - second_before,
            requests_now - requests_before,
        );
        let enough = counts.0.min(counts.1) >= 5.0 && window.elapsed() >= Duration::from_secs(10);
        if enough || window.elapsed() >= Duration::from_secs(60) {
            break counts;
        }
    };
    println!(
        "two objects polling every 2 s, in {:.0} s: {first} + {second} polls, {sent} GetQueueAttributes",
        window.elapsed().as_secs_f64()
    );
    assert!(
        first >= 5.0 && second >= 5.0,
        "{first} and {second} polls in 60 s at a 2 s interval"
    );
    // Every tick either object polled sends one request, and both poll on the same ticks: as
    // many requests as the busier object's polls, give or take a poll under way at either
    // end of the window; unshared, as many as both objects' polls.
    assert!(
        sent >= first.max(second) - 1.0 && sent <= first.max(second) + 1.0,
        "{first} and {second} polls sent {sent} requests: the polls of one tick share one"
    );
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn a_scaled_object_alone_on_its_queue_reads_it_afresh_on_every_poll() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-alone").await;
    let node = test_node(&env.client, "kwok-alone").await;
    let queue = env.queue("so-alone").await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, json!({})),
        )
        .await
        .unwrap();
    let windlass = start_windlass(&namespace.name);
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    let requests = format!("windlass_sqs_get_queue_attributes_total{{queue=\"{queue}\"}}");
    let polls = format!(
        "windlass_scaler_poll_duration_seconds_count{{namespace=\"{}\",name=\"worker\"}}",
        namespace.name
    );
    let sample = || {
        (
            windlass.metric(&polls).expect("the poll counter"),
            windlass.metric(&requests).expect("the request counter"),
        )
    };
    // A poll is counted once it has finished, a moment after it wrote Ready.
    wait_until("the first poll", Duration::from_secs(30), || async {
        windlass.metric(&polls).map(drop)
    })
    .await;
    let (polls_before, requests_before) = sample();
    // A measurement window, not a wait for an outcome: at least 15 s, and long enough for ten
    // polls (a busy machine makes polls overrun their ticks).
    let window = std::time::Instant::now();
    let (polled, sent) = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (polls_now, requests_now) = sample();
        let counts = (polls_now - polls_before, requests_now - requests_before);
        let enough = counts.0 >= 10.0 && window.elapsed() >= Duration::from_secs(15);
        if enough || window.elapsed() >= Duration::from_secs(60) {
            break counts;
        }
    };
    println!(
        "one object polling every 1 s: {polled} polls, {sent} GetQueueAttributes in {:.0} s",
        window.elapsed().as_secs_f64()
    );
    assert!(
        polled >= 10.0,
        "only {polled} polls in 60 s at a 1 s interval"
    );
    // A poll under way when the counters are read has sent its request but is not counted yet.
    assert!(
        (sent - polled).abs() <= 1.0,
        "{polled} polls sent {sent} requests: each poll must read the queue itself"
    );
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn paused_replicas_hold_the_target_until_the_annotation_is_removed() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-pause").await;
    let node = test_node(&env.client, "kwok-pause").await;
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    let queue = env.queue("so-pause").await;
    env.send_messages(&queue, 8).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, json!({})),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        4,
        Duration::from_secs(30),
    )
    .await;

    let annotate = |value: Value| {
        Patch::Merge(
            json!({"metadata": {"annotations": {"autoscaling.windlass.dev/paused-replicas": value}}}),
        )
    };
    objects
        .patch("worker", &PatchParams::default(), &annotate(json!("1")))
        .await
        .unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        1,
        Duration::from_secs(15),
    )
    .await;
    wait_for_condition(&objects, "worker", "Paused", "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas(&env.client, &namespace.name, "worker").await,
        Some(1),
        "paused replicas held for three polls"
    );

    objects
        .patch("worker", &PatchParams::default(), &annotate(Value::Null))
        .await
        .unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        4,
        Duration::from_secs(30),
    )
    .await;
    wait_for_condition(&objects, "worker", "Paused", "False").await;

    // KEDA's spelling works as Windlass's, and Windlass's wins when both are set.
    let annotate_both = |windlass: Value, keda: Value| {
        Patch::Merge(json!({"metadata": {"annotations": {
            "autoscaling.windlass.dev/paused-replicas": windlass,
            "autoscaling.keda.sh/paused-replicas": keda,
        }}}))
    };
    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &annotate_both(Value::Null, json!("2")),
        )
        .await
        .unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        2,
        Duration::from_secs(15),
    )
    .await;
    wait_for_condition(&objects, "worker", "Paused", "True").await;
    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &annotate_both(json!("3"), json!("2")),
        )
        .await
        .unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        3,
        Duration::from_secs(15),
    )
    .await;
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn fallback_replicas_apply_when_the_queue_endpoint_fails() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-fallback").await;
    let node = test_node(&env.client, "kwok-fallback").await;
    deployment(&env.client, &namespace.name, "worker", &node, 1).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let broken = json!({"spec": {
        "fallback": {"failureThreshold": 2, "replicas": 3},
        "triggers": [{"type": "aws-sqs-queue", "name": "queue", "metadata": {
            "queueURL": "http://127.0.0.1:1/000000000000/nowhere", "awsEndpoint": "http://127.0.0.1:1", "awsRegion": "us-east-1"
        }}]
    }});
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", "unused", broken),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        3,
        Duration::from_secs(60),
    )
    .await;
    wait_for_condition(&objects, "worker", "Fallback", "True").await;
    let (_, reason, message) = wait_for_condition(&objects, "worker", "Ready", "False").await;
    assert_eq!(reason, "TriggerError");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn a_queue_that_does_not_exist_is_one_short_sentence_in_ready() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-noqueue").await;
    let node = test_node(&env.client, "kwok-noqueue").await;
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    let missing = format!("{}-never-created", env.queue("so-noqueue").await);
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &missing, json!({})),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);

    let (_, reason, message) = wait_for_condition(&objects, "worker", "Ready", "False").await;
    println!("{message}");
    assert_eq!(reason, "TriggerError");
    assert!(
        message.starts_with(&format!("queue: reading queue {missing}: ")),
        "{message}"
    );
    assert!(
        message.contains("QueueDoesNotExist") || message.contains("NonExistentQueue"),
        "names the error code: {message}"
    );
    assert!(
        message.len() < 300 && !message.contains("Error {"),
        "{} characters: {message}",
        message.len()
    );
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn missing_secret_is_a_condition_and_an_event_and_never_scales_to_zero() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-auth").await;
    let node = test_node(&env.client, "kwok-auth").await;
    deployment(&env.client, &namespace.name, "worker", &node, 2).await;
    let queue = env.queue("so-auth").await;
    let keys = json!({"secretTargetRef": [
        {"parameter": "awsAccessKeyID", "name": "sqs-keys", "key": "id"},
        {"parameter": "awsSecretAccessKey", "name": "sqs-keys", "key": "secret"}
    ]});
    trigger_authentication(&env.client, &namespace.name, "keys", keys).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let with_auth = json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue}, "authenticationRef": {"name": "keys"}}]}});
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, with_auth),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);

    let (_, reason, message) = wait_for_condition(&objects, "worker", "Ready", "False").await;
    assert_eq!(reason, "AuthenticationError");
    assert_eq!(
        message,
        format!(
            "triggers[0].authenticationRef: Secret {}/sqs-keys not found",
            namespace.name
        )
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &namespace.name);
    wait_until(
        "a Warning Event naming the missing Secret",
        Duration::from_secs(15),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=worker"))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref() == Some(message.as_str())
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        replicas(&env.client, &namespace.name, "worker").await,
        Some(2),
        "replicas untouched past the cooldown"
    );

    // KEDA's legacy `identityOwner: operator`: the controller's own identity, whatever the
    // authentication names, so the missing Secret no longer matters.
    let as_operator = json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue, "queueLength": "5", "identityOwner": "operator"},
        "authenticationRef": {"name": "keys"}}]}});
    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(as_operator),
        )
        .await
        .unwrap();
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    clean_up(&env, namespace, &objects, &node).await;
}

pub(crate) async fn trigger_authentication(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: Value,
) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<TriggerAuthentication>(&()),
    );
    let object = json!({"apiVersion": "windlass.dev/v1alpha1", "kind": "TriggerAuthentication", "metadata": {"name": name}, "spec": spec});
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

/// The Ready condition of a TriggerAuthentication, once it says `status`.
async fn trigger_authentication_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &str,
) -> (String, String) {
    let api: Api<TriggerAuthentication> = Api::namespaced(client.clone(), namespace);
    wait_until(
        &format!("TriggerAuthentication {name} Ready={status}"),
        Duration::from_secs(30),
        || async {
            let object = api.get(name).await.ok()?;
            let status_block = object.status?;
            status_block
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == status)
                .map(|c| (c.reason, c.message))
        },
    )
    .await
}

#[tokio::test]
async fn trigger_authentications_are_ready_only_when_their_secrets_and_keys_exist() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "ta-ready").await;
    let ns = &namespace.name;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "sqs-keys"},
        "stringData": {"id": "testing", "secret": "testing"}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let keys = |secret: &str, key: &str| {
        json!({"secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": secret, "key": "id"},
            {"parameter": "awsSecretAccessKey", "name": secret, "key": key}
        ]})
    };
    trigger_authentication(&env.client, ns, "found", keys("sqs-keys", "secret")).await;
    trigger_authentication(&env.client, ns, "no-secret", keys("gone", "secret")).await;
    trigger_authentication(&env.client, ns, "no-key", keys("sqs-keys", "token")).await;
    let _windlass = start_windlass(ns);

    let (reason, _) = trigger_authentication_ready(&env.client, ns, "found", "True").await;
    assert_eq!(reason, "Checked");
    let (reason, message) =
        trigger_authentication_ready(&env.client, ns, "no-secret", "False").await;
    assert_eq!(reason, "AuthenticationError");
    assert_eq!(message, format!("Secret {ns}/gone not found"));
    let (_, message) = trigger_authentication_ready(&env.client, ns, "no-key", "False").await;
    assert_eq!(
        message,
        "Secret \"sqs-keys\" has no key \"token\" (parameter awsSecretAccessKey)"
    );
    let object = Api::<TriggerAuthentication>::namespaced(env.client.clone(), ns)
        .get("found")
        .await
        .unwrap();
    assert_eq!(
        object.status.unwrap().observed_generation,
        object.metadata.generation
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), ns);
    let missing = format!("Secret {ns}/gone not found");
    wait_until(
        "a Warning Event naming the missing Secret",
        Duration::from_secs(15),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=no-secret"))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning") && e.message.as_deref() == Some(&missing)
            })
        },
    )
    .await;

    // Secrets are not watched: the next check, within a minute, sees the new one.
    let late: Secret = serde_json::from_value(json!({"metadata": {"name": "gone"},
        "stringData": {"id": "testing", "secret": "testing"}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &late)
        .await
        .unwrap();
    let api: Api<TriggerAuthentication> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        "no-secret to turn Ready once its Secret exists",
        Duration::from_secs(75),
        || async {
            let status = api.get("no-secret").await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")
        },
    )
    .await;
    namespace.delete().await;
}

/// Every authentication mode reads the queue: the workload's IRSA role (TokenRequest, then STS
/// AssumeRoleWithWebIdentity), a role assumed on the controller's identity, and keys from the
/// workload's container environment (one through `valueFrom` a Secret). A workload
/// ServiceAccount without a role, and a key from a Secret that does not exist, are reported.
#[tokio::test]
async fn each_authentication_mode_reads_the_queue() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-auth-modes").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-auth-modes").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), ns);
    let with_role: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "worker",
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/windlass-worker"}}}))
    .unwrap();
    accounts
        .create(&PostParams::default(), &with_role)
        .await
        .unwrap();
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap(),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    // The secret key comes from a Secret through valueFrom, as the pod would see it.
    let keys_in_env = |secret: &str| {
        json!([{"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "secret"}}}])
    };
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "worker-keys"}, "stringData": {"secret": "testing"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    for (name, pod) in [
        ("irsa", json!({"serviceAccountName": "worker"})),
        ("no-role", json!({"serviceAccountName": "plain"})),
        ("role", json!({})),
        (
            "env",
            json!({"containers": [{"name": "worker", "image": "registry.example.com/worker:1", "env": keys_in_env("worker-keys")}]}),
        ),
        (
            "env-missing",
            json!({"containers": [{"name": "worker", "image": "registry.example.com/worker:1", "env": keys_in_env("absent-keys")}]}),
        ),
    ] {
        deployment(&env.client, ns, name, &node, 0).await;
        deployments
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": pod}}})),
            )
            .await
            .unwrap();
    }
    trigger_authentication(
        &env.client,
        ns,
        "as-workload",
        json!({"podIdentity": {"provider": "aws", "identityOwner": "workload"}}),
    )
    .await;
    trigger_authentication(&env.client, ns, "as-role", json!({"podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::123456789012:role/reader", "externalID": "windlass"}})).await;
    trigger_authentication(&env.client, ns, "from-env", json!({"env": [
        {"parameter": "awsAccessKeyID", "name": "AWS_ACCESS_KEY_ID", "containerName": "worker"},
        {"parameter": "awsSecretAccessKey", "name": "AWS_SECRET_ACCESS_KEY", "containerName": "worker"}
    ]})).await;
    let queue = env.queue("so-auth-modes").await;
    env.send_messages(&queue, 4).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    for (name, authentication) in [
        ("irsa", "as-workload"),
        ("no-role", "as-workload"),
        ("role", "as-role"),
        ("env", "from-env"),
        ("env-missing", "from-env"),
    ] {
        let trigger = json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
            "metadata": {"queueURL": queue, "queueLength": "2"}, "authenticationRef": {"name": authentication}}]}});
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, &queue, trigger),
            )
            .await
            .unwrap();
    }
    let _windlass = start_windlass(ns);

    for name in ["irsa", "role", "env"] {
        wait_for_replicas(&env.client, ns, name, 2, Duration::from_secs(30)).await;
        wait_for_condition(&objects, name, "Ready", "True").await;
    }
    let (_, reason, message) = wait_for_condition(&objects, "no-role", "Ready", "False").await;
    assert_eq!(reason, "AuthenticationError");
    assert_eq!(
        message,
        format!(
            "triggers[0].authenticationRef: ServiceAccount {ns}/plain has no eks.amazonaws.com/role-arn annotation (identityOwner workload)"
        )
    );
    assert_eq!(replicas(&env.client, ns, "no-role").await, Some(0));
    let (_, reason, message) = wait_for_condition(&objects, "env-missing", "Ready", "False").await;
    assert_eq!(reason, "AuthenticationError");
    assert_eq!(
        message,
        format!(
            "triggers[0].authenticationRef: environment variable \"AWS_SECRET_ACCESS_KEY\" of the workload (parameter awsSecretAccessKey): Secret {ns}/absent-keys not found"
        )
    );
    assert_eq!(replicas(&env.client, ns, "env-missing").await, Some(0));
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn deleting_a_scaled_object_restores_the_original_replicas_when_asked() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-restore").await;
    let node = test_node(&env.client, "kwok-restore").await;
    deployment(&env.client, &namespace.name, "worker", &node, 2).await;
    let queue = env.queue("so-restore").await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let restore = json!({"spec": {"advanced": {"restoreToOriginalReplicaCount": true}}});
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, restore),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        0,
        Duration::from_secs(30),
    )
    .await;
    // Status is written after the scale; wait for it rather than race it.
    wait_until(
        "status to remember the original 2 replicas",
        Duration::from_secs(30),
        || async {
            let status = objects.get("worker").await.ok()?.status?;
            (status.original_replica_count == Some(2)).then_some(())
        },
    )
    .await;
    objects.delete("worker", &Default::default()).await.unwrap();
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        2,
        Duration::from_secs(30),
    )
    .await;
    clean_up(&env, namespace, &objects, &node).await;
}

#[tokio::test]
async fn cluster_trigger_authentication_reads_its_secret_from_the_controllers_namespace() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-cta").await;
    let home = TestNamespace::create(&env.client, "windlass-home").await;
    let node = test_node(&env.client, "kwok-cta").await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "sqs-keys"},
        "stringData": {"id": "testing", "secret": "testing"}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), &home.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cta_name = crate::support::unique("shared-keys");
    let cluster_authentications: Api<DynamicObject> = Api::all_with(
        env.client.clone(),
        &ApiResource::erase::<ClusterTriggerAuthentication>(&()),
    );
    let cta = json!({"apiVersion": "windlass.dev/v1alpha1", "kind": "ClusterTriggerAuthentication", "metadata": {"name": cta_name},
    "spec": {"secretTargetRef": [
        {"parameter": "awsAccessKeyID", "name": "sqs-keys", "key": "id"},
        {"parameter": "awsSecretAccessKey", "name": "sqs-keys", "key": "secret"}
    ]}});
    cluster_authentications
        .create(
            &PostParams::default(),
            &serde_json::from_value(cta).unwrap(),
        )
        .await
        .unwrap();
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    let queue = env.queue("so-cta").await;
    env.send_messages(&queue, 4).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let trigger = json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue, "queueLength": "2"},
        "authenticationRef": {"name": cta_name, "kind": "ClusterTriggerAuthentication"}}]}});
    objects
        .create(
            &PostParams::default(),
            &scaled_object("worker", "worker", &queue, trigger),
        )
        .await
        .unwrap();
    let _windlass = start_windlass_in(&namespace.name, &home.name);
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        2,
        Duration::from_secs(30),
    )
    .await;
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    // Its status lists the user by namespace and name, as names repeat across namespaces.
    let typed: Api<ClusterTriggerAuthentication> = Api::all(env.client.clone());
    let status = wait_until(
        "the ClusterTriggerAuthentication to list its user",
        Duration::from_secs(30),
        || async {
            typed
                .get(&cta_name)
                .await
                .ok()?
                .status
                .filter(|s| !s.users.is_empty())
        },
    )
    .await;
    assert_eq!(status.scaled_objects, format!("{}/worker", namespace.name));
    assert_eq!(status.scaled_jobs, "");
    assert_eq!(
        status.users,
        [AuthenticationUser {
            kind: UserKind::ScaledObject,
            namespace: namespace.name.clone(),
            name: "worker".into(),
            resolved: true,
            message: None,
        }]
    );
    clean_up(&env, namespace, &objects, &node).await;
    cluster_authentications
        .delete(&cta_name, &Default::default())
        .await
        .unwrap();
    home.delete().await;
}

#[tokio::test]
async fn scaling_modifiers_formula_over_two_queues_decides_the_replicas() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-formula").await;
    let node = test_node(&env.client, "kwok-formula").await;
    deployment(&env.client, &namespace.name, "worker", &node, 0).await;
    let (orders, refunds) = (
        env.queue("so-formula-orders").await,
        env.queue("so-formula-refunds").await,
    );
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &namespace.name);
    let modifiers = |formula: &str, metric_type: &str| {
        json!({"spec": {
            "advanced": {"scalingModifiers": {"formula": formula, "target": "1", "metricType": metric_type}},
            "triggers": [
                {"type": "aws-sqs-queue", "name": "orders", "metadata": {"queueURL": orders, "queueLength": "1"}},
                {"type": "aws-sqs-queue", "name": "refunds", "metadata": {"queueURL": refunds, "queueLength": "1"}}
            ]
        }})
    };

    let refused = objects
        .create(
            &PostParams::default(),
            &scaled_object(
                "worker",
                "worker",
                &orders,
                modifiers("orders", "Utilization"),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("metricType Utilization is not supported with scalingModifiers"),
        "{refused}"
    );

    env.send_messages(&orders, 3).await;
    env.send_messages(&refunds, 1).await;
    objects
        .create(
            &PostParams::default(),
            &scaled_object(
                "worker",
                "worker",
                &orders,
                modifiers("orders > 2 ? orders + refunds : 1", "AverageValue"),
            ),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(&namespace.name);
    // Each trigger alone asks for 3 and 1 replicas (queueLength 1), so the highest would be 3;
    // the formula gives 3 + 1 = 4 against a target of 1. (Both stay within the HPA's default
    // scale-up of 4 pods per 15 s, so the rate limit does not decide.)
    wait_for_replicas(
        &env.client,
        &namespace.name,
        "worker",
        4,
        Duration::from_secs(30),
    )
    .await;
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        replicas(&env.client, &namespace.name, "worker").await,
        Some(4),
        "the formula's replicas hold"
    );
    let read: Vec<(String, f64)> = objects
        .get("worker")
        .await
        .unwrap()
        .status
        .unwrap()
        .trigger_values
        .into_iter()
        .map(|(name, value)| (name, value.value))
        .collect();
    assert_eq!(
        read,
        [("orders".to_owned(), 3.0), ("refunds".to_owned(), 1.0)],
        "each trigger's own reading stays in status"
    );

    objects
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(modifiers("orders + returns", "AverageValue")),
        )
        .await
        .unwrap();
    let (_, reason, message) = wait_for_condition(&objects, "worker", "Ready", "False").await;
    assert_eq!(reason, "ScalingModifiersError");
    assert_eq!(
        message,
        "scalingModifiers.formula cannot be evaluated: unknown variable: returns"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &namespace.name);
    wait_until(
        "a Warning Event naming the unknown trigger",
        Duration::from_secs(15),
        || async {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=worker"))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref() == Some(message.as_str())
            })
        },
    )
    .await;
    assert_eq!(
        replicas(&env.client, &namespace.name, "worker").await,
        Some(4),
        "a bad formula leaves the replicas alone"
    );
    clean_up(&env, namespace, &objects, &node).await;
}

/// `{"spec": {"triggers": [...]}}` for one `queue` trigger on `queue_url` (queueLength 2), with
/// `metadata` added to its own.
fn sqs_trigger(queue_url: &str, metadata: Value) -> Value {
    let mut trigger = json!({"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue_url, "queueLength": "2"}});
    merge(&mut trigger["metadata"], metadata);
    json!({"spec": {"triggers": [trigger]}})
}

/// What the object's `queue` trigger last read, once a poll has written it.
async fn queue_value(api: &Api<ScaledObject>, name: &str) -> Option<f64> {
    Some(
        api.get(name)
            .await
            .ok()?
            .status?
            .trigger_values
            .get("queue")?
            .value,
    )
}

/// What counts toward scaling, and when a never-active object may rest. The queue holds
/// exactly activationQueueLength messages: nothing wakes, and one more message wakes it.
/// Received messages count unless `scaleOnInFlight: "false"`; delayed ones only with
/// `scaleOnDelayed: "true"` (each beside an object with the other setting on the same queue).
/// A never-active object with `initialCooldownPeriod: 15` keeps its replica that long after its
/// creation, while one without goes to zero at its first poll.
#[tokio::test]
async fn activation_in_flight_delayed_and_initial_cooldown_decide_the_replicas() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-counts").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-counts").await;
    let (threshold, in_flight, delayed, empty) = (
        env.queue("so-threshold").await,
        env.queue("so-in-flight").await,
        env.queue("so-delayed").await,
        env.queue("so-empty").await,
    );
    env.send_messages(&threshold, 3).await;
    env.send_messages(&in_flight, 4).await;
    // Received and never deleted: in flight for ten minutes.
    let mut received = 0;
    while received < 4 {
        let output = env
            .sqs()
            .receive_message()
            .queue_url(&in_flight)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .send()
            .await
            .unwrap();
        received += output.messages().len();
    }
    for n in 0..4 {
        env.sqs()
            .send_message()
            .queue_url(&delayed)
            .message_body(format!("delayed {n}"))
            .delay_seconds(900)
            .send()
            .await
            .unwrap();
    }
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    let cases = [
        (
            "below-activation",
            &threshold,
            json!({"activationQueueLength": "3"}),
            0,
        ),
        ("in-flight", &in_flight, json!({}), 0),
        (
            "in-flight-ignored",
            &in_flight,
            json!({"scaleOnInFlight": "false"}),
            0,
        ),
        ("delayed", &delayed, json!({"scaleOnDelayed": "true"}), 0),
        ("delayed-ignored", &delayed, json!({}), 0),
        ("no-initial-cooldown", &empty, json!({}), 1),
    ];
    for (name, queue, metadata, replicas) in cases {
        deployment(&env.client, ns, name, &node, replicas).await;
        let object = scaled_object(name, name, queue, sqs_trigger(queue, metadata));
        objects
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let _windlass = start_windlass(ns);
    // Created once the controller runs, so its clock starts with the controller's first look.
    deployment(&env.client, ns, "initial-cooldown", &node, 1).await;
    // creationTimestamp has whole seconds: the object may count as created up to 1 s earlier.
    let created = Instant::now();
    let waits = scaled_object(
        "initial-cooldown",
        "initial-cooldown",
        &empty,
        json!({"spec": {"initialCooldownPeriod": 15}}),
    );
    objects
        .create(&PostParams::default(), &waits)
        .await
        .unwrap();

    wait_for_replicas(
        &env.client,
        ns,
        "no-initial-cooldown",
        0,
        Duration::from_secs(30),
    )
    .await;
    // Status follows the poll's scale decision.
    wait_until(
        "initial-cooldown's first poll",
        Duration::from_secs(30),
        || queue_value(&objects, "initial-cooldown"),
    )
    .await;
    assert!(
        created.elapsed() < Duration::from_secs(13),
        "the first poll came too late to tell the initial cooldown apart: {:?}",
        created.elapsed()
    );
    assert_eq!(
        replicas(&env.client, ns, "initial-cooldown").await,
        Some(1),
        "a never-active object rested within its initialCooldownPeriod"
    );

    // 4 messages at queueLength 2.
    wait_for_replicas(&env.client, ns, "in-flight", 2, Duration::from_secs(30)).await;
    wait_for_replicas(&env.client, ns, "delayed", 2, Duration::from_secs(30)).await;
    for (name, expected) in [
        ("in-flight", 4.0),
        ("in-flight-ignored", 0.0),
        ("delayed", 4.0),
        ("delayed-ignored", 0.0),
        ("below-activation", 3.0),
    ] {
        let read = wait_until(
            &format!("{name}'s first reading"),
            Duration::from_secs(30),
            || queue_value(&objects, name),
        )
        .await;
        assert_eq!(read, expected, "{name} counted {read} messages");
    }
    wait_for_condition(&objects, "below-activation", "Active", "False").await;
    for name in ["in-flight-ignored", "delayed-ignored", "below-activation"] {
        assert_eq!(replicas(&env.client, ns, name).await, Some(0), "{name}");
    }

    env.send_messages(&threshold, 1).await;
    wait_for_replicas(
        &env.client,
        ns,
        "below-activation",
        2,
        Duration::from_secs(30),
    )
    .await;
    wait_for_condition(&objects, "below-activation", "Active", "True").await;

    wait_for_replicas(
        &env.client,
        ns,
        "initial-cooldown",
        0,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        created.elapsed() >= Duration::from_secs(14),
        "rested {:?} after creation, before its 15 s initialCooldownPeriod",
        created.elapsed()
    );
    clean_up(&env, namespace, &objects, &node).await;
}

/// Every pause switch, under `autoscaling.windlass.dev/` and KEDA's `autoscaling.keda.sh/`,
/// beside two objects without switches on the same 4 messages (queueLength 2): one rises from 1
/// to 2 replicas, one falls from 3 to 2. `paused` holds 1, `paused-scale-in` holds 3,
/// `paused-scale-out` holds 1, each until its annotation is removed; `force-activation` wakes an
/// object on an empty queue to 1 replica until it is removed. A Windlass `paused: "false"`
/// overrides KEDA's `"true"`.
#[tokio::test]
async fn pause_switches_under_either_prefix_hold_or_bound_the_replicas() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-switches").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-switches").await;
    let (four, empty) = (
        env.queue("so-switches-four").await,
        env.queue("so-switches-empty").await,
    );
    env.send_messages(&four, 4).await;
    let windlass = |switch: &str| format!("autoscaling.windlass.dev/{switch}");
    let keda = |switch: &str| format!("autoscaling.keda.sh/{switch}");
    // (object, its annotations, the Deployment's replicas, its queue, the replicas it holds)
    let held = [
        ("paused", vec![(windlass("paused"), "true")], 1, &four),
        ("keda-paused", vec![(keda("paused"), "true")], 1, &four),
        (
            "no-scale-in",
            vec![(windlass("paused-scale-in"), "true")],
            3,
            &four,
        ),
        (
            "keda-no-scale-in",
            vec![(keda("paused-scale-in"), "true")],
            3,
            &four,
        ),
        (
            "no-scale-out",
            vec![(windlass("paused-scale-out"), "true")],
            1,
            &four,
        ),
        (
            "keda-no-scale-out",
            vec![(keda("paused-scale-out"), "true")],
            1,
            &four,
        ),
    ];
    let moved = [
        ("rises", vec![], 1, &four),
        ("falls", vec![], 3, &four),
        (
            "unpaused-by-windlass",
            vec![(keda("paused"), "true"), (windlass("paused"), "false")],
            1,
            &four,
        ),
        (
            "forced",
            vec![(windlass("force-activation"), "true")],
            0,
            &empty,
        ),
        (
            "keda-forced",
            vec![(keda("force-activation"), "true")],
            0,
            &empty,
        ),
    ];
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    for (name, annotations, replicas, queue) in held.iter().chain(&moved) {
        deployment(&env.client, ns, name, &node, *replicas).await;
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(key, value)| (key.clone(), json!(value)))
            .collect();
        let object = scaled_object(
            name,
            name,
            queue,
            json!({"metadata": {"annotations": annotations}}),
        );
        objects
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let _windlass = start_windlass(ns);

    for (name, expected) in [
        ("rises", 2),
        ("falls", 2),
        ("unpaused-by-windlass", 2),
        ("forced", 1),
        ("keda-forced", 1),
    ] {
        wait_for_replicas(&env.client, ns, name, expected, Duration::from_secs(30)).await;
    }
    wait_for_condition(&objects, "forced", "Active", "True").await;
    wait_for_condition(&objects, "keda-forced", "Active", "True").await;
    wait_for_condition(&objects, "unpaused-by-windlass", "Paused", "False").await;
    wait_for_condition(&objects, "paused", "Paused", "True").await;
    wait_for_condition(&objects, "keda-paused", "Paused", "True").await;
    // Each held object has read its 4 messages, then three more polls.
    for (name, ..) in &held {
        wait_until(
            &format!("{name}'s first reading"),
            Duration::from_secs(30),
            || async { queue_value(&objects, name).await.filter(|v| *v == 4.0) },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _, replicas_at_start, _) in &held {
        assert_eq!(
            replicas(&env.client, ns, name).await,
            Some(*replicas_at_start),
            "{name} moved despite its switch"
        );
    }

    for (name, annotations, ..) in held.iter().chain(&moved[3..]) {
        let removed: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(key, _)| (key.clone(), Value::Null))
            .collect();
        objects
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": removed}})),
            )
            .await
            .unwrap();
    }
    for (name, ..) in &held {
        wait_for_replicas(&env.client, ns, name, 2, Duration::from_secs(30)).await;
    }
    // Without force-activation the empty queue is inactive: zero after the 5 s cooldown.
    for name in ["forced", "keda-forced"] {
        wait_for_replicas(&env.client, ns, name, 0, Duration::from_secs(30)).await;
    }
    wait_for_condition(&objects, "paused", "Paused", "False").await;
    clean_up(&env, namespace, &objects, &node).await;
}

/// Each fallback behavior once a trigger fails failureThreshold (3) times in a row, against a
/// queue that does not exist, with `fallback.replicas: 3`: `static` raises 1 to 3,
/// `currentReplicas` keeps 2, `currentReplicasIfHigher` raises 1 to 3 and keeps 5,
/// `currentReplicasIfLower` lowers 5 to 3 and keeps 1; each says Fallback=True. With
/// `failureThreshold: 8`, four failures leave the replicas and Fallback=False.
#[tokio::test]
async fn each_fallback_behavior_applies_from_the_failure_threshold() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-fallbacks").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-fallbacks").await;
    // SQS answers at once that it does not exist, so every poll fails within the interval.
    let missing = format!("{}-never-created", env.queue("so-fallbacks").await);
    // (object, behavior, failureThreshold, replicas before, replicas in fallback)
    let cases = [
        ("static", "static", 3, 1, 3),
        ("current", "currentReplicas", 3, 2, 2),
        ("if-higher-raises", "currentReplicasIfHigher", 3, 1, 3),
        ("if-higher-keeps", "currentReplicasIfHigher", 3, 5, 5),
        ("if-lower-lowers", "currentReplicasIfLower", 3, 5, 3),
        ("if-lower-keeps", "currentReplicasIfLower", 3, 1, 1),
        ("late", "static", 8, 1, 3),
    ];
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    for (name, behavior, threshold, before, _) in cases {
        deployment(&env.client, ns, name, &node, before).await;
        let fallback = json!({"spec": {"fallback":
            {"failureThreshold": threshold, "replicas": 3, "behavior": behavior}}});
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, &missing, fallback),
            )
            .await
            .unwrap();
    }
    let _windlass = start_windlass(ns);

    let failures = |object: &ScaledObject| {
        object
            .status
            .as_ref()
            .and_then(|s| s.health.get("queue"))
            .map_or(0, |h| h.number_of_failures)
    };
    let early = wait_until("late's fourth failure", Duration::from_secs(30), || async {
        let object = objects.get("late").await.ok()?;
        (failures(&object) >= 4).then_some(object)
    })
    .await;
    assert_eq!(
        condition(&early, "Fallback").map(|(status, ..)| status),
        Some("False".to_owned()),
        "fallback before failureThreshold 8: {:?}",
        early.status
    );
    assert_eq!(
        replicas(&env.client, ns, "late").await,
        Some(1),
        "replicas changed before failureThreshold 8"
    );

    for (name, _, _, _, fallback) in cases {
        wait_for_replicas(&env.client, ns, name, fallback, Duration::from_secs(30)).await;
        let (_, reason, _) = wait_for_condition(&objects, name, "Fallback", "True").await;
        assert_eq!(reason, "FallbackApplied");
    }
    let late = objects.get("late").await.unwrap();
    assert!(
        failures(&late) >= 8,
        "late fell back after {} failures",
        failures(&late)
    );
    // The kept replicas hold over further failing polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, _, _, _, fallback) in cases {
        assert_eq!(
            replicas(&env.client, ns, name).await,
            Some(fallback),
            "{name}"
        );
    }
    clean_up(&env, namespace, &objects, &node).await;
}

/// `awsEndpoint` decides where a trigger reads its queue. The controller's own SQS endpoint is
/// dead here (`AWS_ENDPOINT_URL_SQS`, which the SDK prefers to `AWS_ENDPOINT_URL` for SQS):
/// an object without `awsEndpoint` cannot read its queue and stays at 0, while one naming the
/// stack's endpoint reads it and scales.
#[tokio::test]
async fn aws_endpoint_overrides_the_controllers_own_sqs_endpoint() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-endpoint").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-endpoint").await;
    let queue = env.queue("so-endpoint").await;
    env.send_messages(&queue, 4).await;
    let stack_endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    for (name, metadata) in [
        ("named", json!({"awsEndpoint": stack_endpoint})),
        ("unnamed", json!({})),
    ] {
        deployment(&env.client, ns, name, &node, 0).await;
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, &queue, sqs_trigger(&queue, metadata)),
            )
            .await
            .unwrap();
    }
    let _windlass = start_windlass_with_env(ns, &[("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:1")]);

    let (_, reason, message) = wait_for_condition(&objects, "unnamed", "Ready", "False").await;
    println!("{message}");
    assert_eq!(reason, "TriggerError");
    wait_for_replicas(&env.client, ns, "named", 2, Duration::from_secs(30)).await;
    wait_for_condition(&objects, "named", "Ready", "True").await;
    assert_eq!(replicas(&env.client, ns, "unnamed").await, Some(0));
    clean_up(&env, namespace, &objects, &node).await;
}

/// The name a queue URL ends in.
fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A Warning Event on `object` with exactly `message`, once it exists.
pub(crate) async fn warning_event(client: &Client, namespace: &str, object: &str, message: &str) {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    wait_until(
        &format!("a Warning Event on {object}: {message}"),
        Duration::from_secs(15),
        || async {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
                .await
                .ok()?;
            list.items.into_iter().find(|e| {
                e.type_.as_deref() == Some("Warning") && e.message.as_deref() == Some(message)
            })
        },
    )
    .await;
}

/// `queueURLFromEnv` reads the target container's environment as its pods see it, and
/// `queueURL` may be a bare queue name: each of a Secret key, a prefixed `envFrom` ConfigMap
/// and a name drives its own Deployment. A missing Secret and an unknown queue name are each
/// Ready=False with an Event naming them, while the other objects scale.
#[tokio::test]
async fn queue_urls_from_secret_keys_env_from_config_maps_and_bare_names_drive_scaling() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-env").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-env").await;
    let (secret_queue, map_queue, named_queue) = (
        env.queue("so-env-secret").await,
        env.queue("so-env-map").await,
        env.queue("so-env-name").await,
    );
    let from_secret = json!({"env": [{"name": "QUEUE_URL",
        "valueFrom": {"secretKeyRef": {"name": "queue", "key": "url"}}}]});
    deployment_with(&env.client, ns, "from-secret", &node, 0, from_secret).await;
    // The ConfigMap's QUEUE_URL, under the prefix: SQS_QUEUE_URL.
    let from_map = json!({"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "SQS_"}]});
    deployment_with(&env.client, ns, "from-map", &node, 0, from_map).await;
    deployment(&env.client, ns, "by-name", &node, 0).await;
    deployment(&env.client, ns, "unknown-name", &node, 0).await;
    let settings: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "settings"},
        "data": {"QUEUE_URL": map_queue.clone()}}))
    .unwrap();
    Api::<ConfigMap>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &settings)
        .await
        .unwrap();

    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    let from_env = |var: &str| {
        json!({"spec": {"triggers": [{"type": "aws-sqs-queue", "name": "queue",
            "metadata": {"queueURLFromEnv": var, "queueLength": "2"}}]}})
    };
    let unknown = format!("{}-never-created", queue_name(&named_queue));
    for (name, queue, extra) in [
        ("from-secret", "", from_env("QUEUE_URL")),
        ("from-map", "", from_env("SQS_QUEUE_URL")),
        ("by-name", queue_name(&named_queue), json!({})),
        ("unknown-name", unknown.as_str(), json!({})),
    ] {
        // `extra`'s triggers replace the default ones, queueURL and all.
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, queue, extra),
            )
            .await
            .unwrap();
    }
    for queue in [&secret_queue, &map_queue, &named_queue] {
        env.send_messages(queue, 4).await;
    }
    let _windlass = start_windlass(ns);

    let (_, reason, message) = wait_for_condition(&objects, "from-secret", "Ready", "False").await;
    assert_eq!(reason, "QueueURLError");
    assert_eq!(
        message,
        format!(
            "triggers[0]: queueURLFromEnv \"QUEUE_URL\" of apps/v1.Deployment \"from-secret\": \
             Secret {ns}/queue not found"
        )
    );
    warning_event(&env.client, ns, "from-secret", &message).await;
    let (_, reason, message) = wait_for_condition(&objects, "unknown-name", "Ready", "False").await;
    assert_eq!(reason, "QueueURLError");
    assert!(
        message.starts_with(&format!(
            "triggers[0]: SQS queue named {unknown:?} not found: "
        )),
        "{message}"
    );
    warning_event(&env.client, ns, "unknown-name", &message).await;

    // The other two scale while those two wait.
    for name in ["from-map", "by-name"] {
        wait_for_replicas(&env.client, ns, name, 2, Duration::from_secs(30)).await;
    }
    assert_eq!(replicas(&env.client, ns, "from-secret").await, Some(0));

    // The Secret appears: the next poll finds it.
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "queue"},
        "stringData": {"url": secret_queue.clone()}}))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_for_replicas(&env.client, ns, "from-secret", 2, Duration::from_secs(30)).await;
    wait_for_condition(&objects, "from-secret", "Ready", "True").await;
    assert_eq!(replicas(&env.client, ns, "unknown-name").await, Some(0));
    clean_up(&env, namespace, &objects, &node).await;
}

/// A TriggerAuthentication's `status` once `done` accepts it.
async fn trigger_authentication_status(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    done: impl Fn(&TriggerAuthenticationStatus) -> bool,
) -> TriggerAuthenticationStatus {
    let api: Api<TriggerAuthentication> = Api::namespaced(client.clone(), namespace);
    wait_until(what, Duration::from_secs(30), || async {
        api.get(name).await.ok()?.status.filter(|s| done(s))
    })
    .await
}

/// The `env` keys of one TriggerAuthentication resolve for the ScaledObject and the ScaledJob
/// whose containers have them and not for the ScaledObject whose container lacks them: its
/// status lists all three, each with its own answer, and drops the ScaledJob once it is gone.
#[tokio::test]
async fn trigger_authentication_status_lists_its_users_and_whether_their_credentials_resolved() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "ta-users").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-ta-users").await;
    let keys_in_env = json!([{"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"}]);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    for (name, container_env) in [("worker", keys_in_env.clone()), ("bare", json!([]))] {
        deployment(&env.client, ns, name, &node, 0).await;
        let pod = json!({"containers": [{"name": "worker", "image": "registry.example.com/worker:1", "env": container_env}]});
        deployments
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"template": {"spec": pod}}})),
            )
            .await
            .unwrap();
    }
    trigger_authentication(
        &env.client,
        ns,
        "from-env",
        json!({"env": [
            {"parameter": "awsAccessKeyID", "name": "AWS_ACCESS_KEY_ID"},
            {"parameter": "awsSecretAccessKey", "name": "AWS_SECRET_ACCESS_KEY"}
        ]}),
    )
    .await;
    let queue = env.queue("ta-users").await;
    let trigger = json!([{"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue, "queueLength": "2"}, "authenticationRef": {"name": "from-env"}}]);
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    for name in ["worker", "bare"] {
        objects
            .create(
                &PostParams::default(),
                &scaled_object(name, name, &queue, json!({"spec": {"triggers": trigger}})),
            )
            .await
            .unwrap();
    }
    let job: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "nightly"},
        "spec": {"pollingInterval": 1, "triggers": trigger, "jobTargetRef": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "worker", "image": "registry.example.com/worker:1", "env": keys_in_env}]
        }}}}
    }))
    .unwrap();
    let jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), ns);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let _windlass = start_windlass(ns);

    let status = trigger_authentication_status(
        &env.client,
        ns,
        "from-env",
        "from-env to list two ScaledObjects and a ScaledJob",
        |s| s.users.len() == 3,
    )
    .await;
    assert_eq!(status.scaled_objects, "bare,worker");
    assert_eq!(status.scaled_jobs, "nightly");
    let user = |kind, name: &str, resolved, message: Option<&str>| AuthenticationUser {
        kind,
        namespace: ns.to_owned(),
        name: name.to_owned(),
        resolved,
        message: message.map(str::to_owned),
    };
    assert_eq!(
        status.users,
        [
            user(
                UserKind::ScaledObject,
                "bare",
                false,
                Some(
                    "environment variable \"AWS_ACCESS_KEY_ID\" of the workload (parameter awsAccessKeyID): not set in container \"worker\""
                )
            ),
            user(UserKind::ScaledObject, "worker", true, None),
            user(UserKind::ScaledJob, "nightly", true, None),
        ]
    );

    jobs.delete("nightly", &Default::default()).await.unwrap();
    let status = trigger_authentication_status(
        &env.client,
        ns,
        "from-env",
        "from-env to drop the deleted ScaledJob",
        |s| s.users.len() == 2,
    )
    .await;
    assert_eq!(status.scaled_jobs, "");
    assert_eq!(status.scaled_objects, "bare,worker");
    clean_up(&env, namespace, &objects, &node).await;
}

/// A Warning Event about `object` with `reason`, once one exists: its message.
async fn warning_event_message(
    client: &Client,
    namespace: &str,
    object: &str,
    reason: &str,
) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    wait_until(
        &format!("a Warning Event {reason} about {object}"),
        Duration::from_secs(15),
        || async {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
                .await
                .ok()?;
            list.items.into_iter().find_map(|e| {
                (e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
                    .then_some(e.message)
                    .flatten()
            })
        },
    )
    .await
}

/// The replicas stay at `expected` for `polls` seconds of one-second polls.
async fn replicas_hold(client: &Client, namespace: &str, name: &str, expected: i32, polls: u64) {
    for _ in 0..polls {
        assert_eq!(
            replicas(client, namespace, name).await,
            Some(expected),
            "{name} held at {expected}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Two ScaledObjects on one Deployment: the older scales it (to 2, for its 4 messages), the
/// younger (10 messages on its own queue would make 5) says who owns the target and leaves it
/// alone, then takes over once the older one is deleted.
#[tokio::test]
async fn the_older_of_two_scaled_objects_on_one_target_scales_it_until_it_is_deleted() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-owner").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-owner").await;
    deployment(&env.client, ns, "worker", &node, 0).await;
    let (older_queue, younger_queue) =
        (env.queue("so-owner-a").await, env.queue("so-owner-b").await);
    env.send_messages(&older_queue, 4).await;
    env.send_messages(&younger_queue, 10).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    objects
        .create(
            &PostParams::default(),
            &scaled_object("older", "worker", &older_queue, json!({})),
        )
        .await
        .unwrap();
    // creationTimestamp has whole seconds: the younger one is created in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    objects
        .create(
            &PostParams::default(),
            &scaled_object("younger", "worker", &younger_queue, json!({})),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(ns);

    wait_for_replicas(&env.client, ns, "worker", 2, Duration::from_secs(30)).await;
    let (_, reason, message) = wait_for_condition(&objects, "younger", "Ready", "False").await;
    assert_eq!(reason, "TargetOwnedByAnother");
    let expected = "Deployment \"worker\" is scaled by ScaledObject \"older\" (created first); \
        this ScaledObject leaves its replicas alone while that lasts";
    assert_eq!(message, expected);
    assert_eq!(
        warning_event_message(&env.client, ns, "younger", "TargetOwnedByAnother").await,
        expected
    );
    replicas_hold(&env.client, ns, "worker", 2, 5).await;
    wait_for_condition(&objects, "older", "Ready", "True").await;

    objects.delete("older", &Default::default()).await.unwrap();
    wait_for_replicas(&env.client, ns, "worker", 5, Duration::from_secs(30)).await;
    wait_for_condition(&objects, "younger", "Ready", "True").await;
    clean_up(&env, namespace, &objects, &node).await;
}

/// A ScaledObject on a Deployment that an HPA scales names the HPA and leaves the replicas to
/// it; once the HPA is deleted, the ScaledObject scales. With an HPA back on the target,
/// deleting the ScaledObject leaves the replicas to the HPA rather than restoring them.
#[tokio::test]
async fn a_scaled_object_leaves_a_target_to_the_hpa_that_scales_it() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "so-hpa").await;
    let ns = namespace.name.as_str();
    let node = test_node(&env.client, "kwok-hpa").await;
    deployment(&env.client, ns, "worker", &node, 2).await;
    // Within the HPA's bounds and with no metrics API to read, the HPA controller leaves the
    // replicas where they are: any change would be Windlass's.
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}]
        }
    }))
    .unwrap();
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), ns);
    autoscalers
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
    let queue = env.queue("so-hpa").await;
    env.send_messages(&queue, 10).await;
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    objects
        .create(
            &PostParams::default(),
            &scaled_object(
                "worker",
                "worker",
                &queue,
                json!({"spec": {"advanced": {"restoreToOriginalReplicaCount": true}}}),
            ),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(ns);

    let (_, reason, message) = wait_for_condition(&objects, "worker", "Ready", "False").await;
    assert_eq!(reason, "TargetOwnedByAnother");
    let expected = "Deployment \"worker\" is scaled by HorizontalPodAutoscaler \"web\"; \
        this ScaledObject leaves its replicas alone while that lasts";
    assert_eq!(message, expected);
    assert_eq!(
        warning_event_message(&env.client, ns, "worker", "TargetOwnedByAnother").await,
        expected
    );
    replicas_hold(&env.client, ns, "worker", 2, 5).await;

    autoscalers
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_for_replicas(&env.client, ns, "worker", 5, Duration::from_secs(30)).await;
    wait_for_condition(&objects, "worker", "Ready", "True").await;
    let original = objects.get("worker").await.unwrap().status.unwrap();
    assert_eq!(original.original_replica_count, Some(2));

    autoscalers
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
    wait_for_condition(&objects, "worker", "Ready", "False").await;
    objects.delete("worker", &Default::default()).await.unwrap();
    wait_until(
        "the ScaledObject to be gone",
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
    assert_eq!(
        replicas(&env.client, ns, "worker").await,
        Some(5),
        "not restored to 2 under the HPA"
    );
    clean_up(&env, namespace, &objects, &node).await;
}
