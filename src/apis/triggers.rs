//! Triggers shared by ScaledObject and ScaledJob, in KEDA's shape: a type, string metadata and
//! an optional authentication reference. Typed views of the metadata parse it with KEDA's
//! defaults, so a bad value is reported with the key that holds it.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::bounded_string_map;

/// A trigger's last reading, kept in status so that a view of the cluster (`windlass top`)
/// shows the queue behind each decision without reaching the event source itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerValue {
    /// What the trigger last read: an SQS queue's counted messages.
    pub value: f64,
    /// How much of `value` one replica or Job takes on (the trigger's `queueLength`).
    pub target: f64,
}

/// One event source that drives scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'aws-sqs-queue' || 'queueURL' in self.metadata || 'queueURLFromEnv' in self.metadata").message("aws-sqs-queue trigger needs metadata.queueURL or metadata.queueURLFromEnv"))]
#[x_kube(validation = Rule::new("!('queueLength' in self.metadata) || self.metadata['queueLength'].matches('^[0-9]+$') && int(self.metadata['queueLength']) > 0").message("metadata.queueLength must be a positive integer"))]
#[x_kube(validation = Rule::new("!('activationQueueLength' in self.metadata) || self.metadata['activationQueueLength'].matches('^[0-9]+$')").message("metadata.activationQueueLength must be a non-negative integer"))]
#[x_kube(validation = Rule::new("!('scaleOnInFlight' in self.metadata) || self.metadata['scaleOnInFlight'] in ['true', 'false']").message("metadata.scaleOnInFlight must be \"true\" or \"false\""))]
#[x_kube(validation = Rule::new("!('scaleOnDelayed' in self.metadata) || self.metadata['scaleOnDelayed'] in ['true', 'false']").message("metadata.scaleOnDelayed must be \"true\" or \"false\""))]
#[x_kube(validation = Rule::new("!('identityOwner' in self.metadata) || self.metadata['identityOwner'] in ['pod', 'operator']").message("metadata.identityOwner must be \"pod\" or \"operator\""))]
#[x_kube(validation = Rule::new("!has(self.metricType) || self.metricType != 'Utilization'").message("metricType Utilization needs a resource metric; aws-sqs-queue gives AverageValue or Value").field_path(".metricType"))]
pub struct Trigger {
    /// The event source.
    pub r#type: TriggerType,
    /// Optional name, unique within the object; used in status and metrics. Bounded so the
    /// API server can afford the uniqueness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    /// Source-specific settings, as strings (KEDA's format).
    #[serde(default)]
    #[schemars(schema_with = "bounded_string_map::<32, 2048>")]
    pub metadata: BTreeMap<String, String>,
    /// Where the credentials for this trigger come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<AuthenticationRef>,
    /// How the metric is compared with its target (ScaledObjects; a ScaledJob takes only
    /// AverageValue, its Jobs being one per `queueLength`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricType>,
    /// Accepted for KEDA compatibility; every poll of a shared queue is already cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cached_metrics: Option<bool>,
}

/// The event sources Windlass can poll.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TriggerType {
    /// Amazon SQS queue depth.
    #[serde(rename = "aws-sqs-queue")]
    AwsSqsQueue,
}

/// A reference to a TriggerAuthentication (default) or ClusterTriggerAuthentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default)]
    pub kind: AuthenticationKind,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthenticationKind {
    #[default]
    TriggerAuthentication,
    ClusterTriggerAuthentication,
}

/// The HPA metric target types KEDA accepts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MetricType {
    #[default]
    AverageValue,
    Value,
    Utilization,
}

/// An `aws-sqs-queue` trigger's metadata, parsed, with KEDA's defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSqsQueueTrigger {
    pub queue: QueueSource,
    /// Target messages per replica (or per job).
    pub queue_length: i64,
    /// The object is active only above this many messages.
    pub activation_queue_length: i64,
    pub aws_region: Option<String>,
    pub aws_endpoint: Option<String>,
    /// Count messages received but not yet deleted.
    pub scale_on_in_flight: bool,
    /// Count messages still in their delivery delay.
    pub scale_on_delayed: bool,
    /// KEDA's legacy `identityOwner` metadata.
    pub identity_owner: TriggerIdentityOwner,
}

