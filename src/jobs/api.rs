//! The jobs HTTP API: `POST /jobs` puts a message on a ScaledJob's queue, `GET /jobs/stats`
//! reads the ScaledJobs' counters, `/jobs/schedule(s)` manage JobSchedules. Every request but
//! `GET /openapi.json` needs `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::queue::{self, EnqueueError};
use super::schedule::Schedule;
use super::{
    Counts, RequestError, ScaledJobCounts, ScheduleRequest, Stats, Submission, job_schedule,
    message_body, parse_schedule_request, parse_submission, stats, token_matches,
};
use crate::apis::job_schedule::JobSchedule;
use crate::apis::scaled_job::ScaledJob;
use crate::scaling::Scaling;

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
        .route("/jobs/schedule", post(create_schedule))
        .route("/jobs/schedules", get(list_schedules))
        .route("/jobs/schedules/{name}", delete(delete_schedule))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .route("/openapi.json", get(openapi_document))
        .with_state(api)
}

/// The API's OpenAPI document, as served at `/openapi.json` and committed as `docs/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Windlass jobs API", description = "Submit jobs to a ScaledJob's queue, schedule them with cron, and read outcome counts."),
    paths(submit, read_stats, create_schedule, list_schedules, delete_schedule),
    components(schemas(RequestError, Submission, Accepted, Stats, Counts, ScaledJobCounts, ScheduleRequest, ScheduleCreated, ScheduleSummary, ScheduleList)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The OpenAPI document as committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// `POST /jobs` accepted the job.
#[derive(Serialize, ToSchema)]
struct Accepted {
    /// The message id; the worker receives it as the message's `id`.
    id: String,
}

/// `POST /jobs/schedule` created a JobSchedule.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScheduleCreated {
    name: String,
    namespace: String,
    /// RFC 3339.
    next_schedule_time: Option<String>,
}

/// One JobSchedule, as `GET /jobs/schedules` lists it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScheduleSummary {
    name: String,
    namespace: String,
    cron: String,
    time_zone: String,
    scaled_job: String,
    suspend: bool,
    #[schema(value_type = Object)]
    payload: Option<serde_json::Value>,
    /// RFC 3339; the tick last enqueued.
    last_schedule_time: Option<String>,
    next_schedule_time: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ScheduleList {
    schedules: Vec<ScheduleSummary>,
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

/// The body, or 413 past the limit.
async fn read_body(body: Body) -> Result<axum::body::Bytes, RequestError> {
    to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| RequestError {
            status: 413,
            error: format!("larger than {MAX_BODY_BYTES} bytes"),
            field: Some("body".into()),
        })
}

/// Put a job on a ScaledJob's queue.
#[utoipa::path(post, path = "/jobs", request_body = Submission, responses(
    (status = 202, description = "Enqueued", body = Accepted),
    (status = 400, description = "Invalid body; `field` names the culprit", body = RequestError),
    (status = 401, description = "Missing or wrong token", body = RequestError),
    (status = 404, description = "No such ScaledJob", body = RequestError),
    (status = 409, description = "The ScaledJob has no usable SQS trigger", body = RequestError),
    (status = 413, description = "Body over 64 KiB", body = RequestError),
    (status = 502, description = "Kubernetes or SQS failed", body = RequestError),
))]
async fn submit(State(api): State<Arc<JobsApi>>, body: Body) -> Result<Response, RequestError> {
    let submission = parse_submission(&read_body(body).await?)?;
    let id = enqueue(&api.scaling, &submission).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { id })).into_response())
}

impl From<EnqueueError> for RequestError {
    fn from(error: EnqueueError) -> Self {
        let (status, field) = match &error {
            EnqueueError::NotFound { .. } => (404, Some("scaledJob".into())),
            EnqueueError::Unusable { .. } => (409, Some("scaledJob".into())),
            EnqueueError::Read { .. } | EnqueueError::Send { .. } => (502, None),
        };
        RequestError {
            status,
            error: error.to_string(),
            field,
        }
    }
}

