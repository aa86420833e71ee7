//! The jobs HTTP API: `POST /jobs` puts a message on a ScaledJob's queue, `GET /jobs/stats`
//! reads the ScaledJobs' counters, `/jobs/schedule(s)` manage JobSchedules. Every request but
//! `GET /openapi.json` needs `Authorization: Bearer <token>`: the static token, or a Kubernetes
//! token whose user RBAC lets do the request in its namespace. Requests are rate limited per
//! caller. The Kubernetes and SQS work is behind [`Jobs`], so the HTTP layer can be tested alone.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use futures::future::BoxFuture;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::auth::{Authentication, Caller, Permission};
use super::queue::{self, EnqueueError};
use super::rate_limit::{RateLimit, RateLimiter};
use super::schedule::Schedule;
use super::{
    Counts, RequestError, ScaledJobCounts, ScheduleRequest, Stats, Submission, check_name,
    job_schedule, message_body, parse_schedule_request, parse_submission, stats,
};
use crate::apis::job_schedule::JobSchedule;
use crate::apis::scaled_job::ScaledJob;
use crate::scaling::Scaling;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The work behind the API: Kubernetes and SQS in the controller, a fake in unit tests. Every
/// request reaching it has been parsed, authenticated and authorized.
pub trait Jobs: Send + Sync + 'static {
    /// Sends the job to the ScaledJob's queue; the message's id.
    fn submit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> BoxFuture<'a, Result<String, RequestError>>;
    fn create_schedule<'a>(
        &'a self,
        request: &'a ScheduleRequest,
    ) -> BoxFuture<'a, Result<ScheduleCreated, RequestError>>;
    fn list_schedules<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<ScheduleList, RequestError>>;
    fn delete_schedule<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), RequestError>>;
    /// The ScaledJobs of a namespace, or of every watched one.
    fn scaled_jobs<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScaledJob>, RequestError>>;
}

/// Who may call, and how often.
pub struct Access {
    pub authentication: Authentication,
    pub rate_limit: RateLimit,
}

struct JobsApi {
    jobs: Arc<dyn Jobs>,
    authentication: Authentication,
    limiter: RateLimiter,
}

pub fn router(jobs: Arc<dyn Jobs>, access: Access) -> Router {
    let api = Arc::new(JobsApi {
        jobs,
        authentication: access.authentication,
        limiter: RateLimiter::new(access.rate_limit),
    });
    let authenticated = Router::new()
        .route("/jobs", post(submit))
        .route("/jobs/stats", get(read_stats))
        .route("/jobs/schedule", post(create_schedule))
        .route("/jobs/schedules", get(list_schedules))
        .route("/jobs/schedules/{name}", delete(delete_schedule))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate));
    Router::new()
        .route("/openapi.json", get(openapi_document))
        .merge(authenticated)
        .fallback(no_such_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

async fn no_such_route() -> RequestError {
    RequestError {
        status: 404,
        error: "no such route".into(),
        field: None,
    }
}

async fn method_not_allowed() -> RequestError {
    RequestError {
        status: 405,
        error: "method not allowed on this route".into(),
        field: None,
    }
}

/// The API's OpenAPI document, as served at `/openapi.json` and committed as `docs/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Windlass jobs API", description = "Submit jobs to a ScaledJob's queue, schedule them with cron, and read outcome counts. Authenticate with the install's static token or a Kubernetes token (a ServiceAccount's); a Kubernetes caller needs RBAC for each request in its namespace. Requests are rate limited per caller (429 with Retry-After)."),
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
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "The install's static token, or a Kubernetes token (TokenReview) whose user RBAC authorizes the request (SubjectAccessReview)",
                        ))
                        .build(),
                ),
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
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleCreated {
    pub name: String,
    pub namespace: String,
    /// RFC 3339.
    pub next_schedule_time: Option<String>,
}

/// One JobSchedule, as `GET /jobs/schedules` lists it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSummary {
    pub name: String,
    pub namespace: String,
    pub cron: String,
    pub time_zone: String,
    pub scaled_job: String,
    pub suspend: bool,
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// RFC 3339; the tick last enqueued.
    pub last_schedule_time: Option<String>,
    pub next_schedule_time: Option<String>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleSummary>,
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

