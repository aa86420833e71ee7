//! The ScaledJob controller: one polling loop per object. Each poll counts finished Jobs into
//! the status counters (once each), reads the triggers, creates the Jobs the strategy asks for,
//! writes status, and only then deletes counted Jobs beyond the history limits. Polls read Jobs
//! and pods from watched stores ([`super::store`]), never with a LIST. A ScaledJob has no
//! finalizer, so its loop ends itself once the object is gone from the controller's store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::accounting::{beyond_history, count_finished, counts};
use super::strategy::{JobPolicy, QueueReading, jobs_to_create};
use crate::apis::conditions::{self, condition};
use crate::apis::labels::{
    PAUSED_ANNOTATION, SCALED_JOB_GENERATION_LABEL, SCALED_JOB_LABEL, autoscaling_annotation,
};
use crate::apis::scaled_job::{RolloutStrategy, ScaledJob, ScaledJobStatus};
use crate::apis::trigger_auth::UserKind;
use crate::apis::triggers::TriggerValue;
use crate::failpoints;
use crate::metrics::keda::{ScalableKind, ScalerSeries};
use crate::metrics::{ErrorLabels, FinishedJobs, ObjectLabels, TriggerLabels};
use crate::scale_outs::Demand;
use crate::scaling::auth_users::{AuthUses, UserKey};
use crate::scaling::scalers::Scaler;
use crate::scaling::triggers::SetupError;
use crate::scaling::{
    SETUP_LIFETIME, Scaling, publish, report_event_once, trigger_readiness, triggers,
};
use crate::status::apply_status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ScaledJob has no namespace")]
    NoNamespace,
}

/// Runs the controller until `shutdown`.
pub async fn run(scaling: Arc<Scaling>, shutdown: CancellationToken) {
    let controller = Controller::new(scaling.watched::<ScaledJob>(), watcher::Config::default());
    let context = Arc::new(Context {
        scaling: scaling.clone(),
        scaled_jobs: controller.store(),
    });
    controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    scaling.scaled_job_loops.stop_all();
}

struct Context {
    scaling: Arc<Scaling>,
    /// The controller's own store: where a loop sees that its object is gone.
    scaled_jobs: Store<ScaledJob>,
}

fn user(object: &ScaledJob) -> UserKey {
    UserKey {
        kind: UserKind::ScaledJob,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    }
}

async fn reconcile(object: Arc<ScaledJob>, context: Arc<Context>) -> Result<Action, Error> {
    let scaling = &context.scaling;
    object.namespace().ok_or(Error::NoNamespace)?;
    if object.metadata.deletion_timestamp.is_some() {
        // Its Jobs go with it through their owner references.
        scaling.scaled_job_loops.stop(&object);
        scaling.auth_users.forget(&user(&object));
        scaling.metrics.keda.forget(
            ScalableKind::ScaledJob,
            &object.namespace().unwrap_or_default(),
            &object.name_any(),
        );
        return Ok(Action::await_change());
    }
    let (for_loop, scaled_jobs) = (scaling.clone(), context.scaled_jobs.clone());
    scaling.scaled_job_loops.ensure(object, |latest, cancel| {
        tokio::spawn(job_loop(for_loop, scaled_jobs, latest, cancel));
    });
    Ok(Action::await_change())
}

/// Whether `object` is no longer in the cluster: deleted, or replaced by another of its name.
async fn is_gone(scaled_jobs: &Store<ScaledJob>, object: &ScaledJob) -> bool {
    // A store whose watch has ended holds nothing more to wait for.
    let _ = scaled_jobs.wait_until_ready().await;
    scaled_jobs
        .get(&ObjectRef::from_obj(object))
        .is_none_or(|current| current.metadata.uid != object.metadata.uid)
}

