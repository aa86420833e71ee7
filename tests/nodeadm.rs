//! The AL2023 user data Windlass writes, read by the real nodeadm, the node agent of the EKS
//! AL2023 images. `hack/nodeadm-check.sh` builds nodeadm and names it in `WINDLASS_NODEADM`.
//!
//! nodeadm reads its user data from the instance metadata service, and that is where it parses
//! the MIME document (its file source takes a bare NodeConfig only), so each document is served
//! by an instance metadata stand-in on loopback. Each document goes through two of nodeadm's
//! commands:
//! - `config check`: the MIME document is split, every `application/node.eks.aws` part decoded
//!   as a NodeConfig and the parts merged in order;
//! - `init --skip config --skip run`: the same, then the cluster's name, endpoint, CA and CIDR
//!   are required. It writes nothing, but needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::routing::{get, put};
use k8s_openapi::api::core::v1::Taint;
use serde_json::{Value, json};
use windlass::apis::ec2_node_class::KubeletConfiguration;
use windlass::aws::bootstrap::{self, ClusterInfo, Family, Input, NodeSettings};

/// What nodeadm made of a document: the merged NodeConfig it loaded, or why it refused it.
#[derive(Debug)]
enum Verdict {
    Accepted { loaded: Value },
    Refused { error: String },
}

impl Verdict {
    fn loaded(self) -> Value {
        match self {
            Verdict::Accepted { loaded } => loaded,
            Verdict::Refused { error } => panic!("nodeadm refused the document: {error}"),
        }
    }

    fn error(self) -> String {
        match self {
            Verdict::Refused { error } => error,
            Verdict::Accepted { loaded } => panic!("nodeadm accepted the document: {loaded}"),
        }
    }
}

fn nodeadm() -> PathBuf {
    let path = std::env::var_os("WINDLASS_NODEADM")
        .expect("WINDLASS_NODEADM names the nodeadm binary; hack/nodeadm-check.sh builds it");
    let path = PathBuf::from(path);
    assert!(path.is_file(), "{} is not a file", path.display());
    path
}