/// Whose credentials the trigger uses, KEDA's legacy `identityOwner` metadata of the AWS
/// scalers: `pod` (the default) those its `authenticationRef` gives (with KEDA's removed
/// `aws-eks` provider, the workload's role: Windlass's `identityOwner: workload`); `operator`
/// the controller's own identity, whatever the `authenticationRef` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TriggerIdentityOwner {
    #[default]
    Pod,
    Operator,
}

/// Where the queue comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueSource {
    /// `queueURL` as written: a queue URL, or a queue's name (looked up with GetQueueUrl).
    Given(String),
    /// The name of an environment variable of the scale target's container.
    FromEnv(String),
}

/// A metadata key held a value that could not be used.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("trigger metadata {key}: {reason}")]
pub struct TriggerMetadataError {
    pub key: &'static str,
    pub reason: String,
}

impl AwsSqsQueueTrigger {
    pub const DEFAULT_QUEUE_LENGTH: i64 = 5;
    pub const DEFAULT_ACTIVATION_QUEUE_LENGTH: i64 = 0;

    /// The authentication the trigger's credentials come from: none (the controller's own
    /// identity) for `identityOwner: operator`, whatever `reference` names.
    pub fn authentication<'a>(
        &self,
        reference: Option<&'a AuthenticationRef>,
    ) -> Option<&'a AuthenticationRef> {
        match self.identity_owner {
            TriggerIdentityOwner::Pod => reference,
            TriggerIdentityOwner::Operator => None,
        }
    }

    /// Parses the metadata of an `aws-sqs-queue` trigger.
    pub fn from_metadata(
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, TriggerMetadataError> {
        let queue = match (
            non_empty(metadata, "queueURL"),
            non_empty(metadata, "queueURLFromEnv"),
        ) {
            (Some(queue), _) => QueueSource::Given(queue.to_owned()),
            (None, Some(var)) => QueueSource::FromEnv(var.to_owned()),
            (None, None) => {
                return Err(TriggerMetadataError {
                    key: "queueURL",
                    reason: "one of queueURL or queueURLFromEnv is required".into(),
                });
            }
        };
        let queue_length = integer(metadata, "queueLength", Self::DEFAULT_QUEUE_LENGTH)?;
        if queue_length <= 0 {
            return Err(TriggerMetadataError {
                key: "queueLength",
                reason: format!("must be positive, got {queue_length}"),
            });
        }
        let activation_queue_length = integer(
            metadata,
            "activationQueueLength",
            Self::DEFAULT_ACTIVATION_QUEUE_LENGTH,
        )?;
        if activation_queue_length < 0 {
            return Err(TriggerMetadataError {
                key: "activationQueueLength",
                reason: format!("must not be negative, got {activation_queue_length}"),
            });
        }
        Ok(Self {
            queue,
            queue_length,
            activation_queue_length,
            aws_region: non_empty(metadata, "awsRegion").map(str::to_owned),
            aws_endpoint: non_empty(metadata, "awsEndpoint").map(str::to_owned),
            scale_on_in_flight: boolean(metadata, "scaleOnInFlight", true)?,
            scale_on_delayed: boolean(metadata, "scaleOnDelayed", false)?,
            identity_owner: match non_empty(metadata, "identityOwner") {
                None | Some("pod") => TriggerIdentityOwner::Pod,
                Some("operator") => TriggerIdentityOwner::Operator,
                Some(other) => {
                    return Err(TriggerMetadataError {
                        key: "identityOwner",
                        reason: format!("{other:?} is neither pod nor operator"),
                    });
                }
            },
        })
    }
}

fn non_empty<'a>(metadata: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    metadata
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

fn integer(
    metadata: &BTreeMap<String, String>,
    key: &'static str,
    default: i64,
) -> Result<i64, TriggerMetadataError> {
    non_empty(metadata, key).map_or(Ok(default), |v| {
        v.parse().map_err(|_| TriggerMetadataError {
            key,
            reason: format!("{v:?} is not an integer"),
        })
    })
}

