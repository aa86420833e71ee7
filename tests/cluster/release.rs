//! The chart, installed once per test run. Every `windlass run` the tests start runs with the
//! release Deployment's arguments and environment and as its ServiceAccount, so a rule missing
//! from the chart's RBAC fails the test that needs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The suite's release and its namespace; the chart names everything `windlass` then.
pub const RELEASE: &str = "windlass";
pub const RELEASE_NAMESPACE: &str = "windlass";

/// How the chart runs the controller.
pub struct Release {
    /// The container's arguments (`run`).
    pub args: Vec<String>,
    /// The container's environment, with field and Secret references resolved.
    pub env: Vec<(String, String)>,
    /// A kubeconfig that authenticates as the release's ServiceAccount.
    pub kubeconfig: PathBuf,
}

/// The suite's release, installed (or upgraded) on first use.
pub fn suite_release() -> &'static Release {
    static RELEASE_ONCE: OnceLock<Release> = OnceLock::new();
    RELEASE_ONCE.get_or_init(install)
}

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/windlass")
}

/// Runs a command to completion: its stdout, or its stderr when it failed.
pub fn try_run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (from PATH) did not start: {e}"));
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Runs a command to completion; its stdout, or a panic naming the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    try_run(program, args)
        .unwrap_or_else(|stderr| panic!("{program} {} failed: {stderr}", args.join(" ")))
}

pub fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&run("kubectl", &all)).unwrap()
}

/// How a node reaches the cluster in KUBECONFIG: what the release's settings and the node
/// registrar are given, and what a bootstrap must name to join.
pub struct ClusterAccess {
    pub endpoint: String,
    /// Base64 of the CA bundle (PEM).
    pub ca_bundle: String,
    pub service_cidr: String,
}

pub fn cluster_access() -> &'static ClusterAccess {
    static ACCESS: OnceLock<ClusterAccess> = OnceLock::new();
    ACCESS.get_or_init(|| {
        let admin = kubectl_json(&["config", "view", "--raw", "--minify"]);
        let cluster = &admin["clusters"][0]["cluster"];
        let ca_bundle = match cluster["certificate-authority-data"].as_str() {
            Some(data) => data.to_owned(),
            None => {
                let file = cluster["certificate-authority"]
                    .as_str()
                    .expect("the kubeconfig names the cluster's CA");
                aws_smithy_types::base64::encode(std::fs::read(file).unwrap())
            }
        };
        ClusterAccess {
            endpoint: cluster["server"].as_str().unwrap().to_owned(),
            ca_bundle,
            // The local stack's, and kind's default.
            service_cidr: std::env::var("WINDLASS_SERVICE_CIDR")
                .unwrap_or_else(|_| "10.96.0.0/16".into()),
        }
    })
}

fn install() -> Release {
    let chart = chart_dir();
    let access = cluster_access();
    let endpoint = format!("settings.clusterEndpoint={}", access.endpoint);
    let ca_bundle = format!("settings.clusterCABundle={}", access.ca_bundle);
    let service_cidr = format!("settings.clusterServiceCIDR={}", access.service_cidr);
    // No replicas: the tests start the controller themselves, one install per test; a pod
    // here would only be a pending pod for the node side of every test to see.
    run(
        "helm",
        &[
            "upgrade",
            "--install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            "settings.clusterName=suite",
            "--set",
            "replicas=0",
            "--set",
            "settings.logFormat=text",
            "--set",
            &endpoint,
            "--set",
            &ca_bundle,
            "--set",
            &service_cidr,
            "--wait",
        ],
    );
    let deployment = kubectl_json(&["get", "deployment", RELEASE, "-n", RELEASE_NAMESPACE]);
    let spec = &deployment["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let args = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let env = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| (var["name"].as_str().unwrap().to_owned(), resolve(var)))
        .collect();
    let account = spec["serviceAccountName"].as_str().unwrap();
    Release {
        args,
        env,
        kubeconfig: service_account_kubeconfig(account),
    }
}

/// An environment variable's value as the kubelet would set it.
fn resolve(var: &Value) -> String {
    if let Some(value) = var["value"].as_str() {
        return value.to_owned();
    }
    let from = &var["valueFrom"];
    if from["fieldRef"]["fieldPath"] == "metadata.namespace" {
        return RELEASE_NAMESPACE.to_owned();
    }
    if let Some(secret) = from["secretKeyRef"]["name"].as_str() {
        let key = from["secretKeyRef"]["key"].as_str().unwrap();
        return run(
            "kubectl",
            &[
                "get",
                "secret",
                secret,
                "-n",
                RELEASE_NAMESPACE,
                "-o",
                &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
            ],
        );
    }
    panic!("the harness cannot resolve the Deployment's env var {var}")
}

/// A kubeconfig for the cluster in KUBECONFIG that authenticates with a token of `account`.
fn service_account_kubeconfig(account: &str) -> PathBuf {
    let admin = kubectl_json(&["config", "view", "--raw", "--minify"]);
    let cluster = &admin["clusters"][0]["cluster"];
    let token = run(
        "kubectl",
        &[
            "create",
            "token",
            account,
            "-n",
            RELEASE_NAMESPACE,
            "--duration",
            "12h",
        ],
    );
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "suite", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "suite", "context": {"cluster": "suite", "user": account}}],
        "current-context": "suite",
    });
    let path =
        std::env::temp_dir().join(format!("windlass-suite-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}
