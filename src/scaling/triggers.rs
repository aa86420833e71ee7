//! Builds the scaler for a trigger, KEDA's factory keyed on the trigger type: parses the
//! metadata, resolves the queue URL and the credentials, and shares clients and readings.

use super::Scaling;
use super::auth::{self, AuthError};
use super::auth_users::{AuthKey, AuthUses};
use super::queue_depths::QueueKey;
use super::scaled_object::modifiers::ModifierError;
use super::scaled_object::replicas::BehaviorError;
use super::scalers::Scaler;
use super::scalers::aws_sqs::AwsSqsScaler;
use super::target::{TargetError, container_env};
use crate::apis::triggers::{
    AwsSqsQueueTrigger, QueueSource, Trigger, TriggerMetadataError, TriggerType,
};
use crate::metrics::QueueLabels;
use crate::metrics::keda::{self, ScalableKind, ScalerSeries};

/// Why an object's loop could not start polling; shown as Ready=False and an Event.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("triggers[{index}]: {source}")]
    Metadata {
        index: usize,
        source: TriggerMetadataError,
    },
    #[error("triggers[{index}].authenticationRef: {source}")]
    Auth { index: usize, source: AuthError },
    #[error(transparent)]
    Behavior(#[from] BehaviorError),
    #[error(transparent)]
    Modifiers(#[from] ModifierError),
}

impl SetupError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            SetupError::Target(_) => "ScaleTargetError",
            SetupError::Metadata { .. } => "TriggerMetadataError",
            SetupError::Auth { .. } => "AuthenticationError",
            SetupError::Behavior(_) => "BehaviorError",
            SetupError::Modifiers(_) => "ScalingModifiersError",
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            SetupError::Target(e) => e.metric_label(),
            SetupError::Metadata { .. } => "metadata",
            SetupError::Auth { source, .. } => source.metric_label(),
            SetupError::Behavior(_) => "behavior",
            SetupError::Modifiers(_) => "scaling_modifiers",
        }
    }
}

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

/// The workload a trigger scales, as its pod spec: `...FromEnv` metadata and `env`
/// authentication read its containers, identity reads its ServiceAccount. Read once per setup.
pub struct EnvSource {
    pub pod_spec: serde_json::Value,
    /// Names the workload in messages, e.g. `apps/v1.Deployment "worker"`.
    pub owner: String,
}

impl EnvSource {
    fn value(&self, container: Option<&str>, var: &str) -> Result<String, TargetError> {
        container_env(&self.pod_spec, container, var).ok_or_else(|| TargetError::EnvMissing {
            var: var.to_owned(),
            place: format!(
                "container {:?} of {}",
                container.unwrap_or("(first)"),
                self.owner
            ),
        })
    }
}

/// The `keda_scaler_*` labels of trigger `index` of an object, as KEDA gives them: the
/// trigger's name or else the scaler's type name, and the metric name with its `s<index>-`.
pub fn keda_series(
    kind: ScalableKind,
    namespace: &str,
    object: &str,
    index: usize,
    trigger: &Trigger,
    scaler: &dyn Scaler,
) -> ScalerSeries {
    ScalerSeries {
        namespace: namespace.to_owned(),
        object: object.to_owned(),
        kind,
        scaler: trigger
            .name
            .clone()
            .unwrap_or_else(|| scaler.keda_type_name().to_owned()),
        trigger_index: index,
        metric: keda::metric_name(index, &scaler.keda_metric_name()),
    }
}

/// The trigger's scaler; whether its authentication resolved goes into `uses`.
pub async fn scaler(
    scaling: &Scaling,
    namespace: &str,
    trigger: &Trigger,
    env: &EnvSource,
    container: Option<&str>,
    uses: &mut AuthUses,
) -> Result<Box<dyn Scaler>, TriggerSetupError> {
    match trigger.r#type {
        TriggerType::AwsSqsQueue => {
            let sqs = AwsSqsQueueTrigger::from_metadata(&trigger.metadata)?;
            let queue_url = match &sqs.queue {
                QueueSource::Url(url) => url.clone(),
                QueueSource::FromEnv(var) => env.value(container, var)?,
            };
            let reference = sqs.authentication(trigger.authentication_ref.as_ref());
            let auth = auth::load(
                &scaling.client,
                namespace,
                &scaling.controller_namespace,
                reference,
                &env.pod_spec,
            )
            .await;
            if let Some(reference) = reference {
                let resolution = auth.as_ref().map(|_| ()).map_err(ToString::to_string);
                uses.record(AuthKey::of(reference, namespace), resolution);
            }
            let auth = auth?;
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
                requests,
            )))
        }
    }
}
