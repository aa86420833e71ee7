//! The JobSchedule controller: enqueues one message per cron tick on the target ScaledJob's queue.
//!
//! A tick is first claimed in status (`pendingScheduleTime`, written with the object's
//! resourceVersion as a precondition, so two writers cannot both claim it), then sent, then
//! confirmed (`lastScheduleTime`). Its message id is derived from the schedule's UID and the
//! tick, so a send that is retried after a crash or a restart carries the same id, and a FIFO
//! queue drops the repeat by itself. A tick is never claimed twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::queue::{self, EnqueueError};
use super::schedule::{Due, Schedule, due, starting_deadline};
use crate::apis::conditions::{self, condition};
use crate::apis::job_schedule::{JobSchedule, JobScheduleStatus};
use crate::failpoints;
use crate::scaling::{Scaling, publish};
use crate::status::apply_status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("JobSchedule has no namespace")]
    NoNamespace,
    #[error("reading or writing the JobSchedule: {0}")]
    Api(#[source] kube::Error),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// Runs the controller until `shutdown`.
pub async fn run(scaling: Arc<Scaling>, shutdown: CancellationToken) {
    Controller::new(scaling.watched::<JobSchedule>(), watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, scaling)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(object: Arc<JobSchedule>, error: &Error, _: Arc<Scaling>) -> Action {
    warn!(name = %object.name_any(), %error, "JobSchedule reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// The id of the message for one tick of one schedule: the same on every attempt.
pub fn message_id(schedule_uid: &str, tick: Timestamp) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("windlass.dev/jobschedule/{schedule_uid}/{tick}").as_bytes(),
    )
    .to_string()
}

async fn reconcile(cached: Arc<JobSchedule>, scaling: Arc<Scaling>) -> Result<Action, Error> {
    let namespace = cached.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<JobSchedule> = Api::namespaced(scaling.client.clone(), &namespace);
    // The cache may lag our own last status write; deciding on a stale status could send a
    // tick twice, so each pass starts from the API server's copy.
    let Some(object) = api.get_opt(&cached.name_any()).await.map_err(Error::Api)? else {
        return Ok(Action::await_change());
    };
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let mut version = object.resource_version();
    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let now = Timestamp::now();
    let mut status = JobScheduleStatus {
        observed_generation: generation,
        ..previous.clone()
    };
    let schedule = match Schedule::parse_firing(&object.spec.schedule, &object.spec.time_zone) {
        Ok(schedule) => schedule,
        Err(error) => {
            status.next_schedule_time = None;
            set_ready(
                &mut status,
                false,
                "InvalidSchedule",
                error.to_string(),
                generation,
                now,
            );
            report(&scaling, &object, &previous, &status).await;
            write_status(&api, &object, &previous, &status, version.as_deref()).await?;
            return Ok(Action::await_change());
        }
    };

    let outcome = enqueue_due_tick(
        &scaling,
        &api,
        &object,
        &schedule,
        &mut status,
        &mut version,
        now,
    )
    .await;
    if let Err(Error::Api(error)) = outcome {
        // Someone else changed the object between our read and our claim: start over.
        return Err(Error::Api(error));
    }
    let now = Timestamp::now();
    status.next_schedule_time = schedule.next_after(now).map(Time);
    match &outcome {
        Ok(()) => set_ready(
            &mut status,
            true,
            "Scheduled",
            format!("enqueueing to ScaledJob {}", object.spec.scaled_job),
            generation,
            now,
        ),
        Err(error) => set_ready(
            &mut status,
            false,
            "EnqueueFailed",
            error.to_string(),
            generation,
            now,
        ),
    }
    report(&scaling, &object, &previous, &status).await;
    write_status(&api, &object, &previous, &status, version.as_deref()).await?;
    outcome?;
    Ok(match status.next_schedule_time.as_ref() {
        // A little past the tick, so the clock has surely reached it.
        Some(next) => Action::requeue(
            Duration::try_from(next.0.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100),
        ),
        None => Action::await_change(),
    })
}

/// Sends a claimed but unconfirmed tick again, then claims, sends and confirms the tick due now.
async fn enqueue_due_tick(
    scaling: &Scaling,
    api: &Api<JobSchedule>,
    object: &JobSchedule,
    schedule: &Schedule,
    status: &mut JobScheduleStatus,
    version: &mut Option<String>,
    now: Timestamp,
) -> Result<(), Error> {
    let deadline = starting_deadline(object.spec.starting_deadline_seconds);
    if let Some(pending) = status.pending_schedule_time.clone() {
        if now.duration_since(pending.0) <= deadline {
            send(scaling, object, pending.0).await?;
            confirm(status, pending.0, object);
        } else {
            status.pending_schedule_time = None;
            status.last_missed_time = Some(pending);
        }
    }
    let since = [
        status.last_schedule_time.as_ref(),
        status.last_missed_time.as_ref(),
        object.metadata.creation_timestamp.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|time| time.0)
    .max()
    .unwrap_or(now);
    match due(schedule, now, since, deadline, object.spec.suspend) {
        Due::Nothing => Ok(()),
        Due::Missed(tick) => {
            status.last_missed_time = Some(Time(tick));
            if !object.spec.suspend {
                let note = format!("the tick at {tick} was more than {deadline:#} late; skipped");
                publish(scaling, object, EventType::Warning, "MissedSchedule", note).await;
            }
            Ok(())
        }
        Due::Enqueue(tick) => {
            // The claim is a write of its own: it must land before the message is sent.
            let claimed = JobScheduleStatus {
                pending_schedule_time: Some(Time(tick)),
                ..status.clone()
            };
            // Only if the object is still at that version: a status computed from an older copy must
            // never overwrite a newer `lastScheduleTime`.
            let written = apply_status(api, &object.name_any(), &claimed, version.as_deref())
                .await
                .map_err(Error::Api)?;
            *version = written.resource_version();
            *status = claimed;
            failpoints::reached(failpoints::TICK_CLAIMED_BEFORE_SENT);
            send(scaling, object, tick).await?;
            confirm(status, tick, object);
            Ok(())
        }
    }
}

async fn send(
    scaling: &Scaling,
    object: &JobSchedule,
    tick: Timestamp,
) -> Result<(), EnqueueError> {
    let namespace = object.namespace().unwrap_or_default();
    let scaled_job = queue::scaled_job(scaling, &namespace, &object.spec.scaled_job).await?;
    let id = message_id(&object.uid().unwrap_or_default(), tick);
    let payload = object.spec.payload.clone().unwrap_or_default();
    let body = super::message_body(
        &id,
        &payload,
        Timestamp::now(),
        Some((&object.name_any(), tick)),
    );
    queue::send(scaling, &scaled_job, &id, body).await?;
    info!(name = %object.name_any(), %namespace, %tick, %id, "scheduled job enqueued");
    Ok(())
}

fn confirm(status: &mut JobScheduleStatus, tick: Timestamp, object: &JobSchedule) {
    status.pending_schedule_time = None;
    status.last_schedule_time = Some(Time(tick));
    status.last_message_id = Some(message_id(&object.uid().unwrap_or_default(), tick));
}

fn set_ready(
    status: &mut JobScheduleStatus,
    ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.conditions = vec![condition(
        &status.conditions,
        conditions::READY,
        ready,
        reason,
        message,
        generation,
        now,
    )];
}

/// A Warning Event when the schedule newly becomes not Ready, or for a different reason.
async fn report(
    scaling: &Scaling,
    object: &JobSchedule,
    previous: &JobScheduleStatus,
    status: &JobScheduleStatus,
) {
    let Some(ready) = status.conditions.first().filter(|c| c.status == "False") else {
        return;
    };
    if previous.conditions.first().map(|c| &c.message) != Some(&ready.message) {
        publish(
            scaling,
            object,
            EventType::Warning,
            &ready.reason,
            ready.message.clone(),
        )
        .await;
    }
}

async fn write_status(
    api: &Api<JobSchedule>,
    object: &JobSchedule,
    previous: &JobScheduleStatus,
    status: &JobScheduleStatus,
    version: Option<&str>,
) -> Result<(), Error> {
    if status == previous {
        return Ok(());
    }
    apply_status(api, &object.name_any(), status, version)
        .await
        .map(drop)
        .map_err(Error::Api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_has_one_message_id() {
        let tick: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(message_id("uid-1", tick), message_id("uid-1", tick));
        assert_ne!(message_id("uid-1", tick), message_id("uid-2", tick));
        assert_ne!(
            message_id("uid-1", tick),
            message_id("uid-1", tick + jiff::SignedDuration::from_secs(60))
        );
    }
}