/// Serves `user_data` as an instance's metadata on a loopback port and returns its URL.
async fn metadata_service(user_data: String) -> String {
    let identity = json!({
        "instanceId": "i-0123456789abcdef0",
        "region": "us-east-1",
        "instanceType": "m5.large",
        "availabilityZone": "us-east-1a",
        "accountId": "123456789012",
        "architecture": "x86_64",
        "imageId": "ami-0123456789abcdef0",
        "privateIp": "10.0.0.10",
        "version": "2017-09-30"
    })
    .to_string();
    let app = Router::new()
        .route("/latest/api/token", put(|| async { "token" }))
        .route("/latest/user-data", get(|| async { user_data }))
        .route(
            "/latest/dynamic/instance-identity/document",
            get(|| async { identity }),
        )
        .route(
            "/latest/meta-data/mac",
            get(|| async { "02:00:00:00:00:01" }),
        )
        .route(
            "/latest/meta-data/services/domain",
            get(|| async { "amazonaws.com" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// nodeadm's log lines (JSON, one a line, on stderr).
fn log_lines(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn message<'a>(lines: &'a [Value], msg: &str) -> Option<&'a Value> {
    lines.iter().find(|line| line["msg"] == msg)
}

fn fatal_error(lines: &[Value], stderr: &[u8]) -> String {
    lines
        .iter()
        .find(|line| line["level"] == "fatal")
        .map(|line| line["error"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(stderr).into_owned())
}

async fn run(endpoint: &str, args: &[&str]) -> (bool, Vec<u8>) {
    let mut command = Command::new(nodeadm());
    command
        .args(args)
        .args(["--config-source", "imds://user-data"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("nodeadm runs");
    (output.status.success(), output.stderr)
}

/// Both commands on `user_data`; `Accepted` only when both pass.
async fn check(user_data: &str) -> Verdict {
    let endpoint = metadata_service(user_data.to_owned()).await;

    let (passed, stderr) = run(&endpoint, &["config", "check"]).await;
    if !passed {
        let error = fatal_error(&log_lines(&stderr), &stderr);
        return Verdict::Refused { error };
    }

    let (passed, stderr) = run(&endpoint, &["init", "--skip", "config", "--skip", "run"]).await;
    let lines = log_lines(&stderr);
    // With both phases skipped, init still connects to systemd right after validating the
    // configuration. Where systemd is not running (CI, a container) that connection fails, so
    // reaching it is the sign that validation passed.
    if !passed && message(&lines, "Creating daemon manager..").is_none() {
        return Verdict::Refused {
            error: fatal_error(&lines, &stderr),
        };
    }
    let loaded = message(&lines, "Loaded configuration")
        .map(|line| line["config"].clone())
        .expect("nodeadm logs the configuration it loaded");
    Verdict::Accepted { loaded }
}

fn cluster() -> ClusterInfo {
    ClusterInfo {
        name: "prod".into(),
        endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
        ca_bundle: "Q0EtREFUQQ==".into(),
        service_cidr: "172.20.0.0/16".into(),
        dns: Some("172.20.0.10".into()),
    }
}

fn node() -> NodeSettings {
    let taint = |key: &str, value: Option<&str>, effect: &str| Taint {
        key: key.into(),
        value: value.map(str::to_owned),
        effect: effect.into(),
        time_added: None,
    };
    NodeSettings::new(
        &BTreeMap::from([
            ("team".to_owned(), "data".to_owned()),
            ("windlass.dev/nodepool".to_owned(), "default".to_owned()),
        ]),
        &[
            taint("dedicated", Some("jobs"), "NoSchedule"),
            taint("node.cilium.io/agent-not-ready", None, "NoExecute"),
        ],
    )
}

fn kubelet() -> KubeletConfiguration {
    serde_json::from_value(json!({
        "maxPods": 42,
        "podsPerCore": 4,
        "systemReserved": {"cpu": "100m", "memory": "200Mi", "ephemeral-storage": "1Gi"},
        "kubeReserved": {"memory": "300Mi"},
        "evictionHard": {"memory.available": "5%", "nodefs.available": "10%"},
        "evictionSoft": {"memory.available": "10%"},
        "evictionSoftGracePeriod": {"memory.available": "1m"},
        "evictionMaxPodGracePeriod": 60,
        "imageGCHighThresholdPercent": 80,
        "imageGCLowThresholdPercent": 60,
        "cpuCFSQuota": false,
        "clusterDNS": ["10.0.0.53"]
    }))
    .unwrap()
}

/// The AL2023 user data of a class, as a launch writes it.
fn user_data(
    cluster: &ClusterInfo,
    kubelet: Option<&KubeletConfiguration>,
    node: &NodeSettings,
    user: Option<&str>,
    instance_store_raid0: bool,
) -> String {
    let input = Input {
        cluster,
        kubelet,
        node,
        user,
        instance_store_raid0,
    };
    bootstrap::user_data(Family::AL2023, &input)
        .unwrap()
        .expect("AL2023 always has user data")
}

#[tokio::test]
async fn the_al2023_golden_files_are_accepted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/aws/bootstrap/testdata");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("al2023-") {
            let document = std::fs::read_to_string(&path).unwrap();
            let loaded = check(&document).await.loaded();
            assert_eq!(loaded["spec"]["cluster"]["name"], "prod", "{name}");
            checked.push(name);
        }
    }
    assert!(checked.len() >= 2, "only {checked:?} in {}", dir.display());
}

#[tokio::test]
async fn a_bare_class_joins_with_its_cluster_labels_and_taints() {
    let loaded = check(&user_data(&cluster(), None, &node(), None, false))
        .await
        .loaded();
    let spec = &loaded["spec"];
    assert_eq!(
        spec["cluster"]["apiServerEndpoint"],
        "https://ABC.gr7.us-east-1.eks.amazonaws.com"
    );
    assert_eq!(spec["cluster"]["cidr"], "172.20.0.0/16");
    assert_eq!(
        spec["kubelet"]["config"]["clusterDNS"],
        json!(["172.20.0.10"])
    );
    assert_eq!(
        spec["kubelet"]["flags"],
        json!(["--node-labels=team=data,windlass.dev/nodepool=default"])
    );
    assert_eq!(
        spec["kubelet"]["config"]["registerWithTaints"],
        json!([
            {"key": "windlass.dev/unregistered", "effect": "NoExecute"},
            {"key": "dedicated", "value": "jobs", "effect": "NoSchedule"},
            {"key": "node.cilium.io/agent-not-ready", "effect": "NoExecute"}
        ]),
        "the unregistered taint first, which registration takes off"
    );
}

#[tokio::test]
async fn a_class_without_labels_taints_or_dns_is_accepted() {
    let mut cluster = cluster();
    cluster.dns = None;
    let loaded = check(&user_data(
        &cluster,
        None,
        &NodeSettings::default(),
        None,
        false,
    ))
    .await
    .loaded();
    assert_eq!(loaded["spec"]["cluster"]["name"], "prod");
}

#[tokio::test]
async fn every_kubelet_setting_and_a_script_are_accepted() {
    let loaded = check(&user_data(
        &cluster(),
        Some(&kubelet()),
        &node(),
        Some("#!/bin/bash\necho hello\n"),
        false,
    ))
    .await
    .loaded();
    let config = &loaded["spec"]["kubelet"]["config"];
    assert_eq!(config["maxPods"], 42);
    assert_eq!(config["podsPerCore"], 4);
    assert_eq!(config["clusterDNS"], json!(["10.0.0.53"]));
    assert_eq!(config["systemReserved"]["ephemeral-storage"], "1Gi");
    assert_eq!(config["cpuCFSQuota"], false);
}

#[tokio::test]
async fn an_ipv6_cluster_and_raid0_are_accepted() {
    let cluster = ClusterInfo {
        service_cidr: "fd12:3456:789a::/108".into(),
        dns: None,
        ..cluster()
    };
    let loaded = check(&user_data(&cluster, None, &node(), None, true))
        .await
        .loaded();
    assert_eq!(loaded["spec"]["cluster"]["cidr"], "fd12:3456:789a::/108");
    assert_eq!(
        loaded["spec"]["instance"]["localStorage"]["strategy"],
        "RAID0"
    );
}

/// nodeadm merges the NodeConfig parts in order, so Windlass' (last) wins what both set and the
/// user's settings stay where Windlass sets nothing; the kubelet flags add up.
#[tokio::test]
async fn a_users_nodeconfig_merges_under_windlass_one() {
    let users = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: not-this-one\n  containerd:\n    config: |\n      [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n      discard_unpacked_layers = false\n  kubelet:\n    config:\n      maxPods: 7\n      shutdownGracePeriod: 30s\n    flags:\n    - --v=2\n";
    let loaded = check(&user_data(
        &cluster(),
        Some(&kubelet()),
        &node(),
        Some(users),
        false,
    ))
    .await
    .loaded();
    let spec = &loaded["spec"];
    assert_eq!(spec["cluster"]["name"], "prod");
    assert!(
        spec["containerd"]["config"]
            .as_str()
            .unwrap()
            .contains("discard_unpacked_layers")
    );
    assert_eq!(spec["kubelet"]["config"]["maxPods"], 42);
    assert_eq!(spec["kubelet"]["config"]["shutdownGracePeriod"], "30s");
    assert_eq!(
        spec["kubelet"]["flags"],
        json!([
            "--v=2",
            "--node-labels=team=data,windlass.dev/nodepool=default"
        ])
    );
}

#[tokio::test]
async fn a_users_mime_document_keeps_its_parts_ahead_of_windlass_nodeconfig() {
    let users = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"//\"\r\n\r\n--//\r\nContent-Type: text/cloud-config; charset=\"us-ascii\"\r\n\r\nruncmd: []\r\n--//\r\nContent-Type: application/node.eks.aws\r\n\r\napiVersion: node.eks.aws/v1alpha1\r\nkind: NodeConfig\r\nspec:\r\n  kubelet:\r\n    flags:\r\n    - --v=4\r\n--//\r\nContent-Type: text/x-shellscript\r\n\r\necho two\r\n--//--\r\n";
    let loaded = check(&user_data(&cluster(), None, &node(), Some(users), false))
        .await
        .loaded();
    assert_eq!(
        loaded["spec"]["kubelet"]["flags"],
        json!([
            "--v=4",
            "--node-labels=team=data,windlass.dev/nodepool=default"
        ])
    );
}

/// The checks can fail: what nodeadm refuses at boot, it refuses here.
#[tokio::test]
async fn broken_documents_are_refused() {
    let users_broken_part = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec: [\n--//--\n";
    let error = check(&user_data(
        &cluster(),
        None,
        &node(),
        Some(users_broken_part),
        false,
    ))
    .await
    .error();
    assert!(error.starts_with("yaml:"), "{error}");

    let pem_not_base64 = ClusterInfo {
        ca_bundle: "-----BEGIN CERTIFICATE-----".into(),
        ..cluster()
    };
    let error = check(&user_data(&pem_not_base64, None, &node(), None, false))
        .await
        .error();
    assert!(error.contains("illegal base64 data"), "{error}");

    let no_endpoint: String = user_data(&cluster(), None, &node(), None, false)
        .lines()
        .filter(|line| !line.contains("apiServerEndpoint"))
        .map(|line| format!("{line}\n"))
        .collect();
    let error = check(&no_endpoint).await.error();
    assert_eq!(
        error,
        "Apiserver endpoint is missing in cluster configuration"
    );
}
