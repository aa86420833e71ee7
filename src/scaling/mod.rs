//! The workload side (KEDA semantics): scalers read event sources, the arithmetic turns
//! readings into replicas and Jobs, and one loop per object acts on the result.

pub mod auth;
pub mod auth_users;
pub mod container_env;
pub mod eks_pod_identity;
pub mod loops;
pub mod queue_depths;
pub mod scaled_job;
pub mod scaled_object;
pub mod scalers;
pub mod sqs_queue;
pub mod target;
pub mod trigger_auths;
pub mod triggers;
pub mod workload_identity;

use std::sync::Arc;

use crate::events::Recorder;
use jiff::SignedDuration;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::{Api, Resource};

use crate::apis::conditions::{self, condition};

use crate::apis::scaled_job::ScaledJob;
use crate::apis::scaled_object::ScaledObject;
use crate::metrics::Metrics;
use queue_depths::QueueDepths;
use scalers::aws_sqs::SqsClients;

/// Credentials and queue URLs are resolved again this often, so rotated Secrets take effect.
pub(crate) const SETUP_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// What the scaling controllers and their loops share.
pub struct Scaling {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Only objects in this namespace are handled; all when `None`.
    pub watch_namespace: Option<String>,
    /// Where ClusterTriggerAuthentications read their Secrets.
    pub controller_namespace: String,
    pub sqs: SqsClients,
    pub queue_depths: QueueDepths,
    pub scaled_object_loops: loops::Loops<ScaledObject>,
    pub scaled_job_loops: loops::Loops<ScaledJob>,
    /// The Jobs and pods the ScaledJob loops read.
    pub scaled_job_store: scaled_job::store::ScaledJobStore,
    /// What is scaling out, for disruption to hold consolidation off.
    pub scale_outs: Arc<crate::scale_outs::ScaleOuts>,
    /// Which objects use each TriggerAuthentication, for its status.
    pub auth_users: auth_users::AuthUsers,
}

impl Scaling {
    /// The API the controllers watch: the watched namespace, or every namespace.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match &self.watch_namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// Whether objects in `namespace` are handled by this install.
    pub fn watches(&self, namespace: &str) -> bool {
        self.watch_namespace
            .as_deref()
            .is_none_or(|w| w == namespace)
    }
}

/// Whether a status whose only change is `lastActiveTime` is worth writing: at most once a
/// minute, so an active object does not rewrite (and re-trigger) itself every poll.
pub fn activity_is_stale(written: Option<&Time>, now: Option<&Time>) -> bool {
    match (written, now) {
        (Some(old), Some(new)) => new.0.duration_since(old.0) >= SignedDuration::from_secs(60),
        (old, new) => old != new,
    }
}

/// Ready from this poll's trigger errors, with a Warning Event the first time a problem is seen.
pub(crate) async fn trigger_readiness<K: Resource<DynamicType = ()>>(
    scaling: &Scaling,
    object: &K,
    existing: &[Condition],
    errors: &[String],
    last_problem: &mut Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    if errors.is_empty() {
        *last_problem = None;
        return condition(
            existing,
            conditions::READY,
            true,
            "ScalerReady",
            "triggers are being polled",
            generation,
            now,
        );
    }
    let message = errors.join("; ");
    report_event_once(scaling, object, "TriggerError", &message, last_problem).await;
    condition(
        existing,
        conditions::READY,
        false,
        "TriggerError",
        message,
        generation,
        now,
    )
}

/// A Warning Event, unless it repeats the last problem reported for this object.
pub(crate) async fn report_event_once<K: Resource<DynamicType = ()>>(
    scaling: &Scaling,
    object: &K,
    reason: &str,
    message: &str,
    last_problem: &mut Option<String>,
) {
    if last_problem.as_deref() == Some(message) {
        return;
    }
    *last_problem = Some(message.to_owned());
    publish(
        scaling,
        object,
        EventType::Warning,
        reason,
        message.to_owned(),
    )
    .await;
}

pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    scaling: &Scaling,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    crate::events::publish(&scaling.recorder, object, type_, reason, note, "Scaling").await;
}
