//! The jobs service: an HTTP API on its own port to submit work to a ScaledJob's queue and to
//! read outcome counts. Requests are checked here without I/O; `api` does the I/O.

pub mod api;
pub mod auth;
pub mod queue;
pub mod rate_limit;
pub mod schedule;
pub mod schedule_controller;
pub mod tls;

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::apis::job_schedule::{JobSchedule, JobScheduleSpec};
use crate::apis::scaled_job::ScaledJob;
use schedule::Schedule;

/// A client error: the HTTP status, a message, and the request field it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RequestError {
    #[serde(skip)]
    pub status: u16,
    /// What was wrong.
    pub error: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<Cow<'static, str>>,
}

impl RequestError {
    pub fn bad_request(field: &'static str, error: impl Into<String>) -> Self {
        Self {
            status: 400,
            error: error.into(),
            field: Some(field.into()),
        }
    }
}

/// `POST /jobs`: a job for a ScaledJob's queue.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// The ScaledJob whose queue takes the job.
    #[schema(example = "data-processor")]
    pub scaled_job: String,
    /// The ScaledJob's namespace.
    #[schema(default = "default")]
    pub namespace: String,
    /// Any JSON; the worker receives it as the message's `payload`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Parses a `POST /jobs` body; every error names the field at fault.
pub fn parse_submission(body: &[u8]) -> Result<Submission, RequestError> {
    let mut fields = json_object(body, &["scaledJob", "namespace", "payload"])?;
    let scaled_job = name(&mut fields, "scaledJob")?
        .ok_or_else(|| RequestError::bad_request("scaledJob", "is required"))?;
    let namespace = name(&mut fields, "namespace")?.unwrap_or_else(|| "default".to_owned());
    Ok(Submission {
        scaled_job,
        namespace,
        payload: fields.remove("payload").unwrap_or(Value::Null),
    })
}

/// `POST /jobs/schedule`: a job enqueued on a cron schedule.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRequest {
    /// The JobSchedule's name; generated from the ScaledJob's when absent.
    pub name: Option<String>,
    #[schema(default = "default")]
    pub namespace: String,
    /// Five fields (minute hour day-of-month month day-of-week) or a macro such as `@hourly`.
    #[schema(example = "*/5 * * * *")]
    pub cron: String,
    /// IANA time zone the cron expression is read in.
    #[schema(default = "UTC", example = "Europe/Berlin")]
    pub time_zone: String,
    #[schema(example = "data-processor")]
    pub scaled_job: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    #[schema(default = false)]
    pub suspend: bool,
    /// How late (seconds) a tick may still be enqueued; 60 when absent.
    #[schema(minimum = 0)]
    pub starting_deadline_seconds: Option<i64>,
}

/// Parses a `POST /jobs/schedule` body and checks the cron expression and time zone.
pub fn parse_schedule_request(body: &[u8]) -> Result<ScheduleRequest, RequestError> {
    let mut fields = json_object(
        body,
        &[
            "name",
            "namespace",
            "cron",
            "timeZone",
            "scaledJob",
            "payload",
            "suspend",
            "startingDeadlineSeconds",
        ],
    )?;
    let scaled_job = name(&mut fields, "scaledJob")?
        .ok_or_else(|| RequestError::bad_request("scaledJob", "is required"))?;
    let cron = match fields.remove("cron") {
        Some(Value::String(cron)) => cron,
        None | Some(Value::Null) => return Err(RequestError::bad_request("cron", "is required")),
        Some(_) => return Err(RequestError::bad_request("cron", "must be a string")),
    };
    let time_zone = match fields.remove("timeZone") {
        Some(Value::String(zone)) => zone,
        None | Some(Value::Null) => "UTC".to_owned(),
        Some(_) => return Err(RequestError::bad_request("timeZone", "must be a string")),
    };
    Schedule::parse_firing(&cron, &time_zone)
        .map_err(|error| RequestError::bad_request(error.field, error.message))?;
    let suspend = match fields.remove("suspend") {
        Some(Value::Bool(suspend)) => suspend,
        None | Some(Value::Null) => false,
        Some(_) => {
            return Err(RequestError::bad_request(
                "suspend",
                "must be true or false",
            ));
        }
    };
    let starting_deadline_seconds =
        match fields.remove("startingDeadlineSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_i64().filter(|seconds| *seconds >= 0).ok_or_else(
                || {
                    RequestError::bad_request(
                        "startingDeadlineSeconds",
                        "must be a whole number of seconds, 0 or more",
                    )
                },
            )?),
        };
    Ok(ScheduleRequest {
        name: name(&mut fields, "name")?,
        namespace: name(&mut fields, "namespace")?.unwrap_or_else(|| "default".to_owned()),
        cron,
        time_zone,
        scaled_job,
        payload: fields.remove("payload").unwrap_or(Value::Null),
        suspend,
        starting_deadline_seconds,
    })
}

