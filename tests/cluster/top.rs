//! `windlass top` against the stack: the built binary in a real terminal (a tmux pane) shows a
//! ScaledJob's queue, target and Jobs and a NodePool's usage against its limits, quits on `q`
//! leaving the terminal as it was, and prints the same rows as plain lines into a pipe.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use windlass::apis::scaled_job::ScaledJob;
use windlass::apis::triggers::TriggerValue;

use crate::provisioning::fixture::{delete_pool_and_class, node_class_and_pool};
use crate::scaled_job::{pod, scaled_job};
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

/// A tmux server of the test's own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Self {
        Self {
            socket: unique("windlass-top"),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs (hack/test.sh installs it)")
    }

    /// The pane's visible text.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The words of the screen line that mentions `text`, the table borders left out.
fn row<'a>(screen: &'a str, text: &str) -> Option<Vec<&'a str>> {
    screen.lines().find(|line| line.contains(text)).map(|line| {
        line.split_whitespace()
            .map(|word| word.trim_matches('│'))
            .filter(|word| !word.is_empty())
            .collect()
    })
}

#[tokio::test]
async fn top_shows_scalers_and_node_pools_live_and_as_plain_lines() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "top").await;
    let pool = unique("top");
    let (classes, pools) = node_class_and_pool(
        &env,
        &pool,
        json!([]),
        json!({"cpu": "16", "memory": "64Gi"}),
    )
    .await;
    let queue = env.queue("top").await;
    let jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), &namespace.name);
    // Its pods wait for a node no one has, so its Jobs stay unfinished and the numbers still.
    jobs.create(
        &PostParams::default(),
        &scaled_job("top-jobs", &queue, 10, pod("no-such-node", false), (10, 10)),
    )
    .await
    .unwrap();
    let _windlass = start_windlass(&namespace.name);
    env.send_messages(&queue, 3).await;
    // The controller keeps the trigger's reading in status, which is what top shows.
    wait_until(
        "the ScaledJob's status to hold its queue's 3 messages",
        Duration::from_secs(60),
        || async {
            let status = jobs.get("top-jobs").await.ok()?.status?;
            (status.trigger_values.values().next()
                == Some(&TriggerValue {
                    value: 3.0,
                    target: 1.0,
                })
                && status.running_jobs == 3)
                .then_some(())
        },
    )
    .await;

    let kubeconfig = std::env::var("KUBECONFIG").unwrap();
    let binary = env!("CARGO_BIN_EXE_windlass");
    let exit_file = Path::new(&std::env::temp_dir()).join(unique("windlass-top-exit"));
    // After top exits, the shell writes its exit code and keeps the pane open, so the screen
    // shows what top left behind.
    let script = format!(
        "KUBECONFIG={} {} top; echo $? > {}; echo top exited; sleep 60",
        shlex::try_quote(&kubeconfig).unwrap(),
        shlex::try_quote(binary).unwrap(),
        shlex::try_quote(&exit_file.to_string_lossy()).unwrap(),
    );
    let tmux = Tmux::new();
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "40",
        "-s",
        "top",
        "sh",
        "-c",
        &script,
    ]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
    let job_row = format!("{}/top-jobs", namespace.name);
    let screen = wait_until(
        "top to show the ScaledJob and the NodePool with their numbers",
        Duration::from_secs(30),
        || {
            let screen = tmux.screen();
            let shown = row(&screen, &job_row).is_some_and(|words| {
                words[1..8] == ["ScaledJob", "3", "1", "3", "running,", "3", "pending"]
            }) && row(&screen, &pool)
                .is_some_and(|words| words[1..6] == ["0", "0", "0/16", "0Gi/64Gi", "$0.000"]);
            async move { shown.then_some(screen) }
        },
    )
    .await;
    println!("windlass top in a 160x40 terminal:\n{screen}");
    assert!(screen.contains("on-demand list prices"), "{screen}");

    let sent = tmux.run(&["send-keys", "-t", "top", "q"]);
    assert!(sent.status.success(), "tmux send-keys: {sent:?}");
    let exit_code = wait_until("top to exit on q", Duration::from_secs(10), || {
        let code = std::fs::read_to_string(&exit_file).ok();
        async move { code.filter(|c| !c.trim().is_empty()) }
    })
    .await;
    assert_eq!(exit_code.trim(), "0", "top's exit code");
    // The alternate screen is gone: the pane shows the shell's own output again.
    let after = wait_until(
        "the shell's output after top",
        Duration::from_secs(10),
        || {
            let screen = tmux.screen();
            async move { screen.contains("top exited").then_some(screen) }
        },
    )
    .await;
    assert!(
        !after.contains("NODEPOOL"),
        "top's screen was left behind:\n{after}"
    );
    let _ = std::fs::remove_file(&exit_file);

    // Into a pipe: one table of plain lines, then exit.
    let piped = Command::new(binary)
        .arg("top")
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(piped.status.success(), "{piped:?}");
    let text = String::from_utf8(piped.stdout).unwrap();
    println!("windlass top | cat:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in plain output:\n{text}"
    );
    assert_eq!(
        row(&text, &job_row).unwrap()[1..8],
        ["ScaledJob", "3", "1", "3", "running,", "3", "pending"]
    );
    assert_eq!(
        row(&text, &pool).unwrap()[1..6],
        ["0", "0", "0/16", "0Gi/64Gi", "$0.000"]
    );

    namespace.delete().await;
    delete_pool_and_class(&pools, &classes, &pool).await;
}
