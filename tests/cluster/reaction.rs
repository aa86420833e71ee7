//! Reaction times, a benchmark rather than a check (`#[ignore]`: `hack/bench/reaction.sh` runs
//! it): a message on the queue → the ScaledJob's Job created, and → the ScaledObject's new pod
//! Running on a node launched for it (the registrar's boot delay fixed at 1 s), with
//! demand-aware provisioning on and off side by side, interleaved in one run. Prints p50, p95
//! and max over `WINDLASS_REACTION_RUNS` runs (default 50). Asserts only that every run ends.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use windlass::apis::scaled_job::ScaledJob;
use windlass::apis::scaled_object::ScaledObject;

use crate::disruption::PoolRun;
use crate::provisioning::ahead::{SideBySide, is_running};
use crate::scaled_job::scaled_job;
use crate::support::{TestEnv, unique};

/// The registrar's boot delay, as `PoolRun` starts it.
const BOOT_DELAY: Duration = Duration::from_secs(1);
/// How long one reaction may take before the run counts as broken.
const GIVE_UP: Duration = Duration::from_secs(60);

fn runs() -> usize {
    std::env::var("WINDLASS_REACTION_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(50)
}

/// `p`-th percentile (nearest rank) of `samples`, which it sorts.
fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

fn row(what: &str, samples: &mut [f64]) -> String {
    format!(
        "| {what} | {} | {:.0} | {:.0} | {:.0} |",
        samples.len(),
        percentile(samples, 50.0) * 1000.0,
        percentile(samples, 95.0) * 1000.0,
        percentile(samples, 100.0) * 1000.0,
    )
}

/// Waits until `count` returns at least `want`, polling every 10 ms; seconds since `from`.
async fn seconds_until<F, Fut>(what: &str, from: Instant, want: usize, mut count: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = usize>,
{
    loop {
        if count().await >= want {
            return from.elapsed().as_secs_f64();
        }
        assert!(from.elapsed() < GIVE_UP, "{what}: not within {GIVE_UP:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn running(pods: &Api<Pod>, app: &str) -> usize {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .map_or(0, |list| {
            list.items.iter().filter(|p| is_running(p)).count()
        })
}

/// A spread of waits over one polling interval, so runs start at every phase of the poll.
fn phase(run: usize) -> Duration {
    Duration::from_millis((run as u64 * 379) % 1000)
}

#[tokio::test]
#[ignore = "a benchmark: hack/bench/reaction.sh runs it"]
async fn reaction_times() {
    let runs = runs();
    let run = PoolRun::start(
        "reaction",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m"}}),
    )
    .await;
    let (env, ns, name) = (&run.env, run.ns(), &run.name);
    let jobs = job_reactions(env, ns, runs).await;
    let (aware, pending) = pod_reactions(env, ns, name, runs).await;
    println!("reaction times over {runs} runs, milliseconds (boot delay {BOOT_DELAY:?}):");
    println!("| from a message to | runs | p50 | p95 | max |");
    println!("| --- | --- | --- | --- | --- |");
    for (what, mut samples) in [
        ("the ScaledJob's Job created (pollingInterval 1 s)", jobs),
        ("a pod Running on a new node, demand-aware", aware),
        ("a pod Running on a new node, pending-pod path", pending),
    ] {
        println!("{}", row(what, &mut samples));
    }
    run.finish().await;
}

/// Message → Job, `runs` times: each message is one more Job. Its pods are held by a
/// scheduling gate: nothing provisions for them.
async fn job_reactions(env: &TestEnv, ns: &str, runs: usize) -> Vec<f64> {
    let queue = env.queue("reaction-jobs").await;
    let name = unique("reaction-job");
    let pod = json!({"spec": {
        "restartPolicy": "Never",
        "schedulingGates": [{"name": "windlass.dev/bench"}],
        "containers": [{"name": "worker", "image": "worker"}]
    }});
    let object: ScaledJob = scaled_job(&name, &queue, runs as i32 + 1, pod, (1, 1));
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    let selector = format!("windlass.dev/scaled-job={name}");
    let count = || async {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .map_or(0, |list| list.items.len())
    };
    let mut samples = Vec::with_capacity(runs);
    for n in 0..runs {
        tokio::time::sleep(phase(n)).await;
        let sent = Instant::now();
        env.send_messages(&queue, 1).await;
        samples.push(seconds_until("a Job for the message", sent, n + 1, count).await);
    }
    samples
}

/// Message → pod Running on a node launched for it, `runs` times per path, the two paths'
/// messages sent together: one ScaledObject demand-aware on `pool`, one opted out on a pool
/// of its own. Anti-affinity keeps one pod per node, so every pod needs a new one.
async fn pod_reactions(env: &TestEnv, ns: &str, pool: &str, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let paths = SideBySide::start(
        env,
        ns,
        pool,
        ("aware", "pending"),
        ("1", "1Gi"),
        "10m",
        runs,
    )
    .await;
    // The HPA's 10% tolerance would hold 11 replicas at 12 messages: each message is one more
    // replica here.
    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
    let exact = json!({"spec": {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
        "scaleUp": {"tolerance": "0"}
    }}}}});
    for name in ["aware", "pending"] {
        objects
            .patch(name, &PatchParams::default(), &Patch::Merge(&exact))
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let (mut aware, mut pending) = (Vec::new(), Vec::new());
    for n in 0..runs {
        tokio::time::sleep(phase(n)).await;
        let sent = Instant::now();
        tokio::join!(
            env.send_messages(&paths.aware_queue, 1),
            env.send_messages(&paths.pending_queue, 1)
        );
        let (a, p) = tokio::join!(
            seconds_until("the demand-aware pod", sent, n + 1, || running(
                &pods, "aware"
            )),
            seconds_until("the pending-path pod", sent, n + 1, || running(
                &pods, "pending"
            )),
        );
        aware.push(a);
        pending.push(p);
    }
    paths.delete().await;
    (aware, pending)
}
