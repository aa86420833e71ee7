//! The README's main command, `hack/run-local.sh`, as a newcomer runs it: against the stack its
//! demo shows the seed scenario scale out and back in (nodes launched, Jobs done, nodes
//! removed) and ends with a summary whose numbers add up; then every example is Ready and the
//! jobs API answers the README's `curl`. Its controller watches every namespace, so
//! `hack/test.sh` runs this alone, after the other integration tests.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

/// `hack/run-local.sh` in its own process group, stopped (with its children) when dropped.
struct RunLocal(Mutex<Child>);

impl RunLocal {
    fn exited(&self) -> bool {
        let mut child = self.0.lock().unwrap();
        child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for RunLocal {
    fn drop(&mut self) {
        let child = self.0.get_mut().unwrap();
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The condition `type_` of an object's status, as (status, message).
fn condition(object: &DynamicObject, type_: &str) -> Option<(String, String)> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Every object the examples create that has a status, with the condition that says it is
/// working. (A ClusterTriggerAuthentication has no status: whether it works depends on which
/// install reads it.)
/// The example NodeClaim is not among them: the demo gives it back first, since it holds the
/// example NodePool's memory limit on its own.
const EXAMPLES: [(&str, Option<&str>, &str, &str); 6] = [
    ("EC2NodeClass", None, "default", "Ready"),
    ("NodePool", None, "default", "Ready"),
    ("ScaledObject", Some("default"), "order-processor", "Ready"),
    ("ScaledJob", Some("default"), "data-processor", "Ready"),
    (
        "TriggerAuthentication",
        Some("default"),
        "sqs-reader",
        "Ready",
    ),
    ("JobSchedule", Some("default"), "nightly-report", "Ready"),
];

fn api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("windlass.dev", "v1alpha1", kind));
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A plain HTTP/1.0 POST to loopback with a bearer token: the status code and body.
fn post(port: u16, path: &str, token: &str, body: &Value) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The number after `label` on the summary line that starts with it (`  nodes:  4 launched`).
fn summary_number(output: &str, label: &str, after: &str) -> f64 {
    let line = output
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the summary:\n{output}"));
    let rest = match line.find(after) {
        Some(at) => &line[at + after.len()..],
        None => panic!("{line:?} has no {after:?}"),
    };
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number after {after:?} in {line:?}"))
}

#[tokio::test]
async fn run_local_shows_the_seed_scaling_out_and_back_in_and_leaves_windlass_serving() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run this through hack/test.sh, which starts the local stack"
    );
    let client = Client::try_default()
        .await
        .expect("a client from KUBECONFIG");
    let (metrics, health, jobs) = (free_port(), free_port(), free_port());
    let token = "windlass-demo-test";
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/run-local.sh");
    let mut child = Command::new(script)
        .env("WINDLASS_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("WINDLASS_HEALTH_ADDR", format!("127.0.0.1:{health}"))
        .env("WINDLASS_JOBS_ADDR", format!("127.0.0.1:{jobs}"))
        .env("WINDLASS_JOBS_TOKEN", token)
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("starting hack/run-local.sh");
    let stdout = child.stdout.take().expect("its stdout");
    let run = RunLocal(Mutex::new(child));
    // What the demo prints, as it prints it (echoed, so a failure shows how far it got).
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let printed = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                let mut printed = printed.lock().unwrap();
                printed.push_str(&line);
                printed.push('\n');
            }
        })
    };

    // Building Windlass without the test features comes first, then the demo: allow for both.
    let output = wait_until("the demo's summary", Duration::from_secs(1500), || async {
        let printed = printed.lock().unwrap().clone();
        let complete = printed
            .split("== Summary")
            .nth(1)
            .is_some_and(|summary| summary.contains("cost:"));
        if !complete {
            assert!(!run.exited(), "hack/run-local.sh exited:\n{printed}");
        }
        complete.then_some(printed)
    })
    .await;
    assert!(
        output.contains("+ NodeClaim") && output.contains("joined and is Ready"),
        "the demo shows no node launching and joining:\n{output}"
    );
    assert!(
        output.contains("what `windlass top` shows now")
            && output.contains("default/data-processor")
            && output.contains("NODEPOOL"),
        "the demo shows no `windlass top` screen with the ScaledJob and the NodePool:\n{output}"
    );
    assert!(
        output.contains("removed, instance terminated"),
        "the demo shows no node given back:\n{output}"
    );
    assert!(
        !output.contains("stopped waiting"),
        "the demo timed out before everything scaled back in:\n{output}"
    );
    assert_eq!(summary_number(&output, "messages sent:", ":"), 11.0);
    // Every pod failure is a retry or a failed Job's last one: the two failing messages fail
    // four attempts in all, wherever they land.
    let failed = summary_number(&output, "Jobs:", "succeeded,");
    let retries = summary_number(&output, "Jobs:", "failed,");
    assert_eq!(
        (summary_number(&output, "Jobs:", ":"), retries + failed),
        (6.0, 4.0),
        "6 Jobs succeeded, and the 2 messages that fail twice failed 4 attempts: {failed} failed Jobs, {retries} retries"
    );
    let launched = summary_number(&output, "nodes:", ":");
    let removed = summary_number(&output, "nodes:", "launched,");
    assert!(
        launched >= 1.0 && removed == launched,
        "every node launched was removed: {launched} launched, {removed} removed"
    );
    assert!(summary_number(&output, "cost:", "$") > 0.0);

    // Then Windlass keeps running for the README's calls.
    for (kind, namespace, name, ready) in EXAMPLES {
        let objects = api(&client, kind, namespace);
        let what = format!("{kind} {name} to be {ready}");
        wait_until(&what, Duration::from_secs(60), || async {
            assert!(!run.exited(), "hack/run-local.sh exited");
            let object = objects.get_opt(name).await.ok()??;
            let (status, _) = condition(&object, ready)?;
            (status == "True").then_some(())
        })
        .await;
        println!("{kind} {name}: {ready}");
    }
    let (status, body) = post(
        jobs,
        "/jobs",
        token,
        &json!({"scaledJob": "data-processor", "namespace": "default", "payload": {"task": "demo"}}),
    )
    .expect("the jobs API answers");
    assert_eq!(status, 202, "{body}");
    drop(run);
    let _ = reader.join();
}
