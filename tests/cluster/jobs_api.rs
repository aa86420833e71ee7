//! The jobs API against the real cluster and SQS: submissions become messages and Jobs, bad
//! or unauthenticated requests enqueue nothing, and stats report the ScaledJobs' counters.
//! ServiceAccount tokens submit only where RBAC allows; TLS serves a mounted certificate;
//! callers over their rate get 429.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use windlass::apis::job_schedule::JobSchedule;
use windlass::apis::scaled_job::ScaledJob;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::release::run;
use crate::support::{
    JOBS_TOKEN, TestEnv, TestNamespace, Windlass, delete_node, http_request, install_crds,
    start_windlass, start_windlass_with, test_node, unique, wait_until,
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

/// A namespace with a ScaledJob on a fresh queue (its pods fit no node), and Windlass serving
/// the jobs API for it.
async fn serve_scaled_job(
    env: &TestEnv,
    prefix: &str,
    name: &str,
) -> (TestNamespace, String, Windlass) {
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, prefix).await;
    let queue = env.queue(prefix).await;
    Api::<ScaledJob>::namespaced(env.client.clone(), &namespace.name)
        .create(
            &PostParams::default(),
            &scaled_job(name, &queue, "no-such-node", false),
        )
        .await
        .unwrap();
    let windlass = start_windlass(&namespace.name);
    wait_for_jobs_api(windlass.jobs_port).await;
    (namespace, queue, windlass)
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
    queue_attribute(env, queue, QueueAttributeName::ApproximateNumberOfMessages).await
}

/// Every message on the queue, whether or not a receiver holds it.
async fn all_messages(env: &TestEnv, queue: &str) -> u64 {
    visible_messages(env, queue).await
        + queue_attribute(
            env,
            queue,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .await
}

async fn queue_attribute(env: &TestEnv, queue: &str, name: QueueAttributeName) -> u64 {
    let attributes = env
        .sqs()
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap();
    attributes.attributes().unwrap()[&name].parse().unwrap()
}

#[tokio::test]
async fn submissions_become_messages_and_jobs_and_bad_requests_enqueue_nothing() {
    let env = TestEnv::connect().await;
    let (namespace, queue, windlass) = serve_scaled_job(&env, "jobs-api", "data-processor").await;
    let ns = namespace.name.as_str();
    let port = windlass.jobs_port;

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

    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, accepted) = post(
            port,
            Some(JOBS_TOKEN),
            &json!({"scaledJob": "data-processor", "namespace": ns, "payload": {"n": n}}),
        );
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        5,
        "ids are unique"
    );
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
    crate::invariants::assert_accepted_once(&env, &queue, &ids).await;
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

fn request(port: u16, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, body) = http_request(
        port,
        method,
        path,
        Some(JOBS_TOKEN),
        body.to_string().as_bytes(),
    )
    .expect("the jobs API answers");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The last enqueued tick and its message id, once the schedule has enqueued past `after`.
async fn wait_for_tick(
    schedules: &Api<JobSchedule>,
    name: &str,
    after: Option<jiff::Timestamp>,
) -> (jiff::Timestamp, String) {
    wait_until(
        "the schedule to enqueue a tick",
        Duration::from_secs(75),
        || async {
            let status = schedules.get(name).await.ok()?.status?;
            let tick = status.last_schedule_time?.0;
            (after.is_none_or(|after| tick > after)).then_some((tick, status.last_message_id?))
        },
    )
    .await
}

