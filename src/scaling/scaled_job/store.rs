//! What a ScaledJob's polls read instead of listing: its Jobs from one watch of every Job a
//! ScaledJob made (trimmed to what the polls read), its Jobs' pods from the cluster's pod store,
//! and the Jobs this process created that the watch has not shown yet — the watch lags our own
//! creates, and a poll that did not count them would create them again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apis::labels::SCALED_JOB_LABEL;
use crate::apis::scaled_job::ScaledJob;
use crate::state::by_label::{ByLabel, LabelIndex};
use crate::state::{NotReady, watched_selected};

/// How long a created Job may go unseen by the watch before a poll asks the API server whether
/// it exists: far longer than a watch event takes, short enough that a Job deleted before the
/// watch showed it does not hold a slot for long.
const STORE_LAG: Duration = Duration::from_secs(10);

pub struct ScaledJobStore {
    /// Every Job labelled with a ScaledJob, in the watched namespace.
    jobs: ByLabel<Job>,
    /// Every pod labelled with a ScaledJob (its Jobs' pod templates carry the label).
    pods: ByLabel<Pod>,
    created: Mutex<CreatedJobs>,
}

/// A ScaledJob's Jobs as a poll sees them.
pub struct OwnJobs {
    /// Those the watch shows, and those created here that it does not show yet.
    pub jobs: Vec<Arc<Job>>,
    /// Names of the created ones the watch has not shown for [`STORE_LAG`].
    pub overdue: Vec<String>,
}

impl ScaledJobStore {
    /// Starts the Jobs watch (in `watch_namespace`, or everywhere); it runs until `shutdown`.
    pub fn watch(
        client: &kube::Client,
        watch_namespace: Option<&str>,
        pods: ByLabel<Pod>,
        shutdown: &CancellationToken,
    ) -> Self {
        let api: Api<Job> = match watch_namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        let index = Arc::new(RwLock::new(LabelIndex::new(SCALED_JOB_LABEL)));
        let indexing = index.clone();
        let store = watched_selected(
            api,
            watcher::Config::default().labels(SCALED_JOB_LABEL),
            shutdown,
            trim_job,
            move |event| indexing.write().expect("label index lock").apply(event),
        );
        Self {
            jobs: ByLabel::new(store, index),
            pods,
            created: Mutex::default(),
        }
    }

    /// Waits until the Jobs and the pods are listed: a poll on an empty store would drop
    /// counted Jobs from the status's counted set and count them again on the next poll.
    pub async fn wait_until_listed(&self) -> Result<(), NotReady> {
        self.jobs.wait_until_listed().await?;
        self.pods.wait_until_listed().await
    }

    /// The Jobs `object` owns.
    pub fn jobs_of(&self, object: &ScaledJob, now: Instant) -> OwnJobs {
        let namespace = object.namespace().unwrap_or_default();
        let name = object.name_any();
        let shown = self.jobs.get(&namespace, &name);
        let (unseen, overdue) = self
            .created
            .lock()
            .expect("created Jobs lock")
            .unseen(&namespace, &name, &shown, now);
        let uid = object.metadata.uid.as_deref();
        let jobs = shown
            .into_iter()
            .chain(unseen)
            .filter(|job| {
                job.owner_references()
                    .iter()
                    .any(|owner| Some(owner.uid.as_str()) == uid)
            })
            .collect();
        OwnJobs { jobs, overdue }
    }

    /// The pods of `object`'s Jobs, and any other pod in its namespace labelled with its name.
    pub fn pods_of(&self, object: &ScaledJob) -> Vec<Arc<Pod>> {
        self.pods
            .get(&object.namespace().unwrap_or_default(), &object.name_any())
    }

    /// Counts `job`, just created, until the watch shows it.
    pub fn created(&self, mut job: Job, now: Instant) {
        trim_job(&mut job);
        self.created
            .lock()
            .expect("created Jobs lock")
            .insert(Arc::new(job), now);
    }

    /// What the API server said of an overdue Job: there (counted on, and waited for again),
    /// or gone.
    pub fn confirmed(&self, namespace: &str, name: &str, found: Option<Job>, now: Instant) {
        let mut created = self.created.lock().expect("created Jobs lock");
        created.forget(namespace, name);
        if let Some(mut job) = found {
            trim_job(&mut job);
            created.insert(Arc::new(job), now);
        }
    }
}

/// Jobs this process created and the watch has not shown yet, with when.
#[derive(Default)]
struct CreatedJobs(HashMap<ObjectRef<Job>, (Instant, Arc<Job>)>);

impl CreatedJobs {
    fn insert(&mut self, job: Arc<Job>, now: Instant) {
        self.0.insert(ObjectRef::from_obj(job.as_ref()), (now, job));
    }

    fn forget(&mut self, namespace: &str, name: &str) {
        self.0.remove(&ObjectRef::new(name).within(namespace));
    }

