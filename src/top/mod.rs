//! `windlass top`: a live view of every ScaledObject, ScaledJob and NodePool in the cluster
//! KUBECONFIG names. This module owns the I/O: the watches (reflector stores, as
//! [`crate::state`] keeps them), the terminal and the keys. What is shown is built by
//! [`snapshot`] and drawn by [`view`], both pure.

pub mod snapshot;
pub mod view;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::reflector::Store;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::apis::scaled_job::ScaledJob;
use crate::apis::scaled_object::ScaledObject;
use crate::aws::pricing::tables;
use crate::state::{Watchable, watched_with};
use snapshot::{Objects, Snapshot};

/// Changes that come together (a poll writes several statuses) are drawn once: at most this
/// many redraws a second on a terminal.
const MIN_REDRAW_INTERVAL: Duration = Duration::from_millis(250);
/// Without changes the screen is still redrawn this often, so the ages in it move on.
const IDLE_REDRAW_INTERVAL: Duration = Duration::from_secs(1);
/// With `--watch` on a pipe, at most one table this often.
const MIN_PRINT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("a watch ended before it listed its objects (can you list them? kubectl get {0})")]
    NotListed(&'static str),
    #[error("cannot draw on the terminal: {0}")]
    Terminal(#[source] std::io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// The watched objects, and a wake-up whenever any of them changes.
struct Watches {
    scaled_objects: Store<ScaledObject>,
    scaled_jobs: Store<ScaledJob>,
    node_pools: Store<NodePool>,
    node_claims: Store<NodeClaim>,
    nodes: Store<Node>,
    changed: Arc<Notify>,
    prices: HashMap<String, f64>,
}

impl Watches {
    fn start(client: &kube::Client, shutdown: &CancellationToken) -> Self {
        let changed = Arc::new(Notify::new());
        Self {
            scaled_objects: watched(Api::all(client.clone()), &changed, shutdown),
            scaled_jobs: watched(Api::all(client.clone()), &changed, shutdown),
            node_pools: watched(Api::all(client.clone()), &changed, shutdown),
            node_claims: watched(Api::all(client.clone()), &changed, shutdown),
            nodes: watched(Api::all(client.clone()), &changed, shutdown),
            changed,
            prices: tables::fallback(tables::STAND_IN_REGION).0,
        }
    }

    /// Waits for every store's first full list, so the first screen is never partial.
    async fn listed(&self) -> Result<(), TopError> {
        let listed = |result: Result<(), _>, kind| result.map_err(|_| TopError::NotListed(kind));
        listed(
            self.scaled_objects.wait_until_ready().await,
            "scaledobjects",
        )?;
        listed(self.scaled_jobs.wait_until_ready().await, "scaledjobs")?;
        listed(self.node_pools.wait_until_ready().await, "nodepools")?;
        listed(self.node_claims.wait_until_ready().await, "nodeclaims")?;
        listed(self.nodes.wait_until_ready().await, "nodes")
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::build(
            &Objects {
                scaled_objects: &self.scaled_objects.state(),
                scaled_jobs: &self.scaled_jobs.state(),
                node_pools: &self.node_pools.state(),
                node_claims: &self.node_claims.state(),
                nodes: &self.nodes.state(),
            },
            &self.prices,
            Timestamp::now(),
        )
    }
}

/// A store of `api`'s objects that wakes `changed` on every change to it.
fn watched<K: Watchable>(
    api: Api<K>,
    changed: &Arc<Notify>,
    shutdown: &CancellationToken,
) -> Store<K> {
    let changed = changed.clone();
    watched_with(api, shutdown, move |_| changed.notify_one())
}

/// [`run`] against the cluster KUBECONFIG (or the in-cluster config) names.
pub async fn run_with_kubeconfig(watch: bool) -> crate::Result<()> {
    let config = kube::Config::infer()
        .await
        .map_err(crate::Error::KubeConfig)?;
    let client = kube::Client::try_from(config).map_err(crate::Error::KubeClient)?;
    Ok(run(client, watch).await?)
}

/// Runs `windlass top` until `q`/Ctrl-C on a terminal; on a pipe, prints one table (or, with
/// `watch`, a table on every change) instead.
pub async fn run(client: kube::Client, watch: bool) -> Result<(), TopError> {
    let shutdown = CancellationToken::new();
    let watches = Watches::start(&client, &shutdown);
    let result = async {
        watches.listed().await?;
        if std::io::stdout().is_terminal() {
            on_terminal(&watches).await
        } else {
            on_pipe(&watches, watch).await
        }
    }
    .await;
    shutdown.cancel();
    result
}

async fn on_pipe(watches: &Watches, watch: bool) -> Result<(), TopError> {
    let mut stdout = std::io::stdout();
    let mut printed = view::plain(&watches.snapshot());
    write!(stdout, "{printed}")
        .and_then(|()| stdout.flush())
        .map_err(TopError::Stdout)?;
    if !watch {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = watches.changed.notified() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        tokio::time::sleep(MIN_PRINT_INTERVAL).await;
        let text = view::plain(&watches.snapshot());
        if text != printed {
            write!(stdout, "\n{text}")
                .and_then(|()| stdout.flush())
                .map_err(TopError::Stdout)?;
            printed = text;
        }
    }
}

/// What a key or terminal event asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    Quit,
    Redraw,
}

fn input(event: &Event) -> Option<Input> {
    match event {
        Event::Key(key) if key.kind == KeyEventKind::Press => {
            let quits = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                || (key.code == KeyCode::Char('c')
                    && key.modifiers.contains(KeyModifiers::CONTROL));
            quits.then_some(Input::Quit)
        }
        Event::Resize(..) => Some(Input::Redraw),
        _ => None,
    }
}

/// Terminal events, read on a thread of their own since crossterm's reads block. The thread
/// ends with the process.
fn terminal_inputs() -> mpsc::UnboundedReceiver<Input> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if let Some(input) = input(&event)
                && sender.send(input).is_err()
            {
                return;
            }
        }
    });
    receiver
}