#[tokio::test]
async fn a_schedule_enqueues_once_per_tick_across_a_restart_and_bad_cron_creates_nothing() {
    let env = TestEnv::connect().await;
    let (namespace, queue, windlass) = serve_scaled_job(&env, "jobs-schedule", "reports").await;
    let ns = namespace.name.as_str();
    let port = windlass.jobs_port;
    let schedules: Api<JobSchedule> = Api::namespaced(env.client.clone(), ns);

    for (body, field) in [
        (
            json!({"cron": "61 * * * *", "scaledJob": "reports", "namespace": ns}),
            "cron",
        ),
        (
            json!({"cron": "every minute", "scaledJob": "reports", "namespace": ns}),
            "cron",
        ),
        // Valid cron, but February has no 30th.
        (
            json!({"cron": "0 0 30 2 *", "scaledJob": "reports", "namespace": ns}),
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "timeZone": "Moon/Base", "scaledJob": "reports", "namespace": ns}),
            "timeZone",
        ),
    ] {
        let (status, error) = request(port, "POST", "/jobs/schedule", &body);
        assert_eq!(
            (status, error["field"].as_str()),
            (400, Some(field)),
            "{error}"
        );
    }
    let (status, error) = request(
        port,
        "POST",
        "/jobs/schedule",
        &json!({"cron": "* * * * *", "scaledJob": "nope", "namespace": ns}),
    );
    assert_eq!(status, 404, "{error}");
    assert!(
        schedules
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "a rejected request created a JobSchedule"
    );

    let (status, created) = request(
        port,
        "POST",
        "/jobs/schedule",
        &json!({"name": "every-minute", "cron": "* * * * *", "timeZone": "Europe/Berlin",
                "scaledJob": "reports", "namespace": ns, "payload": {"report": "minutely"}}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "every-minute");
    let (status, listed) = request(
        port,
        "GET",
        &format!("/jobs/schedules?namespace={ns}"),
        &Value::Null,
    );
    assert_eq!(status, 200);
    assert_eq!(listed["schedules"][0]["cron"], "* * * * *");
    assert_eq!(listed["schedules"][0]["scaledJob"], "reports");

    // The same schedule applied past the API: Ready=False and a Warning Event saying why, while
    // the good one beside it ticks.
    let never: JobSchedule = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "JobSchedule", "metadata": {"name": "never"},
        "spec": {"schedule": "0 0 30 2 *", "scaledJob": "reports"}
    }))
    .unwrap();
    schedules
        .create(&PostParams::default(), &never)
        .await
        .unwrap();
    let never_fires = "cron: \"0 0 30 2 *\" never fires: no date in UTC matches it";
    wait_until(
        "the never-firing JobSchedule to say so in Ready",
        Duration::from_secs(30),
        || async {
            let status = schedules.get("never").await.ok()?.status?;
            status.conditions.into_iter().find(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                ) == ("Ready", "False", "InvalidSchedule", never_fires)
            })
        },
    )
    .await;
    crate::scaled_object::warning_event(&env.client, ns, "never", never_fires).await;

    let (first_tick, first_id) = wait_for_tick(&schedules, "every-minute", None).await;
    assert_eq!(first_tick.as_second() % 60, 0, "ticks fall on the minute");
    let received = env
        .sqs()
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<Value> = received
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["id"], first_id.as_str());
    assert_eq!(bodies[0]["schedule"], "every-minute");
    assert_eq!(bodies[0]["scheduledTime"], first_tick.to_string());
    assert_eq!(bodies[0]["payload"], json!({"report": "minutely"}));

    // Killed and started again within the same minute: the tick is not sent again.
    drop(windlass);
    let windlass = start_windlass(ns);
    wait_for_jobs_api(windlass.jobs_port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        all_messages(&env, &queue).await,
        1,
        "a restart re-sent the tick"
    );

    let (second_tick, second_id) =
        wait_for_tick(&schedules, "every-minute", Some(first_tick)).await;
    assert_eq!(second_tick.duration_since(first_tick).as_secs(), 60);
    assert_ne!(second_id, first_id);
    assert_eq!(all_messages(&env, &queue).await, 2, "one message per tick");

    let path = format!("/jobs/schedules/every-minute?namespace={ns}");
    assert_eq!(
        request(windlass.jobs_port, "DELETE", &path, &Value::Null).0,
        204
    );
    assert_eq!(
        request(windlass.jobs_port, "DELETE", &path, &Value::Null).0,
        404
    );
    namespace.delete().await;
}

