//! Builds the scaler for a trigger, KEDA's factory keyed on the trigger type: parses the
//! metadata, resolves the queue URL and the credentials, and shares clients and readings.

use super::Scaling;
use super::auth::{self, AuthError, ResolvedAuth};
use super::auth_users::{AuthKey, AuthUses};
use super::queue_depths::QueueKey;
use super::scaled_object::modifiers::ModifierError;
use super::scaled_object::replicas::BehaviorError;
use super::scalers::Scaler;
use super::scalers::aws_sqs::AwsSqsScaler;
use super::sqs_queue::{self, QueueAddress, QueueUrlError};
use super::target::TargetError;
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
    #[error("triggers[{index}]: {source}")]
    Queue { index: usize, source: QueueUrlError },
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
            SetupError::Queue { .. } => "QueueURLError",
            SetupError::Behavior(_) => "BehaviorError",
            SetupError::Modifiers(_) => "ScalingModifiersError",
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            SetupError::Target(e) => e.metric_label(),
            SetupError::Metadata { .. } => "metadata",
            SetupError::Auth { source, .. } => source.metric_label(),
            SetupError::Queue { source, .. } => source.metric_label(),
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
    Queue(#[from] QueueUrlError),
}

impl TriggerSetupError {
    /// This error as the object's, naming the trigger.
    pub fn at(self, index: usize) -> SetupError {
        match self {
            TriggerSetupError::Metadata(source) => SetupError::Metadata { index, source },
            TriggerSetupError::Auth(source) => SetupError::Auth { index, source },
            TriggerSetupError::Queue(source) => SetupError::Queue { index, source },
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

/// An SQS trigger's queue, found: its URL, the region it is in, and a client for it with the
/// trigger's credentials.
pub struct SqsQueue {
    pub trigger: AwsSqsQueueTrigger,
    pub url: String,
    pub region: Option<String>,
    pub client: aws_sdk_sqs::Client,
    pub auth: ResolvedAuth,
}

/// Finds an `aws-sqs-queue` trigger's queue: its URL from `queueURL` or the workload's
/// `queueURLFromEnv` variable, a queue name looked up with GetQueueUrl, and its region from
/// `awsRegion` or the URL.
pub async fn resolve_sqs_queue(
    scaling: &Scaling,
    namespace: &str,
    trigger: &Trigger,
    env: &EnvSource,
    container: Option<&str>,
    uses: &mut AuthUses,
) -> Result<SqsQueue, TriggerSetupError> {
    let sqs = AwsSqsQueueTrigger::from_metadata(&trigger.metadata)?;
    let given = match &sqs.queue {
        QueueSource::Given(queue) => queue.clone(),
        QueueSource::FromEnv(var) => {
            sqs_queue::from_env(
                &scaling.client,
                namespace,
                &env.pod_spec,
                container,
                var,
                &env.owner,
            )
            .await?
        }
    };
    let address = sqs_queue::address(&given)?;
    let region = sqs.aws_region.clone().or_else(|| match address {
        QueueAddress::Url(url) => sqs_queue::region_from_queue_url(url),
        QueueAddress::Name(_) => None,
    });
    let reference = sqs.authentication(trigger.authentication_ref.as_ref());
    let endpoint = sqs.aws_endpoint.as_deref();
    let resolved = match auth::load(
        &scaling.client,
        namespace,
        &scaling.controller_namespace,
        reference,
        &env.pod_spec,
    )
    .await
    {
        Ok(auth) => {
            let (client, credentials) = scaling
                .sqs
                .client_with_credentials(&auth, region.as_deref(), endpoint)
                .await;
            auth.check_credentials(credentials.as_ref())
                .await
                .map(|()| (auth, client))
        }
        Err(e) => Err(e),
    };
    if let Some(reference) = reference {
        let resolution = resolved.as_ref().map(|_| ()).map_err(ToString::to_string);
        uses.record(AuthKey::of(reference, namespace), resolution);
    }
    let (auth, client) = resolved?;
    let url = match address {
        QueueAddress::Url(url) => url.to_owned(),
        QueueAddress::Name(name) => {
            scaling
                .sqs
                .queue_urls
                .url(
                    &client,
                    region.as_deref(),
                    endpoint,
                    auth.identity_key(),
                    name,
                )
                .await?
        }
    };
    Ok(SqsQueue {
        trigger: sqs,
        url,
        region,
        client,
        auth,
    })
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
            let queue =
                resolve_sqs_queue(scaling, namespace, trigger, env, container, uses).await?;
            let key = QueueKey {
                queue_url: queue.url,
                region: queue.region,
                endpoint: queue.trigger.aws_endpoint.clone(),
                identity: queue.auth.identity_key(),
            };
            let requests = scaling
                .metrics
                .sqs_get_queue_attributes
                .get_or_create(&QueueLabels {
                    queue: key.queue_url.clone(),
                })
                .clone();
            Ok(Box::new(AwsSqsScaler::new(
                queue.trigger,
                key,
                queue.client,
                scaling.queue_depths.clone(),
                requests,
            )))
        }
    }
}
