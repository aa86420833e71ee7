//! The workload side (KEDA semantics): scalers read event sources, the arithmetic turns
//! readings into replicas and Jobs, and one loop per object acts on the result.

pub mod auth;
pub mod jobs;
pub mod queue_depths;
pub mod replicas;
pub mod scaled_object;
pub mod scalers;
pub mod target;
pub mod triggers;

use std::sync::Arc;

use kube::runtime::events::Recorder;

use crate::metrics::Metrics;
use queue_depths::QueueDepths;
use scalers::aws_sqs::SqsClients;

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
    pub scaled_object_loops: scaled_object::Loops,
}