async fn on_terminal(watches: &Watches) -> Result<(), TopError> {
    // Raw mode and the alternate screen; ratatui restores both on a panic too.
    let mut terminal = ratatui::try_init().map_err(TopError::Terminal)?;
    let result = draw_until_quit(&mut terminal, watches).await;
    ratatui::try_restore().map_err(TopError::Terminal)?;
    result
}

async fn draw_until_quit(
    terminal: &mut ratatui::DefaultTerminal,
    watches: &Watches,
) -> Result<(), TopError> {
    let mut inputs = terminal_inputs();
    loop {
        let snapshot = watches.snapshot();
        terminal
            .draw(|frame| view::render(frame, &snapshot))
            .map_err(TopError::Terminal)?;
        let earliest_next = tokio::time::Instant::now() + MIN_REDRAW_INTERVAL;
        tokio::select! {
            _ = watches.changed.notified() => {}
            _ = tokio::time::sleep(IDLE_REDRAW_INTERVAL) => {}
            input = inputs.recv() => if input != Some(Input::Redraw) { return Ok(()) },
        }
        tokio::select! {
            _ = tokio::time::sleep_until(earliest_next) => {}
            input = quit_requested(&mut inputs) => if input { return Ok(()) },
        }
    }
}

/// Resolves once a quit key arrives (true) or the input thread is gone (false).
async fn quit_requested(inputs: &mut mpsc::UnboundedReceiver<Input>) -> bool {
    while let Some(input) = inputs.recv().await {
        if input == Input::Quit {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::{KeyEvent, KeyEventState};

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Event {
        Event::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    #[test]
    fn q_escape_and_ctrl_c_quit_and_other_keys_do_nothing() {
        assert_eq!(
            input(&key(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Input::Quit)
        );
        assert_eq!(
            input(&key(KeyCode::Esc, KeyModifiers::NONE)),
            Some(Input::Quit)
        );
        assert_eq!(
            input(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Input::Quit)
        );
        assert_eq!(input(&key(KeyCode::Char('c'), KeyModifiers::NONE)), None);
        assert_eq!(input(&Event::Resize(80, 24)), Some(Input::Redraw));
    }
}
