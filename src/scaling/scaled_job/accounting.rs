//! ScaledJob bookkeeping without I/O: which Jobs are running or pending, which finished Jobs
//! still need counting, and which counted Jobs history limits remove.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::strategy::JobCounts;
use crate::apis::scaled_job::ScaledJobStatus;

/// How a Job ended, if it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

pub fn outcome(job: &Job) -> Option<Outcome> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if holds("Complete") {
        Some(Outcome::Succeeded)
    } else if holds("Failed") {
        Some(Outcome::Failed)
    } else {
        None
    }
}

/// Pod failures the Job's backoffLimit retried: every failure of a Job that succeeded, all but
/// the last of one that failed.
pub fn retries(job: &Job, outcome: Outcome) -> i64 {
    let failures = i64::from(job.status.as_ref().and_then(|s| s.failed).unwrap_or(0));
    match outcome {
        Outcome::Succeeded => failures,
        Outcome::Failed => (failures - 1).max(0),
    }
}

/// Unfinished Jobs, and those of them whose pod has not started: no pod yet, or a pod that does
/// not meet every `pendingPodConditions` condition (phase Running when none are given).
pub fn counts(
    jobs: &[Arc<Job>],
    pods: &[Arc<Pod>],
    pending_pod_conditions: &[String],
) -> JobCounts {
    let unfinished: Vec<&Job> = jobs
        .iter()
        .map(Arc::as_ref)
        .filter(|j| outcome(j).is_none())
        .collect();
    let started = |job: &Job| {
        let uid = job.metadata.uid.as_deref();
        pods.iter()
            .filter(|pod| {
                pod.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(o.uid.as_str()) == uid)
            })
            .any(|pod| pod_started(pod, pending_pod_conditions))
    };
    JobCounts {
        running: unfinished.len() as i64,
        pending: unfinished.iter().filter(|job| !started(job)).count() as i64,
    }
}

fn pod_started(pod: &Pod, pending_pod_conditions: &[String]) -> bool {
    let status = pod.status.as_ref();
    if pending_pod_conditions.is_empty() {
        return status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p != "Pending");
    }
    let conditions = status.and_then(|s| s.conditions.as_ref());
    pending_pod_conditions.iter().all(|wanted| {
        conditions.is_some_and(|cs| cs.iter().any(|c| &c.type_ == wanted && c.status == "True"))
    })
}

/// The status after counting every finished Job not yet counted; counts only grow, and the
/// counted set keeps just the Jobs that still exist.
pub fn count_finished(previous: &ScaledJobStatus, jobs: &[Arc<Job>]) -> ScaledJobStatus {
    let mut status = previous.clone();
    let counted: BTreeSet<&str> = previous.counted_jobs.iter().map(String::as_str).collect();
    let mut still_counted = Vec::new();
    for job in jobs {
        let (Some(uid), Some(outcome)) = (job.metadata.uid.as_deref(), outcome(job)) else {
            continue;
        };
        if !counted.contains(uid) {
            match outcome {
                Outcome::Succeeded => status.succeeded += 1,
                Outcome::Failed => status.failed += 1,
            }
            status.retries += retries(job, outcome);
        }
        still_counted.push(uid.to_owned());
    }
    still_counted.sort();
    status.counted_jobs = still_counted;
    status
}