/// A ServiceAccount `submitter` in `namespace` whose Role allows `create` on `scaledjobs/jobs`
/// there, and a token for it.
async fn submitter_token(env: &TestEnv, namespace: &str) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let create = PostParams::default();
    Api::<ServiceAccount>::namespaced(env.client.clone(), namespace)
        .create(
            &create,
            &serde_json::from_value(json!({"metadata": {"name": "submitter"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(env.client.clone(), namespace)
        .create(
            &create,
            &serde_json::from_value(json!({
                "metadata": {"name": "submit-jobs"},
                "rules": [{"apiGroups": ["windlass.dev"], "resources": ["scaledjobs/jobs"], "verbs": ["create"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(env.client.clone(), namespace)
        .create(
            &create,
            &serde_json::from_value(json!({
                "metadata": {"name": "submit-jobs"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "submit-jobs"},
                "subjects": [{"kind": "ServiceAccount", "name": "submitter", "namespace": namespace}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    run(
        "kubectl",
        &["create", "token", "submitter", "-n", namespace],
    )
    .trim()
    .to_owned()
}

#[tokio::test]
async fn a_service_account_submits_where_its_role_allows_and_gets_403_elsewhere() {
    let env = TestEnv::connect().await;
    let (allowed, queue, windlass) = serve_scaled_job(&env, "jobs-sa", "data-processor").await;
    let elsewhere = TestNamespace::create(&env.client, "jobs-sa-other").await;
    let token = submitter_token(&env, &allowed.name).await;
    let port = windlass.jobs_port;

    let submission =
        |namespace: &str| json!({"scaledJob": "data-processor", "namespace": namespace});
    let (status, accepted) = post(port, Some(&token), &submission(&allowed.name));
    assert_eq!(status, 202, "{accepted}");
    assert!(accepted["id"].is_string(), "{accepted}");

    let (status, error) = post(port, Some(&token), &submission(&elsewhere.name));
    assert_eq!(status, 403, "{error}");
    assert_eq!(
        error,
        json!({
            "error": format!(
                "system:serviceaccount:{}:submitter may not create scaledjobs/jobs.windlass.dev in namespace {:?}",
                allowed.name, elsewhere.name
            ),
            "field": "namespace"
        })
    );
    // Listing ScaledJobs is not in its Role: stats show it nothing.
    let (status, stats) =
        http_request(port, "GET", "/jobs/stats", Some(&token), b"").expect("the jobs API answers");
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["scaledJobs"], json!([]), "{stats}");

    // Tokens the API server does not accept.
    // One character changed inside the signature. Not its last: that one also holds padding
    // bits, which the API server's base64 decoding ignores, so changing only those (an `A`
    // made a `B`) would leave the signature valid.
    let signature = token.rfind('.').expect("a JWT") + 1;
    let at = signature + (token.len() - signature) / 2;
    let mut tampered = token.clone();
    let other = if &token[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, other);
    for bad in ["not-a-kubernetes-token", tampered.as_str()] {
        let (status, error) = post(port, Some(bad), &submission(&allowed.name));
        assert_eq!(status, 401, "{error}");
        assert_eq!(error, json!({"error": "missing or invalid bearer token"}));
    }

    wait_until(
        "the accepted job on the queue",
        Duration::from_secs(30),
        || async { (all_messages(&env, &queue).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        all_messages(&env, &queue).await,
        1,
        "only the allowed submission was sent"
    );
    drop(windlass);
    elsewhere.delete().await;
    allowed.delete().await;
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1: the CA's PEM, the
/// certificate's and its key's.
fn localhost_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// An HTTPS GET to loopback as `localhost`, trusting only `ca_pem`: status and body, or the
/// TLS error.
fn https_get(port: u16, ca_pem: &str, path: &str, token: &str) -> Result<(u16, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::io::{Read, Write};
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let socket = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, socket);
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    // The server may close without close_notify; what was read is the response.
    if let Err(error) = stream.read_to_string(&mut response)
        && response.is_empty()
    {
        return Err(error.to_string());
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn the_jobs_api_serves_tls_from_a_mounted_certificate_that_clients_verify() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "jobs-tls").await;
    let dir = std::env::temp_dir().join(unique("jobs-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = localhost_certificate();
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let windlass = start_windlass_with(
        &namespace.name,
        "windlass",
        &unique("cluster"),
        &[
            "--jobs-tls-cert",
            cert_path.to_str().unwrap(),
            "--jobs-tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let port = windlass.jobs_port;
    let (_, stats) = wait_until(
        "the jobs API to answer over TLS",
        Duration::from_secs(30),
        || {
            std::future::ready(
                https_get(port, &ca, "/jobs/stats", JOBS_TOKEN)
                    .ok()
                    .filter(|(status, _)| *status == 200),
            )
        },
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&stats).unwrap()["scaledJobs"],
        json!([])
    );
    let (status, _) = https_get(port, &ca, "/jobs/stats", "wrong").unwrap();
    assert_eq!(status, 401);

    // A client trusting another CA refuses the certificate; plain HTTP gets no answer.
    let (other_ca, _, _) = localhost_certificate();
    let refused = https_get(port, &other_ca, "/jobs/stats", JOBS_TOKEN).unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    assert_eq!(
        http_request(port, "GET", "/jobs/stats", Some(JOBS_TOKEN), b""),
        None
    );
    drop(windlass);
    std::fs::remove_dir_all(dir).unwrap();
    namespace.delete().await;
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "jobs-rate").await;
    let windlass = start_windlass_with(
        &namespace.name,
        "windlass",
        &unique("cluster"),
        &["--jobs-rate-limit", "0.1", "--jobs-rate-burst", "3"],
    );
    let port = windlass.jobs_port;
    wait_for_jobs_api(port).await;
    // The wait spent at least one of the three; the fourth request at the latest is refused.
    let refused = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            use std::io::{Read, Write};
            write!(
                stream,
                "GET /jobs/stats HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {JOBS_TOKEN}\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .find(|response| response.split_whitespace().nth(1) == Some("429"))
        .expect("a 429 within the burst");
    let (head, body) = refused.split_once("\r\n\r\n").unwrap();
    let retry_after: u64 = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"error": format!("rate limit exceeded; retry in {retry_after} s")})
    );
    drop(windlass);
    namespace.delete().await;
}
