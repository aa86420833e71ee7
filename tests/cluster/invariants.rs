//! The promises every fault test ends with (issue 19), each a pure check naming what broke and
//! a wait that applies it to the cluster or a queue: each live instance tagged for the cluster
//! has exactly one NodeClaim and each launched NodeClaim a live instance; no NodePool is over
//! its limits at any moment a watch saw; a ScaledJob's counters equal what its Jobs really did;
//! every id `POST /jobs` accepted is on the queue exactly once; a JobSchedule sent one message
//! per tick.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::Value;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::scaled_job::{ScaledJob, ScaledJobStatus};
use windlass::aws::instance_id;
use windlass::scheduling::resources::Resources;

use crate::provisioning::fixture::live_instances;
use crate::support::TestEnv;

/// Waits (30 s at most, as a termination settles) until the live instances tagged for
/// `cluster` and the cluster's NodeClaims that name an instance match one to one; panics
/// naming what does not.
pub async fn assert_instances_match_claims(env: &TestEnv, cluster: &str) {
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/cluster={cluster}");
    let mut last = String::new();
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let instances = live_instances(env, cluster).await;
            let claimed = claims
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .expect("NodeClaims list")
                .items;
            match mismatch(&instances, &claimed) {
                None => return,
                Some(problem) => last = problem,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "cluster {cluster}: {last}");
}

/// What breaks the one-to-one match of live instances and NodeClaims, if anything.
fn mismatch(instances: &[String], claims: &[NodeClaim]) -> Option<String> {
    let mut claims_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for claim in claims {
        let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
        if let Some(instance) = provider_id.and_then(instance_id) {
            claims_of
                .entry(instance)
                .or_default()
                .push(claim.name_any());
        }
    }
    for instance in instances {
        match claims_of.get(instance.as_str()).map(Vec::len) {
            Some(1) => {}
            Some(_) => {
                return Some(format!(
                    "instance {instance} has NodeClaims {:?}",
                    claims_of[instance.as_str()]
                ));
            }
            None => {
                return Some(format!(
                    "instance {instance} is running without a NodeClaim"
                ));
            }
        }
    }
    claims_of
        .iter()
        .find(|(instance, _)| !instances.iter().any(|live| live == *instance))
        .map(|(instance, names)| {
            format!("NodeClaim {names:?} names instance {instance}, which is not running")
        })
}

/// Watches a NodePool's NodeClaims and keeps the first moment their launched capacity went
/// over the pool's limits.
pub struct LimitWatch {
    over: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LimitWatch {
    /// `cpu` in millicores and `memory` in bytes, as the pool's `spec.limits` says.
    pub fn watch(claims: &Api<NodeClaim>, pool: &str, cpu: i64, memory: i64) -> Self {
        let over = Arc::new(Mutex::new(None));
        let config = watcher::Config::default().labels(&format!("windlass.dev/nodepool={pool}"));
        let events = watcher(claims.clone(), config);
        let task = tokio::spawn({
            let over = over.clone();
            async move {
                let mut capacity: BTreeMap<String, Resources> = BTreeMap::new();
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => {
                            let launched = claim
                                .status
                                .as_ref()
                                .map(|s| Resources::from_list(&s.capacity))
                                .unwrap_or_default();
                            capacity.insert(claim.name_any(), launched);
                        }
                        Ok(watcher::Event::Delete(claim)) => {
                            capacity.remove(&claim.name_any());
                        }
                        _ => continue,
                    }
                    let total = capacity
                        .values()
                        .fold(Resources::default(), |sum, r| sum + *r);
                    if total.cpu > cpu || total.memory > memory {
                        over.lock().unwrap().get_or_insert_with(|| {
                            format!(
                                "{total:?} on {:?} is over cpu={cpu}m memory={memory}",
                                capacity.keys()
                            )
                        });
                    }
                }
            }
        });
        Self { over, task }
    }

    /// Stops watching; panics naming the first moment the pool was over its limits.
    pub fn assert_never_over(self) {
        if let Some(over) = self.over() {
            panic!("the NodePool went over its limits: {over}");
        }
    }

    /// Stops watching; the first moment the pool was over its limits, if it ever was.
    pub fn over(self) -> Option<String> {
        self.task.abort();
        self.over.lock().unwrap().take()
    }
}

