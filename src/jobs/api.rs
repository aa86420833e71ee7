//! The jobs HTTP API: `POST /jobs` puts a message on a ScaledJob's queue, `GET /jobs/stats`
//! reads the ScaledJobs' counters. Every request needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use aws_sdk_sqs::error::DisplayErrorContext;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Api;
use kube::api::ListParams;
use serde::Deserialize;
use serde_json::json;

use super::{RequestError, Submission, message_body, parse_submission, stats, token_matches};
use crate::apis::scaled_job::ScaledJob;
use crate::apis::triggers::{AwsSqsQueueTrigger, QueueSource};
use crate::scaling::target::container_env;
use crate::scaling::{Scaling, auth};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

struct JobsApi {
    scaling: Arc<Scaling>,
    token: String,
}

pub fn router(scaling: Arc<Scaling>, token: String) -> Router {
    let api = Arc::new(JobsApi { scaling, token });
    Router::new()
        .route("/jobs", post(submit))
        .route("/jobs/stats", get(read_stats))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

async fn authenticate(State(api): State<Arc<JobsApi>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if token_matches(token, &api.token) => next.run(request).await,
        _ => RequestError {
            status: 401,
            error: "missing or wrong bearer token".into(),
            field: None,
        }
        .into_response(),
    }
}

async fn submit(State(api): State<Arc<JobsApi>>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        let error = format!("larger than {MAX_BODY_BYTES} bytes");
        return RequestError {
            status: 413,
            error,
            field: Some("body"),
        }
        .into_response();
    };
    let submission = match parse_submission(&bytes) {
        Ok(submission) => submission,
        Err(error) => return error.into_response(),
    };
    match enqueue(&api.scaling, &submission).await {
        Ok(id) => (StatusCode::ACCEPTED, axum::Json(json!({"id": id}))).into_response(),
        Err(error) => error.into_response(),
    }
}

fn unprocessable(error: impl ToString) -> RequestError {
    RequestError {
        status: 409,
        error: error.to_string(),
        field: Some("scaledJob"),
    }
}

/// Sends the submission to the queue of the ScaledJob's SQS trigger, as that trigger's
/// authentication; returns the message's id. Nothing is sent unless every check passed.
async fn enqueue(scaling: &Scaling, submission: &Submission) -> Result<String, RequestError> {
    let (namespace, name) = (
        submission.namespace.as_str(),
        submission.scaled_job.as_str(),
    );
    let not_found = || RequestError {
        status: 404,
        error: format!("ScaledJob {namespace}/{name} not found"),
        field: Some("scaledJob"),
    };
    if scaling
        .watch_namespace
        .as_deref()
        .is_some_and(|watched| watched != namespace)
    {
        return Err(not_found());
    }
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(scaling.client.clone(), namespace);
    let scaled_job = scaled_jobs
        .get_opt(name)
        .await
        .map_err(|e| RequestError {
            status: 502,
            error: format!("reading ScaledJob {namespace}/{name}: {e}"),
            field: None,
        })?
        .ok_or_else(not_found)?;
    let trigger = scaled_job
        .spec
        .triggers
        .first()
        .ok_or_else(|| unprocessable("the ScaledJob has no trigger"))?;
    let sqs = AwsSqsQueueTrigger::from_metadata(&trigger.metadata).map_err(unprocessable)?;
    let pod_spec =
        serde_json::to_value(&scaled_job.spec.job_target_ref.template.spec).unwrap_or_default();
    let queue_url = match &sqs.queue {
        QueueSource::Url(url) => url.clone(),
        QueueSource::FromEnv(var) => container_env(
            &pod_spec,
            scaled_job.spec.env_source_container_name.as_deref(),
            var,
        )
        .ok_or_else(|| {
            unprocessable(format!(
                "queueURLFromEnv {var:?} is not set in the Job template"
            ))
        })?,
    };
    let credentials = auth::load(
        &scaling.client,
        namespace,
        &scaling.controller_namespace,
        trigger.authentication_ref.as_ref(),
        &pod_spec,
    )
    .await
    .map_err(unprocessable)?;
    let client = scaling
        .sqs
        .client(
            &credentials,
            sqs.aws_region.as_deref(),
            sqs.aws_endpoint.as_deref(),
        )
        .await;
    let id = uuid::Uuid::new_v4().to_string();
    client
        .send_message()
        .queue_url(&queue_url)
        .message_body(message_body(&id, submission, jiff::Timestamp::now()))
        .send()
        .await
        .map_err(|e| RequestError {
            status: 502,
            error: format!("sending to {queue_url}: {}", DisplayErrorContext(e)),
            field: None,
        })?;
    Ok(id)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsQuery {
    scaled_job: Option<String>,
    namespace: Option<String>,
}

async fn read_stats(State(api): State<Arc<JobsApi>>, Query(query): Query<StatsQuery>) -> Response {
    let scaling = &api.scaling;
    let scaled_jobs: Api<ScaledJob> = match &query.namespace {
        Some(namespace) => Api::namespaced(scaling.client.clone(), namespace),
        None => scaling.watched(),
    };
    match scaled_jobs.list(&ListParams::default()).await {
        Ok(list) => {
            let wanted: Vec<ScaledJob> = list
                .items
                .into_iter()
                .filter(|sj| {
                    query
                        .scaled_job
                        .as_ref()
                        .is_none_or(|name| sj.metadata.name.as_ref() == Some(name))
                })
                .collect();
            axum::Json(stats(&wanted)).into_response()
        }
        Err(e) => RequestError {
            status: 502,
            error: format!("listing ScaledJobs: {e}"),
            field: None,
        }
        .into_response(),
    }
}