/// 429 with the whole seconds until the caller's next request is admitted.
fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = RequestError {
        status: 429,
        error: format!("rate limit exceeded; retry in {seconds} s"),
        field: None,
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    response
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates the caller and charges its rate limit. A request that fails authentication
/// is charged to its remote address, which is refused (429) once spent, before any review.
async fn authenticate(
    State(api): State<Arc<JobsApi>>,
    mut request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(remote)| remote.ip().to_string())
        .unwrap_or_default();
    let address_key = format!("addr:{address}");
    if let Err(wait) = api.limiter.check(&address_key) {
        return too_many_requests(wait);
    }
    let caller = match bearer_token(request.headers()) {
        Some(token) => match api.authentication.authenticate(token).await {
            Ok(caller) => caller,
            Err(error) => {
                return RequestError {
                    status: 502,
                    error: error.to_string(),
                    field: None,
                }
                .into_response();
            }
        },
        None => None,
    };
    let Some(caller) = caller else {
        // Only counts towards the next request's refusal.
        let _ = api.limiter.take(&address_key);
        return RequestError {
            status: 401,
            error: "missing or invalid bearer token".into(),
            field: None,
        }
        .into_response();
    };
    if let Err(wait) = api.limiter.take(&caller.rate_key()) {
        return too_many_requests(wait);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

impl JobsApi {
    /// 403 unless the caller holds `permission`.
    async fn authorize(&self, caller: &Caller, permission: Permission) -> Result<(), RequestError> {
        if self.allowed(caller, &permission).await? {
            return Ok(());
        }
        let user = match caller {
            Caller::StaticToken => "the static token",
            Caller::Kubernetes(identity) => identity.username.as_str(),
        };
        Err(RequestError {
            status: 403,
            error: format!(
                "{user} may not {} {}.{} in namespace {:?}",
                permission.verb,
                permission.resource_path(),
                super::auth::API_GROUP,
                permission.namespace
            ),
            field: Some("namespace".into()),
        })
    }

    async fn allowed(
        &self,
        caller: &Caller,
        permission: &Permission,
    ) -> Result<bool, RequestError> {
        self.authentication
            .authorize(caller, permission)
            .await
            .map_err(|error| RequestError {
                status: 502,
                error: error.to_string(),
                field: None,
            })
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

/// The query string as `T`, with every name in it checked.
fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, RequestError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(query)| query)
        .map_err(|rejection| RequestError::bad_request("query", rejection.body_text()))
}

/// Put a job on a ScaledJob's queue.
#[utoipa::path(post, path = "/jobs", request_body = Submission, responses(
    (status = 202, description = "Enqueued", body = Accepted),
    (status = 400, description = "Invalid body; `field` names the culprit", body = RequestError),
    (status = 401, description = "Missing or invalid token", body = RequestError),
    (status = 403, description = "RBAC does not allow `create` on `scaledjobs/jobs` (windlass.dev) for this ScaledJob", body = RequestError),
    (status = 404, description = "No such ScaledJob", body = RequestError),
    (status = 409, description = "The ScaledJob has no usable SQS trigger", body = RequestError),
    (status = 413, description = "Body over 64 KiB", body = RequestError),
    (status = 429, description = "Rate limit exceeded; see Retry-After", body = RequestError),
    (status = 502, description = "Kubernetes or SQS failed", body = RequestError),
))]
async fn submit(
    State(api): State<Arc<JobsApi>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, RequestError> {
    let submission = parse_submission(&read_body(body).await?)?;
    api.authorize(
        &caller,
        Permission {
            verb: "create",
            resource: "scaledjobs",
            subresource: Some("jobs"),
            namespace: submission.namespace.clone(),
            name: Some(submission.scaled_job.clone()),
        },
    )
    .await?;
    let id = api.jobs.submit(&submission).await?;
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StatsQuery {
    /// Only this ScaledJob.
    scaled_job: Option<String>,
    /// Only this namespace.
    namespace: Option<String>,
}

/// Succeeded, failed and retried jobs, in total and per ScaledJob.
#[utoipa::path(get, path = "/jobs/stats", params(StatsQuery), responses(
    (status = 200, description = "Counts of the ScaledJobs in the namespaces where the caller may `list` `scaledjobs` (windlass.dev)", body = Stats),
    (status = 400, description = "Invalid query", body = RequestError),
    (status = 401, description = "Missing or invalid token", body = RequestError),
    (status = 403, description = "A `namespace` asked for where the caller may not `list` `scaledjobs`", body = RequestError),
    (status = 429, description = "Rate limit exceeded; see Retry-After", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn read_stats(
    State(api): State<Arc<JobsApi>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response, RequestError> {
    let query: StatsQuery = query(&uri)?;
    if let Some(name) = &query.scaled_job {
        check_name("scaledJob", name)?;
    }
    let list_in = |namespace: &str| Permission {
        verb: "list",
        resource: "scaledjobs",
        subresource: None,
        namespace: namespace.to_owned(),
        name: None,
    };
    if let Some(namespace) = &query.namespace {
        check_name("namespace", namespace)?;
        api.authorize(&caller, list_in(namespace)).await?;
    }
    let mut scaled_jobs = api.jobs.scaled_jobs(query.namespace.as_deref()).await?;
    scaled_jobs.retain(|sj| {
        query
            .scaled_job
            .as_ref()
            .is_none_or(|name| sj.metadata.name.as_ref() == Some(name))
    });
    // Without a namespace asked for (one asked for was authorized above): only those the
    // caller may list.
    if query.namespace.is_none() {
        let namespaces: BTreeSet<String> =
            scaled_jobs.iter().filter_map(|sj| sj.namespace()).collect();
        let mut visible = BTreeSet::new();
        for namespace in namespaces {
            if api.allowed(&caller, &list_in(&namespace)).await? {
                visible.insert(namespace);
            }
        }
        scaled_jobs.retain(|sj| sj.namespace().is_some_and(|ns| visible.contains(&ns)));
    }
    Ok(axum::Json(stats(&scaled_jobs)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NamespaceQuery {
    /// Defaults to `default`.
    namespace: Option<String>,
}

impl NamespaceQuery {
    fn from_uri(uri: &Uri) -> Result<String, RequestError> {
        let namespace = query::<Self>(uri)?
            .namespace
            .unwrap_or_else(|| "default".to_owned());
        check_name("namespace", &namespace)?;
        Ok(namespace)
    }
}

/// Create a JobSchedule that enqueues the payload on every cron tick.
#[utoipa::path(post, path = "/jobs/schedule", request_body = ScheduleRequest, responses(
    (status = 201, description = "Created", body = ScheduleCreated),
    (status = 400, description = "Invalid body, cron expression or time zone; nothing created", body = RequestError),
    (status = 401, description = "Missing or invalid token", body = RequestError),
    (status = 403, description = "RBAC does not allow `create` on `jobschedules` (windlass.dev) in the namespace", body = RequestError),
    (status = 404, description = "No such ScaledJob", body = RequestError),
    (status = 409, description = "A JobSchedule of that name exists", body = RequestError),
    (status = 413, description = "Body over 64 KiB", body = RequestError),
    (status = 429, description = "Rate limit exceeded; see Retry-After", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn create_schedule(
    State(api): State<Arc<JobsApi>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, RequestError> {
    let request: ScheduleRequest = parse_schedule_request(&read_body(body).await?)?;
    api.authorize(
        &caller,
        Permission {
            verb: "create",
            resource: "jobschedules",
            subresource: None,
            namespace: request.namespace.clone(),
            name: None,
        },
    )
    .await?;
    let created = api.jobs.create_schedule(&request).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// List the JobSchedules of a namespace.
#[utoipa::path(get, path = "/jobs/schedules", params(NamespaceQuery), responses(
    (status = 200, description = "The schedules", body = ScheduleList),
    (status = 400, description = "Invalid query", body = RequestError),
    (status = 401, description = "Missing or invalid token", body = RequestError),
    (status = 403, description = "RBAC does not allow `list` on `jobschedules` (windlass.dev) in the namespace", body = RequestError),
    (status = 404, description = "A namespace the controller does not watch", body = RequestError),
    (status = 429, description = "Rate limit exceeded; see Retry-After", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn list_schedules(
    State(api): State<Arc<JobsApi>>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
) -> Result<Response, RequestError> {
    let namespace = NamespaceQuery::from_uri(&uri)?;
    api.authorize(
        &caller,
        Permission {
            verb: "list",
            resource: "jobschedules",
            subresource: None,
            namespace: namespace.clone(),
            name: None,
        },
    )
    .await?;
    Ok(axum::Json(api.jobs.list_schedules(&namespace).await?).into_response())
}

/// Delete a JobSchedule; no further ticks are enqueued.
#[utoipa::path(delete, path = "/jobs/schedules/{name}", params(("name" = String, Path), NamespaceQuery), responses(
    (status = 204, description = "Deleted"),
    (status = 400, description = "Invalid name or query", body = RequestError),
    (status = 401, description = "Missing or invalid token", body = RequestError),
    (status = 403, description = "RBAC does not allow `delete` on `jobschedules` (windlass.dev) for this JobSchedule", body = RequestError),
    (status = 404, description = "No such JobSchedule", body = RequestError),
    (status = 429, description = "Rate limit exceeded; see Retry-After", body = RequestError),
    (status = 502, description = "Kubernetes failed", body = RequestError),
))]
async fn delete_schedule(
    State(api): State<Arc<JobsApi>>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, RequestError> {
    let Path(name) =
        name.map_err(|rejection| RequestError::bad_request("name", rejection.body_text()))?;
    check_name("name", &name)?;
    let namespace = NamespaceQuery::from_uri(&uri)?;
    api.authorize(
        &caller,
        Permission {
            verb: "delete",
            resource: "jobschedules",
            subresource: None,
            namespace: namespace.clone(),
            name: Some(name.clone()),
        },
    )
    .await?;
    api.jobs.delete_schedule(&namespace, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn kube_failure(what: &str, error: kube::Error) -> RequestError {
    RequestError {
        status: 502,
        error: format!("{what}: {error}"),
        field: None,
    }
}

/// A namespace the controller does not watch is not found, as it would be to the controller.
fn check_watched(scaling: &Scaling, namespace: &str) -> Result<(), RequestError> {
    if !scaling.watches(namespace) {
        return Err(RequestError {
            status: 404,
            error: format!("namespace {namespace:?} is not watched by this controller"),
            field: Some("namespace".into()),
        });
    }
    Ok(())
}

impl Jobs for Scaling {
    /// Nothing is sent unless the ScaledJob exists and has a usable queue.
    fn submit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> BoxFuture<'a, Result<String, RequestError>> {
        Box::pin(async move {
            let scaled_job =
                queue::scaled_job(self, &submission.namespace, &submission.scaled_job).await?;
            let id = uuid::Uuid::new_v4().to_string();
            let body = message_body(&id, &submission.payload, jiff::Timestamp::now(), None);
            queue::send(self, &scaled_job, &id, body).await?;
            Ok(id)
        })
    }

    fn create_schedule<'a>(
        &'a self,
        request: &'a ScheduleRequest,
    ) -> BoxFuture<'a, Result<ScheduleCreated, RequestError>> {
        Box::pin(async move {
            queue::scaled_job(self, &request.namespace, &request.scaled_job).await?;
            let schedules: Api<JobSchedule> =
                Api::namespaced(self.client.clone(), &request.namespace);
            let created = schedules
                .create(&PostParams::default(), &job_schedule(request))
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
            Ok(ScheduleCreated {
                name: created.name_any(),
                namespace: request.namespace.clone(),
                next_schedule_time: next.map(|tick| tick.to_string()),
            })
        })
    }

    fn list_schedules<'a>(
        &'a self,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<ScheduleList, RequestError>> {
        Box::pin(async move {
            check_watched(self, namespace)?;
            let list = Api::<JobSchedule>::namespaced(self.client.clone(), namespace)
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
            Ok(ScheduleList { schedules })
        })
    }

    fn delete_schedule<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), RequestError>> {
        Box::pin(async move {
            check_watched(self, namespace)?;
            let schedules: Api<JobSchedule> = Api::namespaced(self.client.clone(), namespace);
            match schedules.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Err(RequestError {
                    status: 404,
                    error: format!("JobSchedule {namespace}/{name} not found"),
                    field: Some("name".into()),
                }),
                Err(error) => Err(kube_failure("deleting the JobSchedule", error)),
            }
        })
    }

    fn scaled_jobs<'a>(
        &'a self,
        namespace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScaledJob>, RequestError>> {
        Box::pin(async move {
            let scaled_jobs: Api<ScaledJob> = match namespace {
                Some(namespace) => Api::namespaced(self.client.clone(), namespace),
                None => self.watched(),
            };
            scaled_jobs
                .list(&ListParams::default())
                .await
                .map(|list| list.items)
                .map_err(|error| kube_failure("listing ScaledJobs", error))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::jobs::auth::tests::FakeAuthority;

    /// Records what reaches it; answers as if Kubernetes and SQS had done it. ScaledJobs
    /// exist in namespaces `a` and `b`.
    #[derive(Default)]
    struct FakeJobs {
        calls: Mutex<Vec<String>>,
    }

    impl FakeJobs {
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }

        /// Submissions and schedules created: what puts work on a queue.
        fn enqueued(&self) -> Vec<String> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .filter(|call| call.starts_with("submit") || call.starts_with("create"))
                .cloned()
                .collect()
        }
    }

    impl Jobs for FakeJobs {
        fn submit<'a>(
            &'a self,
            submission: &'a Submission,
        ) -> BoxFuture<'a, Result<String, RequestError>> {
            self.record(format!(
                "submit {}/{}",
                submission.namespace, submission.scaled_job
            ));
            Box::pin(async { Ok("id-1".to_owned()) })
        }

        fn create_schedule<'a>(
            &'a self,
            request: &'a ScheduleRequest,
        ) -> BoxFuture<'a, Result<ScheduleCreated, RequestError>> {
            self.record(format!(
                "create {}/{}",
                request.namespace, request.scaled_job
            ));
            Box::pin(async move {
                Ok(ScheduleCreated {
                    name: "s".into(),
                    namespace: request.namespace.clone(),
                    next_schedule_time: None,
                })
            })
        }

        fn list_schedules<'a>(
            &'a self,
            namespace: &'a str,
        ) -> BoxFuture<'a, Result<ScheduleList, RequestError>> {
            self.record(format!("list {namespace}"));
            Box::pin(async { Ok(ScheduleList::default()) })
        }

        fn delete_schedule<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<(), RequestError>> {
            self.record(format!("delete {namespace}/{name}"));
            Box::pin(async { Ok(()) })
        }

        fn scaled_jobs<'a>(
            &'a self,
            namespace: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<ScaledJob>, RequestError>> {
            let scaled_job = |namespace: &str| -> ScaledJob {
                serde_json::from_value(json!({
                    "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
                    "metadata": {"name": "data-processor", "namespace": namespace},
                    "spec": {"jobTargetRef": {"template": {}}, "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]},
                    "status": {"succeeded": 1, "failed": 0, "retries": 0}
                }))
                .unwrap()
            };
            let all = ["a", "b"]
                .into_iter()
                .filter(|ns| namespace.is_none_or(|wanted| wanted == *ns))
                .map(scaled_job)
                .collect();
            Box::pin(async { Ok(all) })
        }
    }

    const TOKEN: &str = "t0ken";

    /// The router over a fake backend, with the static token and the fake authority (which
    /// lets `token-<ns>` act in namespace `<ns>` only).
    fn api(rate_limit: RateLimit) -> (Router, Arc<FakeJobs>) {
        let (router, jobs, _) = api_with_authority(rate_limit);
        (router, jobs)
    }

    fn api_with_authority(rate_limit: RateLimit) -> (Router, Arc<FakeJobs>, Arc<FakeAuthority>) {
        let jobs = Arc::new(FakeJobs::default());
        let authority = Arc::new(FakeAuthority::default());
        let router = router(
            jobs.clone(),
            Access {
                authentication: Authentication {
                    static_token: Some(TOKEN.into()),
                    kubernetes: Some(authority.clone()),
                },
                rate_limit,
            },
        );
        (router, jobs, authority)
    }

    const GENEROUS: RateLimit = RateLimit {
        per_second: 1000.0,
        burst: 1000,
    };

    async fn call(
        router: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = HttpRequest::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn an_unknown_field_is_a_400_naming_it_in_field() {
        let (router, jobs) = api(GENEROUS);
        for (path, body) in [
            ("/jobs", r#"{"scaledJob": "a", "priority": 1}"#),
            (
                "/jobs/schedule",
                r#"{"cron": "* * * * *", "scaledJob": "a", "priority": 1}"#,
            ),
        ] {
            let (status, _, error) = call(&router, "POST", path, Some(TOKEN), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(
                error,
                json!({"error": "unknown field \"priority\"", "field": "priority"}),
                "{path}"
            );
        }
        assert_eq!(jobs.enqueued(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_kubernetes_caller_acts_only_where_rbac_lets_it() {
        let (router, jobs) = api(GENEROUS);
        let submit = |ns: &str| json!({"scaledJob": "data-processor", "namespace": ns}).to_string();
        let (status, _, accepted) =
            call(&router, "POST", "/jobs", Some("token-a"), &submit("a")).await;
        assert_eq!(
            (status, accepted),
            (StatusCode::ACCEPTED, json!({"id": "id-1"}))
        );

        let (status, _, error) =
            call(&router, "POST", "/jobs", Some("token-a"), &submit("b")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            error,
            json!({
                "error": "system:serviceaccount:a:submitter may not create scaledjobs/jobs.windlass.dev in namespace \"b\"",
                "field": "namespace"
            })
        );
        let schedule = json!({"cron": "@daily", "scaledJob": "data-processor", "namespace": "b"});
        let (status, _, error) = call(
            &router,
            "POST",
            "/jobs/schedule",
            Some("token-a"),
            &schedule.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("may not create jobschedules.windlass.dev in namespace \"b\""),
            "{error}"
        );
        let (status, _, _) = call(
            &router,
            "DELETE",
            "/jobs/schedules/nightly?namespace=b",
            Some("token-a"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = call(
            &router,
            "GET",
            "/jobs/schedules?namespace=b",
            Some("token-a"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(jobs.enqueued(), vec!["submit a/data-processor"]);

        // The static token may act anywhere.
        let (status, _, _) = call(&router, "POST", "/jobs", Some(TOKEN), &submit("b")).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _, _) = call(
            &router,
            "DELETE",
            "/jobs/schedules/nightly?namespace=a",
            Some("token-a"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn stats_show_only_namespaces_the_caller_may_list() {
        let (router, _) = api(GENEROUS);
        let namespaces = |stats: &Value| -> Vec<String> {
            stats["scaledJobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|sj| sj["namespace"].as_str().unwrap().to_owned())
                .collect()
        };
        let (status, _, stats) = call(&router, "GET", "/jobs/stats", Some("token-a"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(namespaces(&stats), ["a"]);
        assert_eq!(stats["succeeded"], 1);
        let (_, _, stats) = call(&router, "GET", "/jobs/stats", Some(TOKEN), "").await;
        assert_eq!(namespaces(&stats), ["a", "b"]);
        let (status, _, error) = call(
            &router,
            "GET",
            "/jobs/stats?namespace=b",
            Some("token-a"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains("may not list scaledjobs.windlass.dev in namespace \"b\"")
        );
    }

    #[tokio::test]
    async fn a_missing_or_invalid_token_is_a_401_with_a_json_error() {
        let (router, jobs) = api(GENEROUS);
        let body = r#"{"scaledJob": "data-processor", "namespace": "a"}"#;
        for token in [None, Some("wrong"), Some("")] {
            let (status, headers, error) = call(&router, "POST", "/jobs", token, body).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(error, json!({"error": "missing or invalid bearer token"}));
        }
        assert_eq!(jobs.enqueued(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn callers_over_their_rate_get_429_with_retry_after() {
        let (router, _, authority) = api_with_authority(RateLimit {
            per_second: 0.5,
            burst: 2,
        });
        for _ in 0..2 {
            assert_eq!(
                call(&router, "GET", "/jobs/stats", Some("token-a"), "")
                    .await
                    .0,
                StatusCode::OK
            );
        }
        let (status, headers, error) =
            call(&router, "GET", "/jobs/stats", Some("token-a"), "").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "2");
        assert_eq!(error, json!({"error": "rate limit exceeded; retry in 2 s"}));
        // Another caller has its own budget.
        assert_eq!(
            call(&router, "GET", "/jobs/stats", Some("token-b"), "")
                .await
                .0,
            StatusCode::OK
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            call(&router, "GET", "/jobs/stats", Some("token-a"), "")
                .await
                .0,
            StatusCode::OK
        );

        // Failed authentications spend the remote address's budget; then it is refused
        // before any review, even with a valid token.
        for _ in 0..2 {
            assert_eq!(
                call(&router, "GET", "/jobs/stats", Some("bad"), "").await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        let reviews = authority.reviews.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            call(&router, "GET", "/jobs/stats", Some("bad"), "").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            call(&router, "GET", "/jobs/stats", Some("token-c"), "")
                .await
                .0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            call(&router, "GET", "/jobs/stats", Some(TOKEN), "").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            authority.reviews.load(std::sync::atomic::Ordering::SeqCst),
            reviews
        );
    }

    #[tokio::test]
    async fn unknown_routes_methods_and_queries_get_json_errors() {
        let (router, _) = api(GENEROUS);
        for (method, path, status, field) in [
            ("GET", "/nowhere", 404, None),
            ("PUT", "/jobs", 405, None),
            (
                "GET",
                "/jobs/stats?namespace=Bad_NS",
                400,
                Some("namespace"),
            ),
            ("GET", "/jobs/stats?color=red", 400, Some("query")),
            ("GET", "/jobs/schedules?namespace=", 400, Some("namespace")),
            ("DELETE", "/jobs/schedules/%FF", 400, Some("name")),
            ("DELETE", "/jobs/schedules/..", 400, Some("name")),
        ] {
            let (got, _, error) = call(&router, method, path, Some(TOKEN), "").await;
            assert_eq!(got.as_u16(), status, "{method} {path}: {error}");
            assert!(error["error"].is_string(), "{method} {path}: {error}");
            assert_eq!(error["field"].as_str(), field, "{method} {path}");
        }
    }

    fn method() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"
            ])
            .prop_map(str::to_owned),
            "[A-Z]{1,10}",
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        let known = prop::sample::select(vec![
            "/jobs",
            "/jobs/stats",
            "/jobs/schedule",
            "/jobs/schedules",
            "/jobs/schedules/",
            "/openapi.json",
        ]);
        prop_oneof![
            known.prop_map(str::to_owned),
            "(%[0-9A-Fa-f]{2}|[a-zA-Z0-9._~!$&'()*+,;=:@-]){0,20}"
                .prop_map(|name| format!("/jobs/schedules/{name}")),
            "(/[a-zA-Z0-9._~%-]{0,12}){1,4}",
        ]
    }

    fn query() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "(namespace|scaledJob|name|[a-z]{1,6})=(%[0-9A-Fa-f]{2}|[a-zA-Z0-9._~+-]){0,16}(&[a-zA-Z]{1,9}=[a-zA-Z0-9%._-]{0,8}){0,3}"
                .prop_map(|q| format!("?{q}")),
            "[a-zA-Z0-9=&%._~+-]{0,40}".prop_map(|q| format!("?{q}")),
        ]
    }

    /// Bodies that cannot be a valid request: arbitrary bytes, or a valid request broken one
    /// way (a required field dropped, a field of the wrong type, an unknown field, a bad name,
    /// truncated JSON).
    fn malformed_body() -> impl Strategy<Value = Vec<u8>> {
        let valid = json!({"scaledJob": "data-processor", "namespace": "a", "cron": "* * * * *", "payload": {"x": 1}});
        let broken = prop_oneof![
            Just(json!({"namespace": "a", "cron": "* * * * *"})),
            any::<i64>().prop_map(|n| json!({"scaledJob": n, "cron": "* * * * *"})),
            "[a-z]{1,8}".prop_map(
                |field| json!({"scaledJob": "a", "cron": "* * * * *", format!("x{field}"): 1})
            ),
            "[A-Z_ /]{1,20}".prop_map(|name| json!({"scaledJob": name, "cron": "* * * * *"})),
            "[ -~]{0,30}".prop_map(|cron| json!({"scaledJob": "a", "cron": format!("{cron} x")})),
            any::<bool>().prop_map(|flag| json!([flag])),
        ]
        .prop_map(|value| value.to_string().into_bytes());
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256).prop_filter("not JSON", |bytes| {
                serde_json::from_slice::<Value>(bytes).is_err()
            }),
            broken,
            (1..valid.to_string().len())
                .prop_map(move |cut| valid.to_string().as_bytes()[..cut].to_vec()),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(
            (
                prop_oneof![
                    Just("content-type".to_owned()),
                    Just("authorization".to_owned()),
                    Just("content-encoding".to_owned()),
                    "x-[a-z-]{1,12}",
                ],
                "[ -~]{0,40}",
            ),
            0..4,
        )
    }

    fn token() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(Some(TOKEN.to_owned())),
            Just(Some("token-a".to_owned())),
            Just(None),
            "[ -~]{0,20}".prop_map(Some),
        ]
    }

    fn run(router: Router, request: HttpRequest<Body>) -> (StatusCode, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            (
                status,
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
        })
    }

    fn is_json_error(body: &[u8]) -> bool {
        serde_json::from_slice::<Value>(body).is_ok_and(|error| error["error"].is_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any request: no panic, no 5xx, every error a JSON body, and nothing enqueued unless
        /// the request was accepted.
        #[test]
        fn any_request_gets_a_json_answer_and_enqueues_only_when_accepted(
            method in method(),
            path in path(),
            query in query(),
            body in prop_oneof![malformed_body(), prop::collection::vec(any::<u8>(), 0..64)],
            headers in headers(),
            token in token(),
        ) {
            let Ok(uri) = Uri::try_from(format!("{path}{query}")) else { return Ok(()) };
            let mut request = HttpRequest::builder().method(method.as_str()).uri(uri);
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(token) = &token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let Ok(request) = request.body(Body::from(body)) else { return Ok(()) };
            let (router, jobs) = api(GENEROUS);
            let (status, body) = run(router, request);
            prop_assert!(!status.is_server_error(), "{status}");
            if status.is_client_error() && method != "HEAD" {
                prop_assert!(is_json_error(&body), "{status}: {}", String::from_utf8_lossy(&body));
            }
            if !status.is_success() {
                prop_assert_eq!(jobs.enqueued(), Vec::<String>::new());
            }
        }

        /// A malformed body on the routes that enqueue: a 4xx JSON error, nothing enqueued,
        /// whatever the content type and other headers.
        #[test]
        fn malformed_bodies_are_4xx_json_errors_and_enqueue_nothing(
            path in prop::sample::select(vec!["/jobs", "/jobs/schedule"]),
            body in malformed_body(),
            headers in headers(),
            token in prop_oneof![Just(TOKEN), Just("token-a")],
        ) {
            let mut request = HttpRequest::post(path);
            for (name, value) in headers.iter().filter(|(name, _)| name != "authorization") {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(body.clone()));
            let Ok(request) = request else { return Ok(()) };
            let (router, jobs) = api(GENEROUS);
            let (status, answer) = run(router, request);
            prop_assert!(status.is_client_error(), "{status} for {}", String::from_utf8_lossy(&body));
            prop_assert!(is_json_error(&answer), "{}", String::from_utf8_lossy(&answer));
            prop_assert_eq!(jobs.enqueued(), Vec::<String>::new());
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
            for status in ["401", "429"] {
                assert!(
                    document["paths"][path][method]["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
        assert_eq!(
            document["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