/// What a ScaledJob's Jobs did, read from their status.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JobOutcomes {
    pub succeeded: i64,
    pub failed: i64,
    /// Pod failures the Job went on from: all of a succeeded Job's, all but the last of a
    /// failed Job's.
    pub retries: i64,
    pub pod_failures: i64,
}

impl JobOutcomes {
    /// The outcomes of `jobs`, or the names of those that have not finished.
    pub fn of(jobs: &[Job]) -> Result<Self, Vec<String>> {
        let mut outcomes = JobOutcomes::default();
        let mut unfinished = Vec::new();
        for job in jobs {
            let status = job.status.clone().unwrap_or_default();
            let finished = |kind: &str| {
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == kind && c.status == "True")
            };
            let failures = i64::from(status.failed.unwrap_or(0));
            if finished("Complete") {
                outcomes.succeeded += 1;
                outcomes.retries += failures;
            } else if finished("Failed") {
                outcomes.failed += 1;
                outcomes.retries += failures - 1;
            } else {
                unfinished.push(job.name_any());
                continue;
            }
            outcomes.pod_failures += failures;
        }
        if unfinished.is_empty() {
            Ok(outcomes)
        } else {
            Err(unfinished)
        }
    }
}

/// What breaks "the ScaledJob's counters equal what its Jobs did", if anything: a Job not
/// finished yet, or a counter that counts more or fewer than the Jobs. Only while history
/// limits have deleted none of the Jobs.
fn counter_mismatch(status: &ScaledJobStatus, jobs: &[Job]) -> Option<String> {
    let done = match JobOutcomes::of(jobs) {
        Ok(done) => done,
        Err(unfinished) => return Some(format!("Jobs {unfinished:?} have not finished")),
    };
    let counters = [
        ("succeeded", status.succeeded, done.succeeded),
        ("failed", status.failed, done.failed),
        ("retries", status.retries, done.retries),
    ];
    let wrong: Vec<String> = counters
        .iter()
        .filter(|(_, counted, did)| counted != did)
        .map(|(name, counted, did)| format!("{name}: counted {counted}, the Jobs did {did}"))
        .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// Waits (up to `timeout`) until every Job of the ScaledJob has finished and its counters equal
/// what the Jobs did; returns that, or panics naming the mismatch. The ScaledJob's history
/// limits must keep every Job.
pub async fn assert_job_counters_match(
    env: &TestEnv,
    namespace: &str,
    scaled_job: &str,
    timeout: Duration,
) -> (JobOutcomes, Vec<Job>) {
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), namespace);
    let selector = format!("windlass.dev/scaled-job={scaled_job}");
    let mut last = String::new();
    let settled = tokio::time::timeout(timeout, async {
        loop {
            let status = scaled_jobs
                .get(scaled_job)
                .await
                .expect("the ScaledJob")
                .status
                .unwrap_or_default();
            let listed = jobs
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("Jobs list")
                .items;
            match counter_mismatch(&status, &listed) {
                None => {
                    let done = JobOutcomes::of(&listed).expect("every Job finished");
                    return (done, listed);
                }
                Some(problem) => last = problem,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    settled.unwrap_or_else(|_| panic!("ScaledJob {namespace}/{scaled_job}: {last}"))
}

/// What breaks "every accepted id is on the queue exactly once", if anything: an accepted id
/// missing or there more than once, or a message nobody was told was accepted.
fn accepted_mismatch(accepted: &[String], on_queue: &[String]) -> Option<String> {
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for id in on_queue {
        *times.entry(id.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    for id in accepted {
        match times.get(id.as_str()).copied().unwrap_or(0) {
            1 => {}
            0 => problems.push(format!("accepted id {id} is not on the queue")),
            n => problems.push(format!("accepted id {id} is on the queue {n} times")),
        }
    }
    for id in times.keys() {
        if !accepted.iter().any(|a| a == id) {
            problems.push(format!("message {id} on the queue was never accepted"));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Every message on the queue, read and held invisible for a minute: the check reads a
/// queue nothing else consumes. Bodies that are not JSON are strings.
pub async fn queue_bodies(env: &TestEnv, queue_url: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    loop {
        let received = env
            .sqs()
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("ReceiveMessage");
        if received.messages().is_empty() {
            return bodies;
        }
        for message in received.messages() {
            let body = message.body().unwrap_or_default();
            bodies.push(serde_json::from_str(body).unwrap_or_else(|_| body.into()));
        }
    }
}

/// Checks that every id in `accepted` (the ids of `POST /jobs` 202 answers) is on the queue
/// exactly once and nothing else is; panics naming what is not so.
pub async fn assert_accepted_once(env: &TestEnv, queue_url: &str, accepted: &[String]) {
    let on_queue: Vec<String> = queue_bodies(env, queue_url)
        .await
        .iter()
        .map(|body| body["id"].as_str().unwrap_or("(no id)").to_owned())
        .collect();
    if let Some(problem) = accepted_mismatch(accepted, &on_queue) {
        panic!("queue {queue_url}: {problem}");
    }
}

/// What breaks "one message per tick" for the JobSchedule `schedule`, if anything: a tick with
/// no message or more than one, or a message for a tick that was not due. Messages of other
/// schedules are not its business.
fn tick_mismatch(schedule: &str, ticks: &[Timestamp], bodies: &[Value]) -> Option<String> {
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for body in bodies.iter().filter(|b| b["schedule"] == schedule) {
        let tick = body["scheduledTime"]
            .as_str()
            .unwrap_or("(no scheduledTime)");
        *times.entry(tick.to_owned()).or_default() += 1;
    }
    let expected: Vec<String> = ticks.iter().map(Timestamp::to_string).collect();
    let mut problems = Vec::new();
    for tick in &expected {
        match times.get(tick).copied().unwrap_or(0) {
            1 => {}
            0 => problems.push(format!("tick {tick} has no message")),
            n => problems.push(format!("tick {tick} has {n} messages")),
        }
    }
    for tick in times.keys().filter(|t| !expected.contains(t)) {
        problems.push(format!("a message for tick {tick}, which was not due"));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Checks that the queue holds exactly one message of `schedule` for each of `ticks` and none
/// for another tick; panics naming what is not so. Returns the bodies read.
pub async fn assert_one_message_per_tick(
    env: &TestEnv,
    queue_url: &str,
    schedule: &str,
    ticks: &[Timestamp],
) -> Vec<Value> {
    let bodies = queue_bodies(env, queue_url).await;
    if let Some(problem) = tick_mismatch(schedule, ticks, &bodies) {
        panic!("JobSchedule {schedule} on {queue_url}: {problem}");
    }
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, instance: Option<&str>) -> NodeClaim {
        let mut claim: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "windlass.dev/v1alpha1",
            "kind": "NodeClaim",
            "metadata": {"name": name},
            "spec": {
                "requirements": [],
                "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "x"}
            },
        }))
        .expect("a NodeClaim");
        if let Some(instance) = instance {
            claim.status = Some(
                serde_json::from_value(serde_json::json!({
                    "providerID": format!("aws:///us-east-1a/{instance}")
                }))
                .expect("a status"),
            );
        }
        claim
    }

    #[test]
    fn a_match_and_each_way_it_breaks() {
        let live = ["i-1".to_owned(), "i-2".to_owned()];
        assert_eq!(
            mismatch(
                &live,
                &[
                    claim("a", Some("i-1")),
                    claim("b", Some("i-2")),
                    claim("c", None)
                ]
            ),
            None
        );
        assert!(
            mismatch(&live, &[claim("a", Some("i-1"))])
                .unwrap()
                .contains("i-2 is running without")
        );
        assert!(
            mismatch(
                &live,
                &[
                    claim("a", Some("i-1")),
                    claim("b", Some("i-1")),
                    claim("c", Some("i-2"))
                ]
            )
            .unwrap()
            .contains("has NodeClaims")
        );
        assert!(
            mismatch(
                &live[..1],
                &[claim("a", Some("i-1")), claim("b", Some("i-2"))]
            )
            .unwrap()
            .contains("not running")
        );
    }

    fn job(name: &str, outcome: Option<&str>, pod_failures: i32) -> Job {
        let conditions: Vec<Value> = outcome
            .map(|kind| serde_json::json!({"type": kind, "status": "True"}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": conditions, "failed": pod_failures}
        }))
        .expect("a Job")
    }

    fn counted(succeeded: i64, failed: i64, retries: i64) -> ScaledJobStatus {
        ScaledJobStatus {
            succeeded,
            failed,
            retries,
            ..ScaledJobStatus::default()
        }
    }

    #[test]
    fn counters_that_match_the_jobs_and_each_way_they_do_not() {
        // One success at the first try, one after two failed pods, one that failed for good
        // after three (two retries).
        let jobs = [
            job("a", Some("Complete"), 0),
            job("b", Some("Complete"), 2),
            job("c", Some("Failed"), 3),
        ];
        assert_eq!(counter_mismatch(&counted(2, 1, 4), &jobs), None);
        assert_eq!(
            counter_mismatch(&counted(3, 1, 4), &jobs).unwrap(),
            "succeeded: counted 3, the Jobs did 2"
        );
        assert_eq!(
            counter_mismatch(&counted(2, 0, 2), &jobs).unwrap(),
            "failed: counted 0, the Jobs did 1; retries: counted 2, the Jobs did 4"
        );
        let running = [job("a", Some("Complete"), 0), job("d", None, 1)];
        assert_eq!(
            counter_mismatch(&counted(1, 0, 0), &running).unwrap(),
            r#"Jobs ["d"] have not finished"#
        );
    }

    #[test]
    fn accepted_ids_once_each_and_each_way_that_breaks() {
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let accepted = ids(&["1", "2"]);
        assert_eq!(accepted_mismatch(&accepted, &ids(&["2", "1"])), None);
        assert_eq!(
            accepted_mismatch(&accepted, &ids(&["1"])).unwrap(),
            "accepted id 2 is not on the queue"
        );
        assert_eq!(
            accepted_mismatch(&accepted, &ids(&["1", "2", "2"])).unwrap(),
            "accepted id 2 is on the queue 2 times"
        );
        assert_eq!(
            accepted_mismatch(&accepted, &ids(&["1", "2", "3"])).unwrap(),
            "message 3 on the queue was never accepted"
        );
    }

    #[test]
    fn one_message_per_tick_and_each_way_that_breaks() {
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let ticks = [at("2026-12-08T10:00:00Z"), at("2026-12-08T10:01:00Z")];
        let message = |schedule: &str, tick: &str| serde_json::json!({"id": "x", "schedule": schedule, "scheduledTime": tick});
        let (first, second) = ("2026-12-08T10:00:00Z", "2026-12-08T10:01:00Z");
        let other = message("other", "2026-12-08T09:00:00Z");
        let both = [message("s", first), other.clone(), message("s", second)];
        assert_eq!(tick_mismatch("s", &ticks, &both), None);
        assert_eq!(
            tick_mismatch("s", &ticks, &[message("s", second), other]).unwrap(),
            "tick 2026-12-08T10:00:00Z has no message"
        );
        let doubled = [
            message("s", first),
            message("s", second),
            message("s", first),
        ];
        assert_eq!(
            tick_mismatch("s", &ticks, &doubled).unwrap(),
            "tick 2026-12-08T10:00:00Z has 2 messages"
        );
        let extra = [
            message("s", first),
            message("s", second),
            message("s", "2026-12-08T10:02:00Z"),
        ];
        assert_eq!(
            tick_mismatch("s", &ticks, &extra).unwrap(),
            "a message for tick 2026-12-08T10:02:00Z, which was not due"
        );
    }
}
