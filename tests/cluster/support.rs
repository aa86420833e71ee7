//! Test harness: connections from the environment, a namespace and unique names per test,
//! waiting on observable conditions with a deadline, and helper processes that die with the test.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::release::{RELEASE_NAMESPACE, suite_release};

pub const FIELD_MANAGER: &str = "windlass-tests";

/// The cluster and AWS endpoint under test.
pub struct TestEnv {
    pub client: Client,
    pub aws: aws_config::SdkConfig,
}

impl TestEnv {
    pub async fn connect() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        for var in ["KUBECONFIG", "AWS_ENDPOINT_URL"] {
            assert!(
                std::env::var_os(var).is_some(),
                "{var} is not set: run the integration tests through hack/test.sh, which starts the local stack"
            );
        }
        let client = Client::try_default()
            .await
            .expect("a Kubernetes client from KUBECONFIG");
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self { client, aws }
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.aws)
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.aws)
    }

    /// A new, empty queue for one test; returns its URL.
    pub async fn queue(&self, prefix: &str) -> String {
        let output = self
            .sqs()
            .create_queue()
            .queue_name(unique(prefix))
            .send()
            .await
            .unwrap();
        output.queue_url().unwrap().to_owned()
    }

    /// Every message on the queue, visible or held by a receiver.
    pub async fn messages_on(&self, queue_url: &str) -> u64 {
        use aws_sdk_sqs::types::QueueAttributeName::{
            ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible,
        };
        let output = self
            .sqs()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(ApproximateNumberOfMessages)
            .attribute_names(ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attributes = output.attributes().unwrap();
        [
            ApproximateNumberOfMessages,
            ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| attributes[name].parse::<u64>().unwrap())
        .sum()
    }

    pub async fn send_messages(&self, queue_url: &str, count: usize) {
        for n in 0..count {
            self.sqs()
                .send_message()
                .queue_url(queue_url)
                .message_body(format!("message {n}"))
                .send()
                .await
                .unwrap();
        }
    }
}

/// Whether this test is skipped because the stack's AWS is LocalStack (`stack.sh env` exports
/// `WINDLASS_STACK_AWS=localstack`) and the test needs `hook`, which only the stack's moto has.
/// The skip is written to the process's stderr, past the harness's output capture, as
/// `moto-only: <test> skipped: needs <hook>`: hack/test-localstack.sh counts those lines apart
/// from the passes the harness reports for them.
pub fn skipped_without_moto(hook: &str) -> bool {
    if std::env::var("WINDLASS_STACK_AWS").as_deref() != Ok("localstack") {
        return false;
    }
    // The harness names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    // One write, so that no other output splits the line.
    let line = format!("moto-only: {test} skipped: needs {hook}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    true
}

/// Whether the test is skipped because the cluster is not the local stack (hack/stack/stack.sh),
/// which a test that starts `need` must have; says so on stderr.
pub fn skipped_without_own_stack(need: &str) -> bool {
    if std::env::var_os("WINDLASS_STACK_FIXTURE").is_some() {
        return false;
    }
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    let line = format!("stack-only: {test} skipped: needs {need}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    true
}

/// A name no other test (or earlier run) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `probe` every 250 ms until it yields a value; fails the test after `timeout`,
/// saying what it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace for one test, ready for pods (its default ServiceAccount exists).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique(prefix);
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"windlass.dev/test": "true"}}
        }))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_until(
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await;
        Self {
            name,
            client: client.clone(),
        }
    }

    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await
            .unwrap();
    }
}

/// Server-side applies every CRD in crds/ and waits until each is Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {}: {e}", path.display()));
        wait_until(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || async {
                let crd = crds.get(&name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }
}

/// A Node kwok manages (Ready, runs its pods), with the given labels and size.
async fn kwok_node(client: &Client, name: &str, labels: Value, cpu: &str, memory: &str) -> Node {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}
        }
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap()
}

/// A roomy kwok Node of its own for one test, labelled `windlass.dev/test-node: <its name>` so
/// the test's pods can select it; returns the name.
pub async fn test_node(client: &Client, prefix: &str) -> String {
    let name = unique(prefix);
    kwok_node(
        client,
        &name,
        json!({"windlass.dev/test-node": name}),
        "8",
        "32Gi",
    )
    .await;
    name
}

