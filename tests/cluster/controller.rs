//! `windlass run` against the real cluster: ready once connected, serves metrics, and stops
//! cleanly on SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::support::{TestEnv, TestNamespace, http_get, install_crds, start_windlass, wait_until};

#[tokio::test]
async fn run_serves_probes_and_metrics_and_exits_cleanly_on_sigterm() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "run").await;
    let windlass = start_windlass(&namespace.name);
    let (health, metrics) = (windlass.health_port, windlass.metrics_port);
    let mut child = windlass.process;

    wait_until("/readyz to answer 200", Duration::from_secs(30), || async {
        http_get(health, "/readyz").filter(|(status, _)| *status == 200)
    })
    .await;
    assert_eq!(http_get(health, "/healthz").map(|(s, _)| s), Some(200));
    let (status, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("windlass_build_info"), "{body}");

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = wait_until(
        "windlass to exit after SIGTERM",
        Duration::from_secs(15),
        || std::future::ready(child.try_wait()),
    )
    .await;
    assert!(exit.success(), "exit status {exit:?}");
    namespace.delete().await;
}