/// Sends the submission to the ScaledJob's queue; returns the message's id. Nothing is sent
/// unless every check passed.
async fn enqueue(scaling: &Scaling, submission: &Submission) -> Result<String, RequestError> {
    let scaled_job =
        queue::scaled_job(scaling, &submission.namespace, &submission.scaled_job).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let body = message_body(&id, &submission.payload, jiff::Timestamp::now(), None);
    queue::send(scaling, &scaled_job, &id, body).await?;
    Ok(id)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// Only this ScaledJob.
    scaled_job: Option<String>,
    /// Only this namespace.
    namespace: Option<String>,
}

/// Succeeded, failed and retried jobs, in total and per ScaledJob.
#[utoipa::path(get, path = "/jobs/stats", params(StatsQuery), responses(
    (status = 200, description = "Counts", body = Stats),
    (status = 401, description = "Missing or wrong token", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NamespaceQuery {
    /// Defaults to `default`.
    namespace: Option<String>,
}

fn kube_failure(what: &str, error: kube::Error) -> RequestError {
    RequestError {
        status: 502,
        error: format!("{what}: {error}"),
        field: None,
    }
}

/// Create a JobSchedule that enqueues the payload on every cron tick.
#[utoipa::path(post, path = "/jobs/schedule", request_body = ScheduleRequest, responses(
    (status = 201, description = "Created", body = ScheduleCreated),
    (status = 400, description = "Invalid body, cron expression or time zone; nothing created", body = RequestError),
    (status = 401, description = "Missing or wrong token", body = RequestError),
    (status = 404, description = "No such ScaledJob", body = RequestError),
    (status = 409, description = "A JobSchedule of that name exists", body = RequestError),
    (status = 413, description = "Body over 64 KiB", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn create_schedule(
    State(api): State<Arc<JobsApi>>,
    body: Body,
) -> Result<Response, RequestError> {
    let request: ScheduleRequest = parse_schedule_request(&read_body(body).await?)?;
    let scaling = &api.scaling;
    queue::scaled_job(scaling, &request.namespace, &request.scaled_job).await?;
    let schedules: Api<JobSchedule> = Api::namespaced(scaling.client.clone(), &request.namespace);
    let created = schedules
        .create(&PostParams::default(), &job_schedule(&request))
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) if status.code == 409 => RequestError {
                status: 409,
                error: format!(
                    "JobSchedule {}/{} already exists",
                    request.namespace,
                    request.name.clone().unwrap_or_default()
                ),
                field: Some("name".into()),
            },
            error => kube_failure("creating the JobSchedule", error),
        })?;
    let next = Schedule::parse(&request.cron, &request.time_zone)
        .ok()
        .and_then(|schedule| schedule.next_after(jiff::Timestamp::now()));
    let body = ScheduleCreated {
        name: created.name_any(),
        namespace: request.namespace,
        next_schedule_time: next.map(|tick| tick.to_string()),
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// List the JobSchedules of a namespace.
#[utoipa::path(get, path = "/jobs/schedules", params(NamespaceQuery), responses(
    (status = 200, description = "The schedules", body = ScheduleList),
    (status = 401, description = "Missing or wrong token", body = RequestError),
    (status = 404, description = "A namespace the controller does not watch", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn list_schedules(
    State(api): State<Arc<JobsApi>>,
    Query(query): Query<NamespaceQuery>,
) -> Result<Response, RequestError> {
    let schedules = schedules_api(&api.scaling, query.namespace)?;
    let list = schedules
        .list(&ListParams::default())
        .await
        .map_err(|error| kube_failure("listing JobSchedules", error))?;
    let time = |time: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        time.map(|time| time.0.to_string())
    };
    let schedules = list
        .items
        .into_iter()
        .map(|object| {
            let status = object.status.clone().unwrap_or_default();
            ScheduleSummary {
                name: object.name_any(),
                namespace: object.namespace().unwrap_or_default(),
                cron: object.spec.schedule,
                time_zone: object.spec.time_zone,
                scaled_job: object.spec.scaled_job,
                suspend: object.spec.suspend,
                payload: object.spec.payload,
                last_schedule_time: time(status.last_schedule_time.as_ref()),
                next_schedule_time: time(status.next_schedule_time.as_ref()),
            }
        })
        .collect();
    Ok(axum::Json(ScheduleList { schedules }).into_response())
}

/// Delete a JobSchedule; no further ticks are enqueued.
#[utoipa::path(delete, path = "/jobs/schedules/{name}", params(("name" = String, Path), NamespaceQuery), responses(
    (status = 204, description = "Deleted"),
    (status = 401, description = "Missing or wrong token", body = RequestError),
    (status = 404, description = "No such JobSchedule", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn delete_schedule(
    State(api): State<Arc<JobsApi>>,
    Path(name): Path<String>,
    Query(query): Query<NamespaceQuery>,
) -> Result<Response, RequestError> {
    let namespace = query
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let schedules = schedules_api(&api.scaling, query.namespace)?;
    match schedules.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RequestError {
            status: 404,
            error: format!("JobSchedule {namespace}/{name} not found"),
            field: Some("name".into()),
        }),
        Err(error) => Err(kube_failure("deleting the JobSchedule", error)),
    }
}

