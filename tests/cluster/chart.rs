//! The Helm chart: `helm lint` and `helm template` accept the defaults and refuse wrong values
//! with a message, and a real `helm install` comes up, `helm upgrade` keeps the jobs token, and
//! `helm uninstall` leaves nothing cluster-scoped but the CRDs.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::release::{chart_dir, kubectl_json, run, try_run};
use crate::support::{
    FIELD_MANAGER, TestEnv, TestNamespace, delete_node, install_crds, test_node, unique, wait_until,
};

/// The stack's Kubernetes: `helm template` and `helm lint` otherwise check `kubeVersion`
/// against helm's built-in default, which is older than the chart supports.
const KUBE_VERSION: &str = "1.36.3";

fn chart() -> String {
    chart_dir().to_str().unwrap().to_owned()
}

/// `helm template` with `--set` values: the rendered objects, or helm's error.
fn template(values: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "windlass",
        &chart,
        "--namespace",
        "windlass",
        "--kube-version",
        KUBE_VERSION,
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    let rendered = try_run("helm", &args)?;
    Ok(serde_yaml::Deserializer::from_str(&rendered)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect())
}

fn refusal(values: &[&str]) -> String {
    match template(values) {
        Ok(_) => panic!("helm template accepted {values:?}"),
        Err(message) => message,
    }
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn lint_and_template_accept_the_defaults_and_refuse_wrong_values_with_a_message() {
    run(
        "helm",
        &[
            "lint",
            "--strict",
            &chart(),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "settings.clusterName=prod",
        ],
    );

    let objects = template(&["settings.clusterName=prod"]).unwrap();
    let kinds: BTreeSet<_> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount",
        ])
    );
    let pod = &kind(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(kind(&objects, "Deployment")["spec"]["replicas"], 2);
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "windlass:0.1.0");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0],
        json!({"key": "windlass.dev/nodepool", "operator": "DoesNotExist"}),
        "by default Windlass never runs on a node it manages"
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "windlass"
    );
    let env: BTreeSet<_> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for name in [
        "WINDLASS_NAMESPACE",
        "WINDLASS_CLUSTER_NAME",
        "WINDLASS_LEADER_ELECT_LEASE_NAME",
        "WINDLASS_JOBS_TOKEN",
        "WINDLASS_ISOLATED_VPC",
        "WINDLASS_KEDA_METRICS",
        "WINDLASS_SPOT_TO_SPOT_CONSOLIDATION",
        "RUST_LOG",
    ] {
        assert!(env.contains(name), "{name} not set: {env:?}");
    }

    // The jobs API serves HTTPS with a certificate the chart generates, and takes
    // ServiceAccount tokens; plain HTTP only when asked for.
    for name in [
        "WINDLASS_JOBS_TLS_CERT",
        "WINDLASS_JOBS_TLS_KEY",
        "WINDLASS_JOBS_KUBERNETES_AUTH",
        "WINDLASS_JOBS_RATE_LIMIT",
        "WINDLASS_JOBS_RATE_BURST",
    ] {
        assert!(env.contains(name), "{name} not set: {env:?}");
    }
    assert!(!env.contains("WINDLASS_JOBS_PLAIN_HTTP"));
    let tls_secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret" && o["type"] == "kubernetes.io/tls")
        .expect("a generated jobs API certificate");
    assert_eq!(
        pod["volumes"][0]["secret"]["secretName"],
        tls_secret["metadata"]["name"]
    );
    let plain = template(&["settings.clusterName=prod", "jobsApi.plainHttp=true"]).unwrap();
    let plain_env = &kind(&plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        plain_env
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "WINDLASS_JOBS_PLAIN_HTTP" && v["value"] == "true")
    );
    assert!(!plain.iter().any(|o| o["type"] == "kubernetes.io/tls"));

    assert!(
        !env.contains("WINDLASS_CLUSTER_ENDPOINT"),
        "without the cluster settings, nodes join what EKS DescribeCluster says"
    );
    let joined = template(&[
        "settings.clusterName=prod",
        "settings.clusterEndpoint=https://prod.example",
        "settings.clusterCABundle=Q0E=",
        "settings.clusterServiceCIDR=10.100.0.0/16",
        "settings.isolatedVpc=true",
        "settings.kedaMetrics=false",
        "settings.featureGates.spotToSpotConsolidation=true",
    ])
    .unwrap();
    let joined_env =
        &kind(&joined, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    for (name, value) in [
        ("WINDLASS_CLUSTER_ENDPOINT", "https://prod.example"),
        ("WINDLASS_CLUSTER_CA_BUNDLE", "Q0E="),
        ("WINDLASS_CLUSTER_SERVICE_CIDR", "10.100.0.0/16"),
        ("WINDLASS_ISOLATED_VPC", "true"),
        ("WINDLASS_KEDA_METRICS", "false"),
        ("WINDLASS_SPOT_TO_SPOT_CONSOLIDATION", "true"),
    ] {
        assert!(
            joined_env
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == name && v["value"] == value),
            "{name}={value} not set: {joined_env}"
        );
    }

    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = template(&[
        "settings.clusterName=prod",
        &format!("image.digest={digest}"),
        "serviceMonitor.enabled=true",
        "jobsApi.enabled=false",
    ])
    .unwrap();
    assert_eq!(
        kind(&pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("windlass@{digest}")
    );
    assert_eq!(
        kind(&pinned, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "metrics"
    );
    assert!(
        pinned.iter().all(|o| o["kind"] != "Secret"),
        "no jobs token without the jobs API"
    );

    let cases: [(&[&str], &[&str]); 6] = [
        (&[], &["settings.clusterName is required"]),
        (
            &["settings.clusterName=prod", "settings.logFormat=xml"],
            &["logFormat", "text", "json"],
        ),
        (
            &[
                "settings.clusterName=prod",
                "settings.batchIdleDuration=soon",
            ],
            &["batchIdleDuration"],
        ),
        (
            &[
                "settings.clusterName=prod",
                "settings.clusterEndpoint=http://x",
            ],
            &["clusterEndpoint", "https://"],
        ),
        (
            &["settings.clusterName=prod", "leaderElection.enabled=false"],
            &["leaderElection.enabled=false needs replicas: 1"],
        ),
        (
            &["settings.clusterName=prod", "image.digest=latest"],
            &["digest"],
        ),
    ];
    for (values, expected) in cases {
        let message = refusal(values);
        for text in expected {
            assert!(
                message.contains(text),
                "helm's refusal of {values:?} lacks {text:?}: {message}"
            );
        }
    }
}

/// A kwok node only this test's release may use: tainted, labelled, in `zone`.
async fn tainted_node(env: &TestEnv, key: &str, zone: &str) -> String {
    let name = test_node(&env.client, "chart").await;
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"labels": {key: "true", "topology.kubernetes.io/zone": zone}},
        "spec": {"taints": [{"key": key, "value": "true", "effect": "NoSchedule"}]}
    });
    Api::<Node>::all(env.client.clone())
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    name
}

