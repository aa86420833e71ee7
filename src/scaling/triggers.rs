//! Builds the scaler for a trigger, KEDA's factory keyed on the trigger type: parses the
//! metadata, resolves the queue URL and the credentials, and shares clients and readings.

use std::time::Duration;

use super::Scaling;
use super::auth::{self, AuthError};
use super::queue_depths::QueueKey;
use super::scaled_object::SetupError;
use super::scalers::Scaler;
use super::scalers::aws_sqs::AwsSqsScaler;
use super::target::{ScaleTarget, TargetError, container_env};
use crate::apis::triggers::{
    AwsSqsQueueTrigger, QueueSource, Trigger, TriggerMetadataError, TriggerType,
};
use crate::metrics::QueueLabels;

#[derive(Debug, thiserror::Error)]
pub enum TriggerSetupError {
    #[error(transparent)]
    Metadata(#[from] TriggerMetadataError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl TriggerSetupError {
    /// This error as the object's, naming the trigger.
    pub fn at(self, index: usize) -> SetupError {
        match self {
            TriggerSetupError::Metadata(source) => SetupError::Metadata { index, source },
            TriggerSetupError::Auth(source) => SetupError::Auth { index, source },
            TriggerSetupError::Target(source) => SetupError::Target(source),
        }
    }
}

/// Where `...FromEnv` metadata is read: a scale target's containers, or a Job template's.
pub enum EnvSource<'a> {
    Target(&'a ScaleTarget),
    PodSpec {
        spec: serde_json::Value,
        owner: &'a str,
    },
}

impl EnvSource<'_> {
    async fn pod_spec(&self) -> Result<serde_json::Value, TargetError> {
        match self {
            EnvSource::Target(target) => target.pod_spec().await,
            EnvSource::PodSpec { spec, .. } => Ok(spec.clone()),
        }
    }

    async fn value(&self, container: Option<&str>, var: &str) -> Result<String, TargetError> {
        match self {
            EnvSource::Target(target) => target.env_value(container, var).await,
            EnvSource::PodSpec { spec, owner } => {
                container_env(spec, container, var).ok_or_else(|| TargetError::EnvMissing {
                    var: var.to_owned(),
                    place: format!("container {:?} of {owner}", container.unwrap_or("(first)")),
                })
            }
        }
    }
}

pub async fn scaler(
    scaling: &Scaling,
    namespace: &str,
    trigger: &Trigger,
    env: &EnvSource<'_>,
    container: Option<&str>,
    interval: Duration,
) -> Result<Box<dyn Scaler>, TriggerSetupError> {
    match trigger.r#type {
        TriggerType::AwsSqsQueue => {
            let sqs = AwsSqsQueueTrigger::from_metadata(&trigger.metadata)?;
            let queue_url = match &sqs.queue {
                QueueSource::Url(url) => url.clone(),
                QueueSource::FromEnv(var) => env.value(container, var).await?,
            };
            let workload_pod_spec = env.pod_spec().await?;
            let auth = auth::load(
                &scaling.client,
                namespace,
                &scaling.controller_namespace,
                trigger.authentication_ref.as_ref(),
                &workload_pod_spec,
            )
            .await?;
            let client = scaling
                .sqs
                .client(
                    &auth,
                    sqs.aws_region.as_deref(),
                    sqs.aws_endpoint.as_deref(),
                )
                .await;
            let key = QueueKey {
                queue_url,
                region: sqs.aws_region.clone(),
                endpoint: sqs.aws_endpoint.clone(),
                identity: auth.identity_key(),
            };
            let requests = scaling
                .metrics
                .sqs_get_queue_attributes
                .get_or_create(&QueueLabels {
                    queue: key.queue_url.clone(),
                })
                .clone();
            Ok(Box::new(AwsSqsScaler::new(
                sqs,
                key,
                client,
                scaling.queue_depths.clone(),
                interval,
                requests,
            )))
        }
    }
}
