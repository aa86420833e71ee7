//! The soak (issue 19), a long run rather than a check (`#[ignore]`: `hack/bench/soak.sh` runs
//! it): for `WINDLASS_SOAK_MINUTES` (default 20), waves of jobs submitted through the jobs API,
//! bursts and lulls drawn from `WINDLASS_SOAK_SEED`, run by the real example worker on nodes
//! Windlass launches for them and gives back; each wave may switch one fault on for Windlass
//! alone: AWS calls throttled, failing, or served with the answer lost, or the API server it
//! talks to killed and restarted. Every wave ends with the invariants, the run with a summary
//! table, and the test fails if any invariant was ever broken.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use windlass::apis::scaled_job::ScaledJob;

use crate::api_restart::{LEASE, SpareApiServer};
use crate::disruption::seed_jobs::data_processor_job;
use crate::disruption::{PoolRun, pool_claims};
use crate::faults::{AwsFaults, Fault};
use crate::invariants::{JobOutcomes, LimitWatch, assert_instances_match_claims};
use crate::provisioning::fixture::{live_instances, tagged_instances};
use crate::support::{JOBS_TOKEN, TestEnv, data_processor, http_request, wait_until};

/// The pool's limit: 8 vCPU, so a burst of 1-vCPU jobs queues behind it.
const LIMIT_CPU: i64 = 8_000;
/// The most Jobs the ScaledJob runs at once (more than the limit fits).
const MAX_JOBS: usize = 12;
/// How long one wave may take to settle before the run counts it as a violation.
const SETTLE: Duration = Duration::from_secs(300);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The faults a wave may switch on; one wave has at most one.
#[derive(Clone, Copy, Debug)]
enum WaveFault {
    None,
    Aws(&'static str, &'static [(&'static str, Fault, Option<u32>)]),
    /// The API server Windlass talks to killed a random moment into the wave, then started
    /// again.
    ApiServerRestart,
}

impl WaveFault {
    fn describe(self) -> &'static str {
        match self {
            WaveFault::None => "no fault",
            WaveFault::Aws(what, _) => what,
            WaveFault::ApiServerRestart => "the API server killed and restarted",
        }
    }
}

const FAULTS: [WaveFault; 7] = [
    WaveFault::None,
    WaveFault::Aws(
        "CreateFleet throttled and lost",
        &[
            ("CreateFleet", Fault::Throttle, Some(3)),
            ("CreateFleet", Fault::Lost, Some(2)),
        ],
    ),
    WaveFault::Aws(
        "DescribeInstances failing",
        &[("DescribeInstances", Fault::Error500, Some(4))],
    ),
    WaveFault::Aws(
        "TerminateInstances throttled and failing",
        &[
            ("TerminateInstances", Fault::Throttle, Some(3)),
            ("TerminateInstances", Fault::Error500, Some(2)),
        ],
    ),
    WaveFault::Aws(
        "GetQueueAttributes throttled",
        &[("GetQueueAttributes", Fault::Throttle, Some(6))],
    ),
    WaveFault::Aws(
        "SendMessage failing",
        &[("SendMessage", Fault::Error500, Some(2))],
    ),
    WaveFault::ApiServerRestart,
];

/// What the stats count: succeeded, failed, retries.
type Counts = (i64, i64, i64);

fn counts(outcomes: &JobOutcomes) -> Counts {
    (outcomes.succeeded, outcomes.failed, outcomes.retries)
}

/// Watches the namespace's Jobs and keeps each one as last seen, so that the outcome of a Job
/// history cleanup deleted still counts.
struct JobLedger {
    jobs: Arc<Mutex<BTreeMap<String, Job>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JobLedger {
    fn watch(api: Api<Job>) -> Self {
        let jobs = Arc::new(Mutex::new(BTreeMap::new()));
        let task = tokio::spawn({
            let jobs = jobs.clone();
            async move {
                let events = watcher(api, watcher::Config::default()).applied_objects();
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    if let Ok(job) = event {
                        jobs.lock().unwrap().insert(job.name_any(), job);
                    }
                }
            }
        });
        Self { jobs, task }
    }

    /// How many Jobs were seen and what they did; `None` while any is unfinished.
    fn settled(&self) -> Option<(usize, JobOutcomes)> {
        let jobs: Vec<Job> = self.jobs.lock().unwrap().values().cloned().collect();
        JobOutcomes::of(&jobs)
            .ok()
            .map(|outcomes| (jobs.len(), outcomes))
    }
}

impl Drop for JobLedger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the pool's NodeClaims are all gone within 120 s.
async fn nodes_gone(run: &PoolRun, pool: &str) -> bool {
    tokio::time::timeout(Duration::from_secs(120), async {
        while !pool_claims(&run.claims, pool).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .is_ok()
}

fn stats(port: u16, namespace: &str) -> Option<Counts> {
    let path = format!("/jobs/stats?namespace={namespace}&scaledJob=data-processor");
    let (status, body) = http_request(port, "GET", &path, Some(JOBS_TOKEN), b"")?;
    let stats: Value = (status == 200).then(|| serde_json::from_str(&body).ok())??;
    Some((
        stats["succeeded"].as_i64()?,
        stats["failed"].as_i64()?,
        stats["retries"].as_i64()?,
    ))
}

/// How many calls each of `rules` failed so far (the stack counts a client's faults from its
/// start).
async fn injected(faults: &AwsFaults, rules: &[(&str, Fault, Option<u32>)]) -> Vec<u32> {
    let mut counts = Vec::with_capacity(rules.len());
    for (operation, fault, _) in rules {
        counts.push(faults.injected(operation, *fault).await);
    }
    counts
}

#[tokio::test]
#[ignore = "a soak: hack/bench/soak.sh runs it"]
async fn soak() {
    let minutes = setting("WINDLASS_SOAK_MINUTES", 20);
    let seed = setting("WINDLASS_SOAK_SEED", 1);
    let mut rng = fastrand::Rng::with_seed(seed);
    data_processor();
    let mut api = SpareApiServer::start().await;
    let env = TestEnv::connect().await;
    let faults = AwsFaults::new(&env);
    let windlass_env: Vec<(&str, &str)> = faults.env().into_iter().chain(api.env()).collect();
    let run = PoolRun::start_with_env(
        "soak",
        json!({"limits": {"cpu": "8"},
               "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}}),
        &LEASE,
        &windlass_env,
    )
    .await;
    let (env, ns, name) = (&run.env, run.ns(), &run.name);
    let port = run.windlass.jobs_port;
    let queue = env.queue("soak").await;
    let mut job = data_processor_job(name, &queue);
    job.spec.max_replica_count = MAX_JOBS as i32;
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let ledger = JobLedger::watch(Api::namespaced(env.client.clone(), ns));
    let limits = LimitWatch::watch(&run.claims, name, LIMIT_CPU, i64::MAX);
    wait_until(
        "the jobs API to answer",
        Duration::from_secs(30),
        || async { stats(port, ns) },
    )
    .await;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(60 * minutes);
    let (mut waves, mut accepted, mut refused, mut restarts) = (0, 0usize, 0usize, 0);
    let mut ids = BTreeSet::new();
    let mut injected_total: BTreeMap<String, u32> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    let mut lulls = 0;
    while Instant::now() < deadline {
        waves += 1;
        // Three lulls in ten waves, the rest bursts of 1–6 or 8–16 jobs.
        let burst = match rng.u32(0..10) {
            0..=2 => 0,
            3..=7 => rng.usize(1..=6),
            _ => rng.usize(8..=16),
        };
        let fault = FAULTS[rng.usize(0..FAULTS.len())];
        let injected_before = match fault {
            WaveFault::Aws(_, rules) => {
                let before = injected(&faults, rules).await;
                faults.set(rules).await;
                before
            }
            _ => Vec::new(),
        };
        let restart_after = Duration::from_millis(rng.u64(0..10_000));
        let wave_started = Instant::now();
        let submit = async {
            let mut wave_ids = Vec::new();
            let mut wave_refused = 0;
            for n in 0..burst {
                let payload = if rng.u32(0..5) == 0 {
                    json!({"wave": waves, "n": n, "failTimes": 1})
                } else {
                    json!({"wave": waves, "n": n})
                };
                let body =
                    json!({"scaledJob": "data-processor", "namespace": ns, "payload": payload});
                match http_request(
                    port,
                    "POST",
                    "/jobs",
                    Some(JOBS_TOKEN),
                    body.to_string().as_bytes(),
                ) {
                    Some((202, answer)) => {
                        let id: Value = serde_json::from_str(&answer).unwrap();
                        wave_ids.push(id["id"].as_str().unwrap_or_default().to_owned());
                    }
                    _ => wave_refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (wave_ids, wave_refused)
        };
        let restart = async {
            if matches!(fault, WaveFault::ApiServerRestart) {
                tokio::time::sleep(restart_after).await;
                api.restart().await;
                true
            } else {
                false
            }
        };
        let ((wave_ids, wave_refused), restarted) = tokio::join!(submit, restart);
        restarts += usize::from(restarted);
        refused += wave_refused;
        accepted += wave_ids.len();
        for id in wave_ids {
            if !ids.insert(id.clone()) {
                violations.push(format!("wave {waves}: POST /jobs answered id {id} twice"));
            }
        }

        // Settled: the queue empty, every Job finished, and the stats count them all.
        let settled = tokio::time::timeout(SETTLE, async {
            loop {
                if env.messages_on(&queue).await == 0
                    && let Some((jobs, outcomes)) = ledger.settled()
                    && stats(port, ns) == Some(counts(&outcomes))
                {
                    return (jobs, outcomes);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
        .await;
        // Nodes are given back after their Jobs are done: a wave whose fault is on
        // TerminateInstances lasts until its nodes are gone, so that the fault meets them.
        if let WaveFault::Aws(_, rules) = fault
            && rules
                .iter()
                .any(|(operation, ..)| *operation == "TerminateInstances")
            && !nodes_gone(&run, name).await
        {
            violations.push(format!(
                "wave {waves}: NodeClaims left 120 s after its Jobs were done"
            ));
        }
        if let WaveFault::Aws(_, rules) = fault {
            let after = injected(&faults, rules).await;
            for (((operation, kind, _), after), before) in
                rules.iter().zip(after).zip(&injected_before)
            {
                *injected_total
                    .entry(format!("{operation} {kind:?}"))
                    .or_default() += after - before;
            }
            faults.clear().await;
        }
        match settled {
            Err(_) => violations.push(format!(
                "wave {waves} ({}, {burst} jobs): not settled within {SETTLE:?}: {} messages left, Jobs {:?}, stats {:?}",
                fault.describe(),
                env.messages_on(&queue).await,
                ledger.settled(),
                stats(port, ns)
            )),
            Ok((jobs, outcomes)) => {
                if outcomes.succeeded != accepted as i64 {
                    violations.push(format!(
                        "wave {waves}: {} Jobs succeeded for {accepted} accepted submissions",
                        outcomes.succeeded
                    ));
                }
                if jobs as i64 != outcomes.succeeded + outcomes.failed {
                    violations.push(format!("wave {waves}: {jobs} Jobs, outcomes {outcomes:?}"));
                }
            }
        }
        // In a lull every node goes: then instances and NodeClaims must match one to one.
        if burst == 0 {
            lulls += 1;
            if !nodes_gone(&run, name).await {
                violations.push(format!("wave {waves}: NodeClaims left 120 s into a lull"));
            }
            assert_instances_match_claims(env, &run.windlass.cluster).await;
        }
        println!(
            "{:>6.0}s wave {waves}: {burst} jobs, {}, {:.0} s",
            started.elapsed().as_secs_f64(),
            fault.describe(),
            wave_started.elapsed().as_secs_f64()
        );
    }
    let (jobs, outcomes) = ledger.settled().unwrap_or_default();
    let metric = |sample: &str| run.windlass.metric(sample).unwrap_or(0.0);
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    let launched = tagged_instances(env, &run.windlass.cluster).await;
    let live = live_instances(env, &run.windlass.cluster).await.len();
    if let Some(over) = limits.over() {
        violations.push(format!("the pool went over its limits: {over}"));
    }
    println!("soak summary (seed {seed}, {minutes} min):");
    println!("| what | count |");
    println!("| --- | --- |");
    println!("| waves (lulls) | {waves} ({lulls}) |");
    println!("| jobs accepted by POST /jobs (refused) | {accepted} ({refused}) |");
    println!(
        "| Jobs: created / succeeded / failed / retries | {jobs} / {} / {} / {} |",
        outcomes.succeeded, outcomes.failed, outcomes.retries
    );
    println!(
        "| NodeClaims created / launched | {} / {} |",
        metric(&format!("windlass_nodeclaims_created_total{pool_label}")),
        metric(&format!("windlass_nodeclaims_launched_total{pool_label}"))
    );
    println!(
        "| instances launched / terminated | {launched} / {} |",
        launched - live
    );
    println!("| API server restarts | {restarts} |");
    for (fault, count) in &injected_total {
        println!("| faults injected: {fault} | {count} |");
    }
    println!("| invariant violations | {} |", violations.len());
    for violation in &violations {
        println!("violation: {violation}");
    }
    assert!(violations.is_empty(), "{violations:#?}");
    run.finish().await;
}
