//! Scalers: one per trigger type behind one trait (KEDA's scaler/executor split). A scaler
//! reads its event source and reports a number with its target; the loop and the replica
//! arithmetic decide what that means for the workload.

pub mod aws_sqs;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::apis::triggers::TriggerMetadataError;

/// One reading of a trigger.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// Units of `value` one replica (or Job) takes on.
    pub target: f64,
    /// The object is active only above this.
    pub activation: f64,
}

pub trait Scaler: Send + Sync {
    /// Reads the source for the poll of `tick`: a reading shared with other objects must have
    /// been asked for at or after that tick.
    fn read(&self, tick: Instant) -> BoxFuture<'_, Result<Reading, ScalerError>>;

    /// What it reads (a queue URL): polls of one source share their ticks.
    fn source(&self) -> &str;

    /// KEDA's name for this scaler's type, its `scaler` label on `keda_*` series when the
    /// trigger has no name.
    fn keda_type_name(&self) -> &'static str;

    /// The metric name KEDA's scaler gives its reading, before the `s<index>-` prefix.
    fn keda_metric_name(&self) -> String;
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ScalerError {
    #[error(transparent)]
    Metadata(#[from] TriggerMetadataError),
    #[error("reading queue {queue}: {message}")]
    Source { queue: String, message: String },
}

impl ScalerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScalerError::Metadata(_) => "metadata",
            ScalerError::Source { .. } => "source",
        }
    }
}