fn boolean(
    metadata: &BTreeMap<String, String>,
    key: &'static str,
    default: bool,
) -> Result<bool, TriggerMetadataError> {
    non_empty(metadata, key).map_or(Ok(default), |v| {
        v.parse().map_err(|_| TriggerMetadataError {
            key,
            reason: format!("{v:?} is not true or false"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sqs_trigger_defaults_match_keda() {
        let trigger =
            AwsSqsQueueTrigger::from_metadata(&metadata(&[("queueURL", "https://sqs/q")])).unwrap();
        assert_eq!(trigger.queue, QueueSource::Given("https://sqs/q".into()));
        assert_eq!(trigger.queue_length, 5);
        assert_eq!(trigger.activation_queue_length, 0);
        assert!(trigger.scale_on_in_flight);
        assert!(!trigger.scale_on_delayed);
        assert_eq!(trigger.aws_region, None);
    }

    #[test]
    fn sqs_trigger_reads_every_field() {
        let trigger = AwsSqsQueueTrigger::from_metadata(&metadata(&[
            ("queueURLFromEnv", "QUEUE_URL"),
            ("queueLength", "1"),
            ("activationQueueLength", "3"),
            ("awsRegion", "eu-west-1"),
            ("awsEndpoint", "http://127.0.0.1:5000"),
            ("scaleOnInFlight", "false"),
            ("scaleOnDelayed", "true"),
        ]))
        .unwrap();
        assert_eq!(trigger.queue, QueueSource::FromEnv("QUEUE_URL".into()));
        assert_eq!(
            (trigger.queue_length, trigger.activation_queue_length),
            (1, 3)
        );
        assert_eq!(trigger.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            trigger.aws_endpoint.as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert!(!trigger.scale_on_in_flight);
        assert!(trigger.scale_on_delayed);
    }

    #[test]
    fn sqs_trigger_errors_name_the_key() {
        let missing = AwsSqsQueueTrigger::from_metadata(&metadata(&[])).unwrap_err();
        assert_eq!(missing.key, "queueURL");
        let bad_length = AwsSqsQueueTrigger::from_metadata(&metadata(&[
            ("queueURL", "u"),
            ("queueLength", "five"),
        ]))
        .unwrap_err();
        assert_eq!(bad_length.key, "queueLength");
        assert!(bad_length.to_string().contains("\"five\""));
        let zero = AwsSqsQueueTrigger::from_metadata(&metadata(&[
            ("queueURL", "u"),
            ("queueLength", "0"),
        ]))
        .unwrap_err();
        assert_eq!(zero.key, "queueLength");
        let bad_flag = AwsSqsQueueTrigger::from_metadata(&metadata(&[
            ("queueURL", "u"),
            ("scaleOnDelayed", "yes"),
        ]))
        .unwrap_err();
        assert_eq!(bad_flag.key, "scaleOnDelayed");
    }

    #[test]
    fn identity_owner_operator_drops_the_authentication_and_pod_keeps_it() {
        let keys = AuthenticationRef {
            name: "keys".into(),
            kind: AuthenticationKind::TriggerAuthentication,
        };
        let parsed = |owner: Option<&str>| {
            let mut pairs = vec![("queueURL", "u")];
            pairs.extend(owner.map(|owner| ("identityOwner", owner)));
            AwsSqsQueueTrigger::from_metadata(&metadata(&pairs))
        };
        let default = parsed(None).unwrap();
        assert_eq!(default.identity_owner, TriggerIdentityOwner::Pod);
        assert_eq!(default.authentication(Some(&keys)), Some(&keys));
        let pod = parsed(Some("pod")).unwrap();
        assert_eq!(pod.authentication(Some(&keys)), Some(&keys));
        let operator = parsed(Some("operator")).unwrap();
        assert_eq!(operator.identity_owner, TriggerIdentityOwner::Operator);
        assert_eq!(operator.authentication(Some(&keys)), None);
        let unknown = parsed(Some("workload")).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "trigger metadata identityOwner: \"workload\" is neither pod nor operator"
        );
    }
}
