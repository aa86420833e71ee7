//! The README's main command, `hack/run-local.sh`, as a newcomer runs it: against the stack it
//! leaves every example Ready, and a job submitted through the jobs API runs on a node Windlass
//! launched. Its controller watches every namespace, so `hack/test.sh` runs this alone, after
//! the other integration tests.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, ResourceExt};
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
const EXAMPLES: [(&str, Option<&str>, &str, &str); 7] = [
    ("EC2NodeClass", None, "default", "Ready"),
    ("NodePool", None, "default", "Ready"),
    ("NodeClaim", None, "default-abc12", "Initialized"),
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

#[tokio::test]
async fn run_local_leaves_every_example_ready_and_a_submitted_job_runs_on_a_launched_node() {
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
    let run = RunLocal(Mutex::new(
        Command::new(script)
            .env("WINDLASS_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
            .env("WINDLASS_HEALTH_ADDR", format!("127.0.0.1:{health}"))
            .env("WINDLASS_JOBS_ADDR", format!("127.0.0.1:{jobs}"))
            .env("WINDLASS_JOBS_TOKEN", token)
            .process_group(0)
            .spawn()
            .expect("starting hack/run-local.sh"),
    ));

    // Building Windlass without the test features comes first: allow for it.
    for (kind, namespace, name, ready) in EXAMPLES {
        let objects = api(&client, kind, namespace);
        let what = format!("{kind} {name} to be {ready}");
        wait_until(&what, Duration::from_secs(600), || async {
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

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let (pod, node) = wait_until(
        "a data-processor pod running on a launched node",
        Duration::from_secs(120),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            for pod in list.items {
                let phase = pod.status.as_ref()?.phase.clone().unwrap_or_default();
                let started = phase == "Running" || phase == "Succeeded";
                let from_job = pod.labels().contains_key("job-name")
                    && pod.name_any().starts_with("data-processor");
                let Some(node_name) = pod.spec.as_ref()?.node_name.clone() else {
                    continue;
                };
                if !(started && from_job) {
                    continue;
                }
                let node = nodes.get(&node_name).await.ok()?;
                if node
                    .labels()
                    .get("windlass.dev/nodepool")
                    .map(String::as_str)
                    == Some("default")
                {
                    return Some((pod.name_any(), node_name));
                }
            }
            None
        },
    )
    .await;
    println!("job pod {pod} ran on {node}");

    // The message is never consumed by a fake pod: stop making Jobs for it.
    let _ = api(&client, "ScaledJob", Some("default"))
        .delete("data-processor", &DeleteParams::default())
        .await;
}
