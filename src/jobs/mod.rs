//! The jobs service: an HTTP API on its own port to submit work to a ScaledJob's queue and to
//! read outcome counts. Requests are checked here without I/O; `api` does the I/O.

pub mod api;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::apis::scaled_job::ScaledJob;

/// A client error: the HTTP status, a message, and the request field it concerns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
}

impl RequestError {
    pub fn bad_request(field: &'static str, error: impl Into<String>) -> Self {
        Self {
            status: 400,
            error: error.into(),
            field: Some(field),
        }
    }
}

/// `POST /jobs`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    pub scaled_job: String,
    pub namespace: String,
    pub payload: Value,
}

const SUBMISSION_FIELDS: [&str; 3] = ["scaledJob", "namespace", "payload"];

/// Parses a `POST /jobs` body; every error names the field at fault.
pub fn parse_submission(body: &[u8]) -> Result<Submission, RequestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::bad_request("body", format!("not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(RequestError::bad_request("body", "must be a JSON object"));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !SUBMISSION_FIELDS.contains(&k.as_str()))
    {
        return Err(RequestError {
            status: 400,
            error: format!("unknown field {unknown:?}"),
            field: None,
        });
    }
    let scaled_job = name(&mut fields, "scaledJob")?
        .ok_or_else(|| RequestError::bad_request("scaledJob", "is required"))?;
    let namespace = name(&mut fields, "namespace")?.unwrap_or_else(|| "default".to_owned());
    Ok(Submission {
        scaled_job,
        namespace,
        payload: fields.remove("payload").unwrap_or(Value::Null),
    })
}

/// A Kubernetes object name (RFC 1123 label-like), if present.
fn name(
    fields: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, RequestError> {
    match fields.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => {
            let valid = !value.is_empty()
                && value.len() <= 253
                && value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric());
            if valid {
                Ok(Some(value))
            } else {
                Err(RequestError::bad_request(
                    field,
                    format!("{value:?} is not a valid Kubernetes name"),
                ))
            }
        }
        Some(_) => Err(RequestError::bad_request(field, "must be a string")),
    }
}

/// The message a submission puts on the queue.
pub fn message_body(id: &str, submission: &Submission, submitted_at: jiff::Timestamp) -> String {
    serde_json::json!({"id": id, "payload": submission.payload, "submittedAt": submitted_at.to_string()}).to_string()
}

/// Outcome counts of one ScaledJob, or of several added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub succeeded: i64,
    pub failed: i64,
    pub retries: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobCounts {
    pub namespace: String,
    pub scaled_job: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// `GET /jobs/stats`: the total and each ScaledJob's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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

/// Compares a presented bearer token with the configured one in time independent of where
/// they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
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
                (error.status, error.field),
                (400, field),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let unknown = parse_submission(br#"{"scaledJob": "a", "priority": 1}"#).unwrap_err();
        assert_eq!(unknown.error, "unknown field \"priority\"");
    }

    #[test]
    fn messages_carry_id_payload_and_submission_time() {
        let submission = Submission {
            scaled_job: "a".into(),
            namespace: "b".into(),
            payload: serde_json::json!({"x": 1}),
        };
        let body: Value = serde_json::from_str(&message_body(
            "id-1",
            &submission,
            jiff::Timestamp::from_second(0).unwrap(),
        ))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "id-1", "payload": {"x": 1}, "submittedAt": "1970-01-01T00:00:00Z"})
        );
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

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cres", "s3cret"));
        assert!(!token_matches("s3cret-longer", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }
}