/// JobSchedules of the namespace asked for (`default` when none), if the controller watches it.
fn schedules_api(
    scaling: &Scaling,
    namespace: Option<String>,
) -> Result<Api<JobSchedule>, RequestError> {
    let namespace = namespace.unwrap_or_else(|| "default".to_owned());
    if scaling
        .watch_namespace
        .as_deref()
        .is_some_and(|watched| watched != namespace)
    {
        return Err(RequestError {
            status: 404,
            error: format!("namespace {namespace:?} is not watched by this controller"),
            field: Some("namespace".into()),
        });
    }
    Ok(Api::namespaced(scaling.client.clone(), &namespace))
}

#[cfg(test)]
mod tests {
    use crate::events::Recorder;
    use axum::http::{Request as HttpRequest, Response as HttpResponse};
    use http_body_util::BodyExt;
    use kube::runtime::events::Reporter;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Metrics;
    use crate::scaling::auth_users::AuthUsers;
    use crate::scaling::queue_depths::QueueDepths;
    use crate::scaling::scalers::aws_sqs::SqsClients;

    /// The API over a Kubernetes client that fails every call: enough for requests that must be
    /// refused before any I/O.
    fn offline_router() -> Router {
        let no_api_server = tower::service_fn(|_: HttpRequest<kube::client::Body>| async {
            Err::<HttpResponse<Body>, _>(std::io::Error::other("no API server in unit tests"))
        });
        let client = kube::Client::new(no_api_server, "default");
        let scaling = Scaling {
            client: client.clone(),
            metrics: Arc::new(Metrics::default()),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "windlass-test".into(),
                    instance: None,
                },
            ),
            watch_namespace: None,
            controller_namespace: "windlass".into(),
            sqs: SqsClients::new(
                aws_config::SdkConfig::builder().build(),
                client,
                "windlass-test".into(),
            ),
            queue_depths: QueueDepths::default(),
            scaled_object_loops: Default::default(),
            scaled_job_loops: Default::default(),
            scale_outs: Default::default(),
            auth_users: AuthUsers::new().0,
        };
        router(Arc::new(scaling), "t0ken".into())
    }

    async fn post(path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let response = offline_router()
            .oneshot(
                HttpRequest::post(path)
                    .header(header::AUTHORIZATION, "Bearer t0ken")
                    .body(Body::from(body.to_owned()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn an_unknown_field_is_a_400_naming_it_in_field() {
        for (path, body) in [
            ("/jobs", r#"{"scaledJob": "a", "priority": 1}"#),
            (
                "/jobs/schedule",
                r#"{"cron": "* * * * *", "scaledJob": "a", "priority": 1}"#,
            ),
        ] {
            let (status, error) = post(path, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(
                error,
                serde_json::json!({"error": "unknown field \"priority\"", "field": "priority"}),
                "{path}"
            );
        }
    }

    #[test]
    fn committed_openapi_document_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == openapi_json(),
            "docs/openapi.json is out of date; run `cargo run -- openapi > docs/openapi.json`"
        );
    }

    #[test]
    fn the_document_covers_every_route() {
        let document: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        for (path, method) in [
            ("/jobs", "post"),
            ("/jobs/stats", "get"),
            ("/jobs/schedule", "post"),
            ("/jobs/schedules", "get"),
            ("/jobs/schedules/{name}", "delete"),
        ] {
            assert!(
                document["paths"][path][method].is_object(),
                "{method} {path}"
            );
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
