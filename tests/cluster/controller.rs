//! `windlass run` against the real cluster: ready once connected, serves metrics, and stops
//! cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::support::{ChildProcess, TestEnv, wait_until};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET: the status code and body, or None if nothing answers yet.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
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

#[tokio::test]
async fn run_serves_probes_and_metrics_and_exits_cleanly_on_sigterm() {
    let _env = TestEnv::connect().await;
    let (health, metrics) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_windlass"))
        .args([
            "run",
            "--health-addr",
            &format!("127.0.0.1:{health}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = ChildProcess::from(child);

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
            .args(["-TERM", &pid.to_string()])
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
}