/// The JobSchedule a schedule request creates; unnamed requests get a generated name.
pub fn job_schedule(request: &ScheduleRequest) -> JobSchedule {
    let mut object = JobSchedule::new(
        request.name.as_deref().unwrap_or_default(),
        JobScheduleSpec {
            schedule: request.cron.clone(),
            time_zone: request.time_zone.clone(),
            scaled_job: request.scaled_job.clone(),
            payload: (!request.payload.is_null()).then(|| request.payload.clone()),
            suspend: request.suspend,
            starting_deadline_seconds: request.starting_deadline_seconds,
        },
    );
    object.metadata.namespace = Some(request.namespace.clone());
    if request.name.is_none() {
        object.metadata.name = None;
        // Room for the five random characters the API server appends.
        let prefix: String = request.scaled_job.chars().take(240).collect();
        object.metadata.generate_name = Some(format!("{prefix}-"));
    }
    object
}

/// A JSON object body holding only the `allowed` fields.
fn json_object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::bad_request("body", format!("not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(RequestError::bad_request("body", "must be a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(RequestError {
            status: 400,
            error: format!("unknown field {unknown:?}"),
            field: Some(unknown.clone().into()),
        });
    }
    Ok(fields)
}

/// A Kubernetes object name (RFC 1123 label-like), if present.
fn name(
    fields: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RequestError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => {
            check_name(field, &value)?;
            Ok(Some(value))
        }
        Some(_) => Err(RequestError::bad_request(field, "must be a string")),
    }
}

/// 400 unless `value` is a Kubernetes object name (RFC 1123 subdomain-like).
pub fn check_name(field: &'static str, value: &str) -> Result<(), RequestError> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(RequestError::bad_request(
            field,
            format!("{value:?} is not a valid Kubernetes name"),
        ))
    }
}

/// The message a job puts on the queue. Scheduled jobs also name their JobSchedule and tick.
pub fn message_body(
    id: &str,
    payload: &Value,
    submitted_at: jiff::Timestamp,
    scheduled: Option<(&str, jiff::Timestamp)>,
) -> String {
    let mut body =
        serde_json::json!({"id": id, "payload": payload, "submittedAt": submitted_at.to_string()});
    if let Some((schedule, tick)) = scheduled {
        body["schedule"] = schedule.into();
        body["scheduledTime"] = tick.to_string().into();
    }
    body.to_string()
}

