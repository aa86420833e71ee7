//! The `windlass` binary as a user meets it, without a cluster: bad configuration ends in one
//! line and a non-zero exit; `crdgen` prints every CRD.

use std::process::{Command, Output};

fn windlass(args: &[&str], kubeconfig: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_windlass"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("running windlass")
}

/// The lines the binary printed as its error (log lines are JSON or timestamped, errors are not).
fn error_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.starts_with("windlass: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn missing_kubeconfig_fails_with_one_line_and_exit_code_1() {
    let output = windlass(
        &[
            "run",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        "/nonexistent/kubeconfig",
    );
    assert_eq!(output.status.code(), Some(1));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("windlass: no usable Kubernetes configuration"),
        "{}",
        errors[0]
    );
}

#[test]
fn unreachable_api_server_fails_with_one_line_naming_it() {
    let dir = std::env::temp_dir().join(format!("windlass-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
         users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n",
    )
    .unwrap();
    let output = windlass(
        &[
            "run",
            "--health-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        kubeconfig.to_str().unwrap(),
    );
    assert_eq!(output.status.code(), Some(1));
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("windlass: cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{}",
        errors[0]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn crdgen_prints_every_crd() {
    let output = windlass(&["crdgen"], "/nonexistent/kubeconfig");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.matches("kind: CustomResourceDefinition").count(),
        windlass::apis::all_crds().len()
    );
}

#[test]
fn convert_of_an_unsupported_trigger_fails_with_one_line_and_prints_nothing() {
    let dir = std::env::temp_dir().join(format!("windlass-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    )
    .unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  scaleTargetRef: {name: web}\n  triggers:\n  - type: prometheus\n    metadata: {query: up}\n",
    )
    .unwrap();
    let output = windlass(
        &[
            "convert",
            "-f",
            good.to_str().unwrap(),
            "-f",
            bad.to_str().unwrap(),
        ],
        "/nonexistent/kubeconfig",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        error_lines(&output),
        [
            "windlass: ScaledObject shop/web: trigger 0 has type prometheus, which Windlass does not support (only aws-sqs-queue)"
        ]
    );
}

#[test]
fn convert_reads_stdin_and_warns_on_stderr() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_windlass"))
        .args(["convert", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: karpenter.k8s.aws/v1\nkind: EC2NodeClass\nmetadata: {name: c}\nspec:\n  role: r\n  amiSelectorTerms: [{alias: al2023@latest}]\n  subnetSelectorTerms: [{id: subnet-1}]\n  securityGroupSelectorTerms: [{id: sg-1}]\n  context: x\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "warning: EC2NodeClass c: spec.context has no equivalent; dropped\n"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("apiVersion: windlass.dev/v1alpha1\nkind: EC2NodeClass\n"),
        "{stdout}"
    );
}