fn token(namespace: &str, secret: &str) -> String {
    run(
        "kubectl",
        &[
            "get",
            "secret",
            secret,
            "-n",
            namespace,
            "-o",
            "go-template={{.data.token}}",
        ],
    )
}

fn exists(args: &[&str]) -> bool {
    try_run("kubectl", &[&["get"], args].concat()).is_ok()
}

#[tokio::test]
async fn install_comes_up_upgrade_keeps_the_token_and_uninstall_leaves_only_the_crds() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "chart").await;
    let ns = namespace.name.as_str();
    let release = unique("chart");
    let fullname = format!("{release}-windlass");
    let key = format!("windlass.dev/{release}");
    let nodes = [
        tainted_node(&env, &key, "us-east-1a").await,
        tainted_node(&env, &key, "us-east-1b").await,
    ];
    let chart = chart();
    let placement = [
        "--set-string".to_owned(),
        format!("nodeSelector.windlass\\.dev/{release}=true"),
        "--set".to_owned(),
        format!("tolerations[0].key={key}"),
        "--set".to_owned(),
        "tolerations[0].operator=Exists".to_owned(),
    ];
    let mut install = vec![
        "install",
        &release,
        &chart,
        "--namespace",
        ns,
        "--set",
        "settings.clusterName=chart-test",
        "--wait",
        "--timeout",
        "120s",
    ];
    install.extend(placement.iter().map(String::as_str));
    let notes = run("helm", &install);
    assert!(
        notes.contains("Check that one replica leads"),
        "NOTES.txt not shown: {notes}"
    );

    let deployment = kubectl_json(&["get", "deployment", &fullname, "-n", ns]);
    assert_eq!(deployment["status"]["readyReplicas"], 2, "{deployment}");
    for object in [
        ["serviceaccount", &fullname],
        ["role", &fullname],
        ["rolebinding", &fullname],
        ["service", &fullname],
        ["poddisruptionbudget", &fullname],
        ["secret", &format!("{fullname}-jobs-token")],
    ] {
        assert!(
            exists(&[object[0], object[1], "-n", ns]),
            "{object:?} missing"
        );
    }
    for object in [
        ["clusterrole", &fullname],
        ["clusterrolebinding", &fullname],
    ] {
        assert!(exists(&object), "{object:?} missing");
    }
    let crds = kubectl_json(&["get", "crd"]);
    let windlass_crds = crds["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["spec"]["group"] == "windlass.dev")
        .count();
    assert_eq!(windlass_crds, 8);

    let secret = format!("{fullname}-jobs-token");
    let before = token(ns, &secret);
    let certificate = || {
        run(
            "kubectl",
            &[
                "get",
                "secret",
                &format!("{fullname}-jobs-tls"),
                "-n",
                ns,
                "-o",
                "go-template={{index .data \"tls.crt\"}}",
            ],
        )
    };
    let certificate_before = certificate();
    assert!(!certificate_before.is_empty());
    let mut upgrade = vec![
        "upgrade",
        &release,
        &chart,
        "--namespace",
        ns,
        "--reuse-values",
        "--set",
        "settings.logLevel=debug",
        "--wait",
        "--timeout",
        "120s",
    ];
    upgrade.extend(placement.iter().map(String::as_str));
    run("helm", &upgrade);
    assert_eq!(
        token(ns, &secret),
        before,
        "helm upgrade changed the jobs token"
    );
    assert_eq!(
        certificate(),
        certificate_before,
        "helm upgrade changed the jobs API certificate"
    );
    wait_until(
        "the upgraded Deployment to carry RUST_LOG=debug",
        Duration::from_secs(30),
        || async {
            let deployment = kubectl_json(&["get", "deployment", &fullname, "-n", ns]);
            deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()?
                .iter()
                .any(|v| v["name"] == "RUST_LOG" && v["value"] == "debug")
                .then_some(())
        },
    )
    .await;

    run(
        "helm",
        &["uninstall", &release, "--namespace", ns, "--wait"],
    );
    for object in [
        ["clusterrole", &fullname],
        ["clusterrolebinding", &fullname],
    ] {
        assert!(!exists(&object), "{object:?} left behind");
    }
    assert!(!exists(&["serviceaccount", &fullname, "-n", ns]));
    assert!(
        exists(&["crd", "nodepools.windlass.dev"]),
        "helm uninstall keeps CRDs"
    );

    for node in nodes {
        delete_node(&env.client, &node).await;
    }
    namespace.delete().await;
}