pub async fn delete_node(client: &Client, name: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// A child process that is killed (SIGKILL) when the test ends, pass or fail.
pub struct ChildProcess(Child);

impl From<Child> for ChildProcess {
    fn from(child: Child) -> Self {
        Self(child)
    }
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends SIGTERM and waits until the process has exited.
    pub async fn terminate(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        wait_until(
            "the process to exit after SIGTERM",
            Duration::from_secs(30),
            || {
                let exited = self.try_wait().is_some();
                async move { exited.then_some(()) }
            },
        )
        .await;
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example worker's image, whose pods the registrar runs as the local [`data_processor`]
/// binary when they carry `windlass.dev/test-outcome: run`.
pub const DATA_PROCESSOR_IMAGE: &str = "registry.example.com/data-processor";

/// The example worker (examples/data-processor) built beside this package's binaries: cargo
/// builds it for the workspace (`cargo test --workspace --no-run`, as hack/test.sh's worker
/// step does), not for this test target alone.
pub fn data_processor() -> std::path::PathBuf {
    let path =
        Path::new(env!("CARGO_BIN_EXE_windlass-node-registrar")).with_file_name("data-processor");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo test --workspace --locked --no-run)",
        path.display()
    );
    path
}

/// The node registrar for instances tagged with `cluster`, as its own process.
/// It joins only instances whose user data bootstraps into this cluster's API server and CA,
/// and runs the [`DATA_PROCESSOR_IMAGE`] pods held for a local run on its Nodes.
pub fn start_registrar(cluster: &str, boot_delay_seconds: u64) -> ChildProcess {
    let access = crate::release::cluster_access();
    let run_image = format!(
        "{DATA_PROCESSOR_IMAGE}={}",
        Path::new(env!("CARGO_BIN_EXE_windlass-node-registrar"))
            .with_file_name("data-processor")
            .display()
    );
    let child = Command::new(env!("CARGO_BIN_EXE_windlass-node-registrar"))
        .args(["--run-image", &run_image])
        .args([
            "--cluster-name",
            cluster,
            "--boot-delay-seconds",
            &boot_delay_seconds.to_string(),
            "--cluster-endpoint",
            &access.endpoint,
            "--cluster-ca-bundle",
            &access.ca_bundle,
        ])
        .spawn()
        .expect("starting windlass-node-registrar");
    ChildProcess(child)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET to loopback: the status code and body, or None if nothing answers yet.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// `windlass run` as its own process, handling only `namespace`, with its ports.
pub struct Windlass {
    pub process: ChildProcess,
    pub health_port: u16,
    pub metrics_port: u16,
    /// The jobs API, which requires `Authorization: Bearer` [`JOBS_TOKEN`] or a Kubernetes
    /// token; plain HTTP unless started with `--jobs-tls-cert`.
    pub jobs_port: u16,
    /// Its `--cluster-name`, unique to the test: it handles only NodeClaims labelled with it,
    /// and tags its instances with it.
    pub cluster: String,
}

pub const JOBS_TOKEN: &str = "windlass-test-token";

/// The release's settings pointing at the jobs API certificate mounted in its pod.
const JOBS_TLS_ENV: [&str; 2] = ["WINDLASS_JOBS_TLS_CERT", "WINDLASS_JOBS_TLS_KEY"];

impl Windlass {
    /// The value of one sample in /metrics, e.g. `windlass_sqs_get_queue_attributes_total{queue="…"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }

    /// Waits until the install has read the instance catalog, which its first plan needs, so
    /// that a test's own waits measure what it tests. The read starts once a NodePool exists.
    pub async fn catalog_read(&self) {
        wait_until("the instance catalog to be read", CATALOG_READ, || {
            std::future::ready(
                self.metric("windlass_instance_types")
                    .filter(|types| *types > 0.0)
                    .map(drop),
            )
        })
        .await;
    }
}

/// How long a fresh install may take to read the instance catalog: moto answers it in about
/// 7 s and serves one request at a time, so with the suite's installs starting together the
/// read took over 60 s under CI's load.
const CATALOG_READ: Duration = Duration::from_secs(180);

pub fn start_windlass(namespace: &str) -> Windlass {
    start_windlass_in(namespace, "windlass")
}

/// `windlass run` handling `namespace`, itself running in `home` (where ClusterTriggerAuthentication Secrets live).
pub fn start_windlass_in(namespace: &str, home: &str) -> Windlass {
    start_windlass_as(namespace, home, &unique("cluster"))
}

/// `windlass run` as the install `cluster`: a restart of an earlier one when it has its name.
pub fn start_windlass_as(namespace: &str, home: &str, cluster: &str) -> Windlass {
    start_windlass_with(namespace, home, cluster, &[])
}

/// `windlass run` as the install `cluster`, with `extra` arguments, run the way the chart runs
/// it: the release Deployment's arguments and environment, its ServiceAccount's identity. The
/// flags here override the environment: they place the process on the test's namespace and
/// loopback ports.
pub fn start_windlass_with(namespace: &str, home: &str, cluster: &str, extra: &[&str]) -> Windlass {
    start_windlass_without(namespace, home, cluster, extra, &[])
}

/// As [`start_windlass_with`], leaving the release's environment variables `unset` out.
pub fn start_windlass_without(
    namespace: &str,
    home: &str,
    cluster: &str,
    extra: &[&str],
    unset: &[&str],
) -> Windlass {
    start_windlass_configured(namespace, home, cluster, extra, unset, &[], &[])
}

/// `windlass run` handling `namespace` with environment variables of its own on top of the
/// release's and the test's (an SDK setting the controller reads, say).
pub fn start_windlass_with_env(namespace: &str, env: &[(&str, &str)]) -> Windlass {
    start_windlass_configured(
        namespace,
        "windlass",
        &unique("cluster"),
        &[],
        &[],
        env,
        &[],
    )
}

/// `windlass run` as the install `cluster` with environment variables of its own, and without
/// the variables `removed` from the test's own environment (the stack's static AWS keys, say).
pub fn start_windlass_with_own_env(
    namespace: &str,
    cluster: &str,
    env: &[(&str, &str)],
    removed: &[&str],
) -> Windlass {
    start_windlass_configured(namespace, "windlass", cluster, &[], &[], env, removed)
}

/// `windlass run` as the install `cluster` with `extra` arguments and environment variables of
/// its own (an AWS fault client's application id, say).
pub fn start_windlass_with_args_and_env(
    namespace: &str,
    cluster: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Windlass {
    start_windlass_configured(namespace, "windlass", cluster, extra, &[], env, &[])
}

fn start_windlass_configured(
    namespace: &str,
    home: &str,
    cluster: &str,
    extra: &[&str],
    unset: &[&str],
    env: &[(&str, &str)],
    removed: &[&str],
) -> Windlass {
    let release = suite_release();
    let (health_port, metrics_port, jobs_port) = (free_port(), free_port(), free_port());
    let cluster = cluster.to_owned();
    let mut command = Command::new(env!("CARGO_BIN_EXE_windlass"));
    for name in removed {
        command.env_remove(name);
    }
    let process = command
        .envs(
            release
                .env
                .iter()
                // The chart's certificate paths exist only in its pod.
                .filter(|(name, _)| !JOBS_TLS_ENV.contains(&name.as_str()))
                .filter(|(name, _)| !unset.contains(&name.as_str()))
                .map(|(name, value)| (name, value)),
        )
        .env("KUBECONFIG", &release.kubeconfig)
        .envs(env.iter().copied())
        .args(&release.args)
        .args(["--watch-namespace", namespace, "--namespace", home])
        .args(extra)
        .args(["--cluster-name", &cluster])
        // One leader Lease per install, in the release's namespace where the chart's Role
        // grants Leases: processes started with the same cluster name are replicas of one
        // install, and a restart takes the Lease over from its predecessor.
        .args(["--leader-elect-lease-name", &format!("{cluster}-leader")])
        .args(["--leader-elect-lease-namespace", RELEASE_NAMESPACE])
        .args(["--health-addr", &format!("127.0.0.1:{health_port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--jobs-addr",
            &format!("127.0.0.1:{jobs_port}"),
            "--jobs-token",
            JOBS_TOKEN,
        ])
        // Plain HTTP on loopback unless the test brings a certificate.
        .args(
            (!extra.contains(&"--jobs-tls-cert"))
                .then_some("--jobs-plain-http")
                .as_slice(),
        )
        .spawn()
        .expect("starting windlass run")
        .into();
    Windlass {
        process,
        health_port,
        metrics_port,
        jobs_port,
        cluster,
    }
}

/// A plain HTTP/1.0 request to loopback with optional bearer token and body: status and body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    // The server may answer (413) and close before reading the whole body.
    let _ = stream.write_all(body);
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