    /// Forgets the created Jobs of `scaled_job` that `shown` (its Jobs in the store) holds, and
    /// returns the others, with the names of those unseen for [`STORE_LAG`].
    fn unseen(
        &mut self,
        namespace: &str,
        scaled_job: &str,
        shown: &[Arc<Job>],
        now: Instant,
    ) -> (Vec<Arc<Job>>, Vec<String>) {
        let of_scaled_job = |job: &Job| {
            job.namespace().as_deref() == Some(namespace)
                && job.labels().get(SCALED_JOB_LABEL).map(String::as_str) == Some(scaled_job)
        };
        self.0.retain(|_, (_, job)| {
            !(of_scaled_job(job) && shown.iter().any(|s| s.name_any() == job.name_any()))
        });
        let mut unseen = Vec::new();
        let mut overdue = Vec::new();
        for (at, job) in self.0.values() {
            if of_scaled_job(job) {
                unseen.push(job.clone());
                if now.duration_since(*at) >= STORE_LAG {
                    overdue.push(job.name_any());
                }
            }
        }
        (unseen, overdue)
    }
}

/// A Job keeps what the polls read: its name, labels, owners and creation time, and whether
/// and how it finished.
fn trim_job(job: &mut Job) {
    let metadata = &mut job.metadata;
    metadata.annotations = None;
    metadata.managed_fields = None;
    metadata.finalizers = None;
    job.spec = None;
    let status = job.status.take().unwrap_or_default();
    job.status = Some(JobStatus {
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .map(|c| JobCondition {
                    type_: c.type_,
                    status: c.status,
                    ..JobCondition::default()
                })
                .collect()
        }),
        failed: status.failed,
        ..JobStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scaling::scaled_job::accounting::{Outcome, outcome, retries};

    fn job(namespace: &str, scaled_job: &str, name: &str) -> Arc<Job> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace, "labels": {SCALED_JOB_LABEL: scaled_job}}
            }))
            .unwrap(),
        )
    }

    fn names(jobs: &[Arc<Job>]) -> Vec<String> {
        let mut names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        names.sort();
        names
    }

    #[test]
    fn created_jobs_count_until_the_store_shows_them() {
        let start = Instant::now();
        let mut created = CreatedJobs::default();
        created.insert(job("ns", "worker", "worker-a"), start);
        created.insert(job("ns", "worker", "worker-b"), start);
        created.insert(job("ns", "other", "other-a"), start);
        created.insert(job("elsewhere", "worker", "worker-c"), start);
        let (unseen, overdue) = created.unseen("ns", "worker", &[], start);
        assert_eq!(names(&unseen), ["worker-a", "worker-b"]);
        assert!(overdue.is_empty());
        let shown = [job("ns", "worker", "worker-a")];
        let (unseen, _) = created.unseen("ns", "worker", &shown, start);
        assert_eq!(names(&unseen), ["worker-b"], "the store shows worker-a");
        let (unseen, _) = created.unseen("ns", "worker", &[], start);
        assert_eq!(
            names(&unseen),
            ["worker-b"],
            "once shown, a Job is the store's to keep or drop"
        );
        let (unseen, _) = created.unseen("ns", "other", &[], start);
        assert_eq!(names(&unseen), ["other-a"]);
    }

    #[test]
    fn a_created_job_the_store_never_shows_is_checked_after_the_store_lag() {
        let start = Instant::now();
        let mut created = CreatedJobs::default();
        created.insert(job("ns", "worker", "worker-a"), start);
        created.insert(job("ns", "worker", "worker-b"), start + STORE_LAG / 2);
        let (unseen, overdue) = created.unseen("ns", "worker", &[], start + STORE_LAG);
        assert_eq!(names(&unseen), ["worker-a", "worker-b"], "still counted");
        assert_eq!(overdue, ["worker-a"]);
        created.forget("ns", "worker-a");
        let (unseen, overdue) = created.unseen("ns", "worker", &[], start + STORE_LAG);
        assert_eq!(names(&unseen), ["worker-b"]);
        assert!(overdue.is_empty());
    }

    #[test]
    fn a_trimmed_job_keeps_what_the_polls_read() {
        let mut job: Job = serde_json::from_value(json!({
            "metadata": {"name": "worker-a", "namespace": "ns", "uid": "u-1",
                         "labels": {SCALED_JOB_LABEL: "worker", "windlass.dev/scaled-job-generation": "2"},
                         "annotations": {"a": "b"}, "creationTimestamp": "2026-11-23T10:00:00Z",
                         "ownerReferences": [{"apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob", "name": "worker", "uid": "s-1"}]},
            "spec": {"backoffLimit": 2, "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}},
            "status": {"failed": 3, "succeeded": 0, "active": 0,
                       "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}
        }))
        .unwrap();
        let before = (
            outcome(&job),
            retries(&job, Outcome::Failed),
            job.metadata.clone(),
        );
        trim_job(&mut job);
        assert_eq!(outcome(&job), before.0);
        assert_eq!(retries(&job, Outcome::Failed), before.1);
        let metadata = before.2;
        assert_eq!(job.metadata.labels, metadata.labels);
        assert_eq!(job.metadata.owner_references, metadata.owner_references);
        assert_eq!(job.metadata.creation_timestamp, metadata.creation_timestamp);
        assert_eq!(job.metadata.uid, metadata.uid);
        assert_eq!(job.metadata.annotations, None);
        assert_eq!(job.spec, None);
    }
}
