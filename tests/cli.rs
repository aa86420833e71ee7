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