/// Outcome counts of one ScaledJob, or of several added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    pub succeeded: i64,
    pub failed: i64,
    pub retries: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobCounts {
    pub namespace: String,
    pub scaled_job: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /jobs/stats`: the total and each ScaledJob's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    #[serde(flatten)]
    pub total: Counts,
    pub scaled_jobs: Vec<ScaledJobCounts>,
}

pub fn stats(scaled_jobs: &[ScaledJob]) -> Stats {
    let mut stats = Stats::default();
    for scaled_job in scaled_jobs {
        let status = scaled_job.status.clone().unwrap_or_default();
        let counts = Counts {
            succeeded: status.succeeded,
            failed: status.failed,
            retries: status.retries,
        };
        stats.total.succeeded += counts.succeeded;
        stats.total.failed += counts.failed;
        stats.total.retries += counts.retries;
        stats.scaled_jobs.push(ScaledJobCounts {
            namespace: scaled_job.metadata.namespace.clone().unwrap_or_default(),
            scaled_job: scaled_job.metadata.name.clone().unwrap_or_default(),
            counts,
        });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_needs_a_scaled_job_and_defaults_the_rest() {
        let parsed =
            parse_submission(br#"{"scaledJob": "data-processor", "payload": {"rows": 3}}"#)
                .unwrap();
        assert_eq!(parsed.scaled_job, "data-processor");
        assert_eq!(parsed.namespace, "default");
        assert_eq!(parsed.payload, serde_json::json!({"rows": 3}));
    }

    #[test]
    fn bad_submissions_name_the_field() {
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"{", Some("body")),
            (b"[1]", Some("body")),
            (br#"{"payload": 1}"#, Some("scaledJob")),
            (br#"{"scaledJob": 7}"#, Some("scaledJob")),
            (br#"{"scaledJob": "Bad_Name"}"#, Some("scaledJob")),
            (br#"{"scaledJob": "a", "namespace": ""}"#, Some("namespace")),
        ];
        for (body, field) in cases {
            let error = parse_submission(body).unwrap_err();
            assert_eq!(
                (error.status, error.field.as_deref()),
                (400, field),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let unknown = parse_submission(br#"{"scaledJob": "a", "priority": 1}"#).unwrap_err();
        assert_eq!(unknown.error, "unknown field \"priority\"");
        assert_eq!(unknown.field.as_deref(), Some("priority"));
    }

    #[test]
    fn messages_carry_id_payload_and_submission_time() {
        let submission = Submission {
            scaled_job: "a".into(),
            namespace: "b".into(),
            payload: serde_json::json!({"x": 1}),
        };
        let epoch = jiff::Timestamp::from_second(0).unwrap();
        let body: Value =
            serde_json::from_str(&message_body("id-1", &submission.payload, epoch, None)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "id-1", "payload": {"x": 1}, "submittedAt": "1970-01-01T00:00:00Z"})
        );
        let scheduled: Value = serde_json::from_str(&message_body(
            "id-2",
            &Value::Null,
            epoch,
            Some(("nightly", epoch)),
        ))
        .unwrap();
        assert_eq!(scheduled["schedule"], "nightly");
        assert_eq!(scheduled["scheduledTime"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn schedule_requests_are_checked_before_anything_is_created() {
        let request = parse_schedule_request(
            br#"{"cron": "*/5 * * * *", "timeZone": "Europe/Berlin", "scaledJob": "data-processor", "payload": {"rows": 1}}"#,
        )
        .unwrap();
        let object = job_schedule(&request);
        assert_eq!(
            object.metadata.generate_name.as_deref(),
            Some("data-processor-")
        );
        assert_eq!(object.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(object.spec.schedule, "*/5 * * * *");
        assert_eq!(object.spec.time_zone, "Europe/Berlin");
        assert_eq!(object.spec.payload, Some(serde_json::json!({"rows": 1})));

        let named =
            parse_schedule_request(br#"{"name": "nightly", "cron": "@daily", "scaledJob": "a"}"#)
                .unwrap();
        assert_eq!(
            job_schedule(&named).metadata.name.as_deref(),
            Some("nightly")
        );
        assert_eq!(named.time_zone, "UTC");

        let cases: [(&[u8], &str); 7] = [
            (br#"{"cron": "61 * * * *", "scaledJob": "a"}"#, "cron"),
            (br#"{"cron": "* * * *", "scaledJob": "a"}"#, "cron"),
            (br#"{"scaledJob": "a"}"#, "cron"),
            (
                br#"{"cron": "* * * * *", "timeZone": "Nowhere/Land", "scaledJob": "a"}"#,
                "timeZone",
            ),
            (br#"{"cron": "* * * * *"}"#, "scaledJob"),
            (
                br#"{"cron": "* * * * *", "scaledJob": "a", "suspend": "yes"}"#,
                "suspend",
            ),
            (
                br#"{"cron": "* * * * *", "scaledJob": "a", "startingDeadlineSeconds": -1}"#,
                "startingDeadlineSeconds",
            ),
        ];
        for (body, field) in cases {
            let error = parse_schedule_request(body).unwrap_err();
            assert_eq!(
                (error.status, error.field.as_deref()),
                (400, Some(field)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn stats_add_up_every_scaled_job() {
        let scaled_job = |name: &str, succeeded: i64, failed: i64, retries: i64| -> ScaledJob {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob", "metadata": {"name": name, "namespace": "jobs"},
                "spec": {"jobTargetRef": {"template": {}}, "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]},
                "status": {"succeeded": succeeded, "failed": failed, "retries": retries}
            }))
            .unwrap()
        };
        let stats = stats(&[scaled_job("a", 5, 1, 2), scaled_job("b", 1, 2, 4)]);
        assert_eq!(
            stats.total,
            Counts {
                succeeded: 6,
                failed: 3,
                retries: 6
            }
        );
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            json["scaledJobs"][1],
            serde_json::json!({"namespace": "jobs", "scaledJob": "b", "succeeded": 1, "failed": 2, "retries": 4})
        );
        assert_eq!(json["succeeded"], 6);
    }
}