/// Counted, finished Jobs beyond the history limits, oldest first: the ones to delete.
pub fn beyond_history(
    jobs: &[Arc<Job>],
    counted: &[String],
    successful_limit: i32,
    failed_limit: i32,
) -> Vec<String> {
    let mut doomed = Vec::new();
    for (wanted, limit) in [
        (Outcome::Succeeded, successful_limit),
        (Outcome::Failed, failed_limit),
    ] {
        let mut finished: Vec<&Job> = jobs
            .iter()
            .map(Arc::as_ref)
            .filter(|j| outcome(j) == Some(wanted))
            .filter(|j| {
                j.metadata
                    .uid
                    .as_ref()
                    .is_some_and(|uid| counted.contains(uid))
            })
            .collect();
        finished.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        doomed.extend(
            finished
                .into_iter()
                .take(excess)
                .filter_map(|j| j.metadata.name.clone()),
        );
    }
    doomed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(uid: &str, created: i64, condition: Option<&str>, failed: i32) -> Arc<Job> {
        let conditions = condition.map_or(json!([]), |c| json!([{"type": c, "status": "True"}]));
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": format!("job-{uid}"), "uid": uid, "creationTimestamp": format!("2026-11-23T10:00:{created:02}Z")},
            "status": {"conditions": conditions, "failed": failed}
        }))
        .unwrap())
    }

    fn pod(owner: &str, phase: &str) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({
            "metadata": {"name": format!("pod-{owner}"), "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": owner}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]}
        }))
        .unwrap())
    }

    #[test]
    fn retries_count_failures_the_job_recovered_from_or_retried() {
        assert_eq!(
            retries(&job("a", 0, Some("Complete"), 1), Outcome::Succeeded),
            1
        );
        assert_eq!(
            retries(&job("b", 0, Some("Failed"), 3), Outcome::Failed),
            2,
            "backoffLimit 2: two retries, then the final failure"
        );
        assert_eq!(retries(&job("c", 0, Some("Failed"), 0), Outcome::Failed), 0);
    }

    #[test]
    fn unfinished_jobs_without_a_started_pod_are_pending() {
        let jobs = [
            job("a", 0, None, 0),
            job("b", 1, None, 0),
            job("c", 2, None, 0),
            job("d", 3, Some("Complete"), 0),
        ];
        let pods = [pod("a", "Running"), pod("b", "Pending")];
        assert_eq!(
            counts(&jobs, &pods, &[]),
            JobCounts {
                running: 3,
                pending: 2
            }
        );
        assert_eq!(
            counts(&jobs, &pods, &["Ready".into()]),
            JobCounts {
                running: 3,
                pending: 2
            }
        );
        assert_eq!(
            counts(&jobs, &pods, &["Ready".into(), "PodScheduled".into()]),
            JobCounts {
                running: 3,
                pending: 3
            }
        );
    }

    #[test]
    fn each_finished_job_is_counted_once_across_polls_and_restarts() {
        let jobs = vec![
            job("a", 0, Some("Complete"), 0),
            job("b", 1, Some("Failed"), 3),
            job("c", 2, None, 1),
        ];
        let first = count_finished(&ScaledJobStatus::default(), &jobs);
        assert_eq!((first.succeeded, first.failed, first.retries), (1, 1, 2));
        assert_eq!(first.counted_jobs, ["a", "b"]);
        let again = count_finished(&first, &jobs);
        assert_eq!(
            (again.succeeded, again.failed, again.retries),
            (1, 1, 2),
            "a second poll (or a restart reading status) adds nothing"
        );
    }

    #[test]
    fn counts_survive_history_cleanup() {
        let jobs = vec![
            job("a", 0, Some("Complete"), 0),
            job("b", 1, Some("Complete"), 0),
        ];
        let counted = count_finished(&ScaledJobStatus::default(), &jobs);
        let after_cleanup = count_finished(&counted, &jobs[1..]);
        assert_eq!(after_cleanup.succeeded, 2);
        assert_eq!(
            after_cleanup.counted_jobs,
            ["b"],
            "deleted Jobs leave the counted set, not the counters"
        );
    }

    #[test]
    fn history_limits_delete_the_oldest_counted_jobs_only() {
        let jobs = vec![
            job("a", 0, Some("Complete"), 0),
            job("b", 1, Some("Complete"), 0),
            job("c", 2, Some("Complete"), 0),
            job("d", 3, Some("Failed"), 3),
            job("e", 4, None, 0),
        ];
        let counted: Vec<String> = ["a", "b", "d"].map(String::from).to_vec();
        assert_eq!(
            beyond_history(&jobs, &counted, 1, 0),
            ["job-a", "job-d"],
            "c is not counted yet, so it stays"
        );
    }
}