fn error_policy(object: Arc<ScaledJob>, error: &Error, _: Arc<Context>) -> Action {
    warn!(name = %object.name_any(), %error, "ScaledJob reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// One trigger, ready to read.
struct PolledTrigger {
    name: String,
    scaler: Box<dyn Scaler>,
    keda: ScalerSeries,
}

struct Setup {
    triggers: Vec<PolledTrigger>,
    built_at: tokio::time::Instant,
}

/// Builds the loop's setup and reports which authentications it resolved.
async fn setup_reported(scaling: &Scaling, object: &ScaledJob) -> Result<Setup, SetupError> {
    let mut uses = AuthUses::default();
    let built = setup(scaling, object, &mut uses).await;
    let namespace = object.namespace().unwrap_or_default();
    scaling.auth_users.report(
        user(object),
        uses.completed(&object.spec.triggers, &namespace, &built),
    );
    built
}

async fn setup(
    scaling: &Scaling,
    object: &ScaledJob,
    uses: &mut AuthUses,
) -> Result<Setup, SetupError> {
    let namespace = object.namespace().unwrap_or_default();
    let env = triggers::EnvSource {
        pod_spec: serde_json::to_value(&object.spec.job_target_ref.template.spec)
            .unwrap_or_default(),
        owner: format!("ScaledJob {:?} jobTargetRef", object.name_any()),
    };
    let container = object.spec.env_source_container_name.as_deref();
    let mut built = Vec::new();
    for (index, trigger) in object.spec.triggers.iter().enumerate() {
        let scaler = triggers::scaler(scaling, &namespace, trigger, &env, container, uses)
            .await
            .map_err(|e| e.at(index))?;
        let keda = triggers::keda_series(
            ScalableKind::ScaledJob,
            &namespace,
            &object.name_any(),
            index,
            trigger,
            scaler.as_ref(),
        );
        built.push(PolledTrigger {
            name: trigger
                .name
                .clone()
                .unwrap_or_else(|| format!("trigger-{index}")),
            scaler,
            keda,
        });
    }
    let keda_series: Vec<ScalerSeries> = built.iter().map(|t| t.keda.clone()).collect();
    scaling.metrics.keda.retain_scalers(
        ScalableKind::ScaledJob,
        &namespace,
        &object.name_any(),
        &keda_series,
    );
    Ok(Setup {
        triggers: built,
        built_at: tokio::time::Instant::now(),
    })
}

fn policy(object: &ScaledJob) -> JobPolicy {
    let strategy = &object.spec.scaling_strategy;
    JobPolicy {
        min: object.spec.min_replica_count.into(),
        max: object.spec.max_replica_count.into(),
        strategy: strategy.strategy,
        queue_length_deduction: strategy
            .custom_scaling_queue_length_deduction
            .unwrap_or(0)
            .into(),
        // The schema admits only decimal numbers, and every one of them parses.
        running_job_percentage: strategy
            .custom_scaling_running_job_percentage
            .as_deref()
            .and_then(|p| p.parse().ok()),
        calculation: strategy.multiple_scalers_calculation,
    }
}

async fn job_loop(
    scaling: Arc<Scaling>,
    scaled_jobs: Store<ScaledJob>,
    mut latest: watch::Receiver<Arc<ScaledJob>>,
    cancel: CancellationToken,
) {
    let first = latest.borrow_and_update().clone();
    let interval = Duration::from_secs(first.spec.polling_interval.max(1) as u64);
    let mut ready: Option<Setup> = None;
    let mut last_problem: Option<String> = None;
    let mut rolled_out = false;
    // Polling before the Jobs are listed would miss counted Jobs, and count them again later.
    tokio::select! {
        _ = cancel.cancelled() => return,
        listed = scaling.scaled_job_store.wait_until_listed() => if listed.is_err() { return },
    }
    let mut clock = scaling.queue_depths.poll_clock(interval);
    loop {
        let tick = tokio::select! {
            _ = cancel.cancelled() => {
                // Stopped for a deletion while polling: the deletion may have dropped the
                // object's KEDA series before the poll wrote them again.
                if !scaling.scaled_job_loops.runs(&first) {
                    scaling.metrics.keda.forget(
                        ScalableKind::ScaledJob,
                        &first.namespace().unwrap_or_default(),
                        &first.name_any(),
                    );
                }
                return;
            }
            tick = clock.tick() => tick,
        };
        scaling
            .metrics
            .scaler_poll_lag
            .observe(tick.elapsed().as_secs_f64());
        let object = latest.borrow().clone();
        if is_gone(&scaled_jobs, &object).await {
            scaling.auth_users.forget(&user(&object));
            scaling.metrics.keda.forget(
                ScalableKind::ScaledJob,
                &object.namespace().unwrap_or_default(),
                &object.name_any(),
            );
            scaling.scaled_job_loops.ended(&object);
            return;
        }
        if !rolled_out {
            rolled_out = roll_out(&scaling, &object).await;
        }
        if ready
            .as_ref()
            .is_some_and(|s| s.built_at.elapsed() >= SETUP_LIFETIME)
        {
            ready = None;
        }
        if ready.is_none() {
            match setup_reported(&scaling, &object).await {
                Ok(built) => {
                    if let Some(first) = built.triggers.first() {
                        clock.follow(first.scaler.source());
                    }
                    ready = Some(built);
                }
                Err(error) => {
                    count_error(&scaling, &object, error.metric_label());
                    scaling.metrics.keda.object_error(
                        ScalableKind::ScaledJob,
                        &object.namespace().unwrap_or_default(),
                        &object.name_any(),
                    );
                    let message = error.to_string();
                    warn!(name = %object.name_any(), %message, "ScaledJob cannot poll");
                    report_event_once(
                        &scaling,
                        object.as_ref(),
                        error.reason(),
                        &message,
                        &mut last_problem,
                    )
                    .await;
                    let previous = object.status.clone().unwrap_or_default();
                    let mut status = previous.clone();
                    status.observed_generation = object.metadata.generation;
                    status.conditions = vec![condition(
                        &previous.conditions,
                        conditions::READY,
                        false,
                        error.reason(),
                        message,
                        object.metadata.generation,
                        Timestamp::now(),
                    )];
                    write_status(&scaling, &object, &previous, &status).await;
                    continue;
                }
            }
        }
        let setup = ready.as_ref().expect("set above");
        if let Err(error) = poll(&scaling, &object, setup, tick, &mut last_problem).await {
            warn!(name = %object.name_any(), %error, "ScaledJob poll failed");
            count_error(&scaling, &object, "kubernetes");
        }
    }
}

fn count_error(scaling: &Scaling, object: &ScaledJob, error: &str) {
    let labels = ErrorLabels {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        error: error.to_owned(),
    };
    scaling.metrics.scaler_errors.get_or_create(&labels).inc();
}

/// On a spec change, the `default` rollout deletes unfinished Jobs made from an older spec;
/// `gradual` lets them finish. Returns whether the rollout is done. Once per spec, so it lists
/// the Jobs afresh rather than read a store that may not show the last ones the previous
/// spec's loop created.
async fn roll_out(scaling: &Scaling, object: &ScaledJob) -> bool {
    let gradual = object
        .spec
        .rollout
        .as_ref()
        .is_some_and(|r| r.strategy == RolloutStrategy::Gradual);
    if gradual {
        return true;
    }
    let Ok(jobs) = list_jobs(scaling, object).await else {
        return false;
    };
    let generation = object.metadata.generation.unwrap_or_default().to_string();
    let api: Api<Job> = Api::namespaced(
        scaling.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    let propagation = match object.spec.rollout.as_ref().map(|r| r.propagation_policy) {
        Some(crate::apis::scaled_job::PropagationPolicy::Foreground) => DeleteParams::foreground(),
        _ => DeleteParams::background(),
    };
    for job in jobs {
        let old = job
            .labels()
            .get(SCALED_JOB_GENERATION_LABEL)
            .is_some_and(|g| *g != generation);
        if old
            && super::accounting::outcome(&job).is_none()
            && api.delete(&job.name_any(), &propagation).await.is_err()
        {
            return false;
        }
    }
    true
}

async fn list_jobs(scaling: &Scaling, object: &ScaledJob) -> Result<Vec<Job>, kube::Error> {
    let api: Api<Job> = Api::namespaced(
        scaling.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    let selector = format!("{SCALED_JOB_LABEL}={}", object.name_any());
    let jobs = api.list(&ListParams::default().labels(&selector)).await?;
    let uid = object.metadata.uid.as_deref();
    Ok(jobs
        .items
        .into_iter()
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect())
}

async fn poll(
    scaling: &Scaling,
    object: &ScaledJob,
    setup: &Setup,
    tick: tokio::time::Instant,
    last_problem: &mut Option<String>,
) -> Result<(), kube::Error> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let now = Timestamp::now();
    let jobs = jobs_of(scaling, object).await;
    let pods = scaling.scaled_job_store.pods_of(object);
    let previous = object.status.clone().unwrap_or_default();
    let mut status = count_finished(&previous, &jobs);

    let mut readings = Vec::new();
    let mut errors = Vec::new();
    // A trigger that cannot be read keeps the value it last read.
    status
        .trigger_values
        .retain(|name, _| setup.triggers.iter().any(|t| t.name == *name));
    for polled in &setup.triggers {
        let trigger = &polled.name;
        let started = tokio::time::Instant::now();
        let read = polled.scaler.read(tick).await;
        let latency = started.elapsed();
        match read {
            Ok(reading) => {
                scaling.metrics.keda.read(
                    &polled.keda,
                    reading.value,
                    Some(reading.value > reading.activation),
                    latency,
                );
                let labels = TriggerLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    trigger: trigger.clone(),
                };
                scaling
                    .metrics
                    .scaler_value
                    .get_or_create(&labels)
                    .set(reading.value);
                status.trigger_values.insert(
                    trigger.clone(),
                    TriggerValue {
                        value: reading.value,
                        target: reading.target,
                    },
                );
                if reading.value > reading.activation {
                    readings.push(QueueReading {
                        queue_length: reading.value,
                        target: reading.target,
                    });
                }
            }
            Err(error) => {
                scaling.metrics.keda.read_failed(&polled.keda, latency);
                errors.push(format!("{trigger}: {error}"));
            }
        }
    }
    if errors.is_empty() {
        scaling
            .metrics
            .keda
            .object_polled(ScalableKind::ScaledJob, &namespace, &name);
    }
    let active = !readings.is_empty();
    let counts = counts(
        &jobs,
        &pods,
        &object.spec.scaling_strategy.pending_pod_conditions,
    );
    let paused = is_paused(object.annotations());
    // A paused ScaledJob creates no Job, as KEDA's stops its loop; the triggers are still read
    // so status shows the queue. A trigger that cannot be read creates nothing beyond
    // minReplicaCount.
    let create = if paused {
        0
    } else if errors.is_empty() {
        jobs_to_create(&policy(object), &readings, counts)
    } else {
        jobs_to_create(&policy(object), &[], counts)
    };
    if create > 0 {
        let name = object.name_any();
        let interval =
            jiff::SignedDuration::from_secs(i64::from(object.spec.polling_interval.max(1)));
        scaling.scale_outs.raised(
            object.object_ref(&()),
            BTreeMap::from([(SCALED_JOB_LABEL.to_owned(), name.clone())]),
            job_demand(object, counts.running + create),
            interval,
            jiff::Timestamp::now(),
        );
    }
    let labels = ObjectLabels {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    for _ in 0..create {
        create_job(scaling, object).await?;
        scaling
            .metrics
            .scaled_jobs
            .created
            .get_or_create(&labels)
            .inc();
    }
    if create > 0 {
        info!(%namespace, %name, created = create, running = counts.running, pending = counts.pending, "created Jobs");
        publish(
            scaling,
            object,
            EventType::Normal,
            "CreatedJobs",
            format!(
                "Created {create} Job(s); {} were unfinished",
                counts.running
            ),
        )
        .await;
    }
    scaling
        .metrics
        .scaler_active
        .get_or_create(&labels)
        .set(i64::from(active));

    let generation = object.metadata.generation;
    let existing = &previous.conditions;
    let ready = trigger_readiness(
        scaling,
        object,
        existing,
        &errors,
        last_problem,
        generation,
        now,
    )
    .await;
    status.observed_generation = generation;
    status.conditions = vec![
        ready,
        condition(
            existing,
            conditions::ACTIVE,
            active,
            if active {
                "ScalerActive"
            } else {
                "ScalerNotActive"
            },
            "",
            generation,
            now,
        ),
        condition(
            existing,
            conditions::PAUSED,
            paused,
            if paused {
                "ScaledJobPaused"
            } else {
                "ScaledJobUnpaused"
            },
            "",
            generation,
            now,
        ),
    ];
    status.running_jobs = counts.running + create;
    status.pending_jobs = counts.pending + create;
    if active {
        status.last_active_time = Some(Time(now));
    }
    if create > 0 {
        status.last_scale_time = Some(Time(now));
    }
    let jobs_metrics = &scaling.metrics.scaled_jobs;
    jobs_metrics
        .running
        .get_or_create(&labels)
        .set(status.running_jobs);
    jobs_metrics
        .pending
        .get_or_create(&labels)
        .set(status.pending_jobs);
    if !write_status(scaling, object, &previous, &status).await {
        return Ok(());
    }
    jobs_metrics.finished(&labels, finished(&previous), finished(&status));
    // Only Jobs the written status has counted may go.
    let api: Api<Job> = Api::namespaced(scaling.client.clone(), &namespace);
    let spec = &object.spec;
    for doomed in beyond_history(
        &jobs,
        &status.counted_jobs,
        spec.successful_jobs_history_limit,
        spec.failed_jobs_history_limit,
    ) {
        // The store may still show a Job an earlier poll deleted.
        match api.delete(&doomed, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The Jobs `object` owns, from the store, with the ones this process created that the store
/// does not show yet. One the store has not shown for a while is looked up: a Job deleted
/// before its watch event came would otherwise count forever.
async fn jobs_of(scaling: &Scaling, object: &ScaledJob) -> Vec<Arc<Job>> {
    let store = &scaling.scaled_job_store;
    let own = store.jobs_of(object, tokio::time::Instant::now());
    if own.overdue.is_empty() {
        return own.jobs;
    }
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(scaling.client.clone(), &namespace);
    for name in &own.overdue {
        // Unanswered, the Job stays counted: counting one that may be gone is safer than
        // creating one twice.
        if let Ok(found) = api.get_opt(name).await {
            store.confirmed(&namespace, name, found, tokio::time::Instant::now());
        }
    }
    store.jobs_of(object, tokio::time::Instant::now()).jobs
}

fn finished(status: &ScaledJobStatus) -> FinishedJobs {
    FinishedJobs {
        succeeded: status.succeeded,
        failed: status.failed,
        retries: status.retries,
    }
}

/// The Job for one unit of work: jobTargetRef, labelled and owned by the ScaledJob.
pub fn job_for(object: &ScaledJob) -> Job {
    let name = object.name_any();
    let labels = BTreeMap::from([
        (SCALED_JOB_LABEL.to_owned(), name.clone()),
        (
            SCALED_JOB_GENERATION_LABEL.to_owned(),
            object.metadata.generation.unwrap_or_default().to_string(),
        ),
    ]);
    let mut spec = object.spec.job_target_ref.clone();
    let template_labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    template_labels.insert(SCALED_JOB_LABEL.to_owned(), name.clone());
    Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: object.namespace(),
            labels: Some(labels),
            owner_references: object.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The pods `jobs` unfinished Jobs of `object` run at once: each its parallelism of its template.
fn job_demand(object: &ScaledJob, jobs: i64) -> Option<Demand> {
    let spec = job_for(object).spec?;
    let per_job = spec.parallelism.unwrap_or(1).max(0) as usize;
    Demand::of(
        object.annotations(),
        &object.namespace().unwrap_or_default(),
        &spec.template,
        jobs.max(0) as usize * per_job,
    )
}

async fn create_job(scaling: &Scaling, object: &ScaledJob) -> Result<(), kube::Error> {
    let api: Api<Job> = Api::namespaced(
        scaling.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    let created = api.create(&PostParams::default(), &job_for(object)).await?;
    failpoints::reached(failpoints::JOB_CREATED_BEFORE_COUNTED);
    scaling
        .scaled_job_store
        .created(created, tokio::time::Instant::now());
    Ok(())
}

/// Writes status when it changed (lastActiveTime alone at most once a minute). Returns whether
/// the status in the API server is now `status`.
/// `autoscaling.windlass.dev/paused: "true"`, or KEDA's `autoscaling.keda.sh/paused` (Windlass's
/// key wins when both are set).
fn is_paused(annotations: &BTreeMap<String, String>) -> bool {
    autoscaling_annotation(annotations, PAUSED_ANNOTATION).is_some_and(|v| v == "true")
}

async fn write_status(
    scaling: &Scaling,
    object: &ScaledJob,
    previous: &ScaledJobStatus,
    status: &ScaledJobStatus,
) -> bool {
    let stale_activity = crate::scaling::activity_is_stale(
        previous.last_active_time.as_ref(),
        status.last_active_time.as_ref(),
    );
    let unchanged = ScaledJobStatus {
        last_active_time: previous.last_active_time.clone(),
        ..status.clone()
    } == *previous;
    if unchanged && !stale_activity {
        return true;
    }
    let api: Api<ScaledJob> = Api::namespaced(
        scaling.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    match apply_status(&api, &object.name_any(), &status, None).await {
        Ok(_) => true,
        Err(error) => {
            warn!(name = %object.name_any(), %error, "writing ScaledJob status failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::scaled_job::strategy::JobCounts;
    use serde_json::json;

    #[test]
    fn paused_under_either_prefix_and_windlass_wins() {
        let of = |pairs: &[(&str, &str)]| {
            is_paused(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert!(of(&[(PAUSED_ANNOTATION, "true")]));
        assert!(of(&[("autoscaling.keda.sh/paused", "true")]));
        assert!(!of(&[("autoscaling.keda.sh/paused", "yes")]));
        assert!(!of(&[
            ("autoscaling.keda.sh/paused", "true"),
            (PAUSED_ANNOTATION, "false")
        ]));
        assert!(!of(&[]));
    }

    #[test]
    fn jobs_are_labelled_owned_and_named_after_their_scaled_job() {
        let object: ScaledJob = serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "data-processor", "namespace": "jobs", "uid": "u-1", "generation": 3},
            "spec": {"jobTargetRef": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "w", "image": "i"}]}}},
                     "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]}
        }))
        .unwrap();
        let job = job_for(&object);
        assert_eq!(
            job.metadata.generate_name.as_deref(),
            Some("data-processor-")
        );
        assert_eq!(
            job.metadata.labels.as_ref().unwrap()[SCALED_JOB_GENERATION_LABEL],
            "3"
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(
            spec.template.metadata.unwrap().labels.unwrap()[SCALED_JOB_LABEL],
            "data-processor"
        );
    }

    fn with_strategy(scaling_strategy: serde_json::Value) -> ScaledJob {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
            "metadata": {"name": "worker", "namespace": "jobs"},
            "spec": {"jobTargetRef": {"template": {}}, "maxReplicaCount": 10,
                     "scalingStrategy": scaling_strategy,
                     "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn custom_without_a_running_job_percentage_is_the_default_strategy() {
        // KEDA (pkg/scaling/executor/scale_jobs.go) falls back to `default` when
        // customScalingRunningJobPercentage is missing: running Jobs are all still busy.
        let eight_messages = [QueueReading {
            queue_length: 8.0,
            target: 1.0,
        }];
        let four_running = JobCounts {
            running: 4,
            pending: 0,
        };
        for strategy in [
            json!({"strategy": "custom"}),
            json!({"strategy": "custom", "customScalingQueueLengthDeduction": 1}),
        ] {
            let object = with_strategy(strategy.clone());
            assert_eq!(
                jobs_to_create(&policy(&object), &eight_messages, four_running),
                4,
                "{strategy}"
            );
        }
        let percentage_only = with_strategy(
            json!({"strategy": "custom", "customScalingRunningJobPercentage": "0.5"}),
        );
        assert_eq!(
            jobs_to_create(&policy(&percentage_only), &eight_messages, four_running),
            6,
            "no deduction given: 8 - 0 - trunc(4 * 0.5)"
        );
    }
}
