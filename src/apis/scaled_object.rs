//! ScaledObject: scales anything with a `/scale` subresource from trigger metrics, with KEDA's
//! semantics and without an HPA object.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::schema::without_descriptions;
use super::triggers::{MetricType, Trigger, TriggerValue};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "ScaledObject",
    namespaced,
    shortname = "so",
    category = "windlass",
    status = "ScaledObjectStatus",
    derive = "PartialEq",
    doc = "Scales a workload with a /scale subresource from event-source metrics (KEDA ScaledObject semantics).",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.currentReplicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Paused\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// A maxReplicaCount below its own minimum is reported by that rule alone.
#[x_kube(validation = Rule::new("self.maxReplicaCount < 1 || self.minReplicaCount <= self.maxReplicaCount").message("minReplicaCount must not exceed maxReplicaCount").field_path(".minReplicaCount"))]
#[x_kube(validation = Rule::new("!has(self.idleReplicaCount) || self.idleReplicaCount < self.minReplicaCount").message("idleReplicaCount must be less than minReplicaCount").field_path(".idleReplicaCount"))]
#[x_kube(validation = Rule::new("self.triggers.all(t, !has(t.name) || self.triggers.filter(u, has(u.name) && u.name == t.name).size() == 1)").message("trigger names must be unique: status and metrics are keyed by them").field_path(".triggers"))]
#[x_kube(validation = Rule::new("!has(self.fallback) || self.triggers.all(t, !has(t.metricType) || t.metricType == 'AverageValue')").message("fallback requires every trigger to use metricType AverageValue").field_path(".fallback"))]
#[x_kube(validation = Rule::new("!has(self.advanced) || !has(self.advanced.scalingModifiers) || self.triggers.all(t, has(t.name) && t.name != '')").message("scalingModifiers requires every trigger to have a name: the formula names triggers by it").field_path(".triggers"))]
pub struct ScaledObjectSpec {
    /// The workload to scale.
    pub scale_target_ref: ScaleTargetRef,
    /// Seconds between trigger polls.
    #[serde(default = "default_polling_interval")]
    #[schemars(range(min = 1))]
    pub polling_interval: i32,
    /// Seconds of inactivity before scaling back to idle/min.
    #[serde(default = "default_cooldown_period")]
    #[schemars(range(min = 0))]
    pub cooldown_period: i32,
    /// Seconds after creation before a never-active object may scale to idle/min.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: i32,
    /// Replicas while inactive, if different from minReplicaCount (KEDA allows only 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 0))]
    pub idle_replica_count: Option<i32>,
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replica_count: i32,
    #[serde(default = "default_max_replica_count")]
    #[schemars(range(min = 1))]
    pub max_replica_count: i32,
    /// Replicas to hold while the triggers keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<AdvancedConfig>,
    #[schemars(length(min = 1, max = 32))]
    pub triggers: Vec<Trigger>,
}

fn default_polling_interval() -> i32 {
    30
}

fn default_cooldown_period() -> i32 {
    300
}

fn default_max_replica_count() -> i32 {
    100
}

/// The workload to scale: any kind that serves a `/scale` subresource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default = "default_target_api_version")]
    pub api_version: String,
    #[serde(default = "default_target_kind")]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
    /// The container whose environment `...FromEnv` metadata reads; the first one if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
}

fn default_target_api_version() -> String {
    "apps/v1".into()
}

fn default_target_kind() -> String {
    "Deployment".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive failed polls of a trigger before fallback applies.
    #[schemars(range(min = 1))]
    pub failure_threshold: i32,
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[serde(default)]
    pub behavior: FallbackBehavior,
}

/// How the fallback replica count combines with the current one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FallbackBehavior {
    /// Exactly `fallback.replicas`.
    #[default]
    Static,
    /// Keep the current replicas.
    CurrentReplicas,
    /// The current replicas if higher than `fallback.replicas`, else `fallback.replicas`.
    CurrentReplicasIfHigher,
    /// The current replicas if lower than `fallback.replicas`, else `fallback.replicas`.
    CurrentReplicasIfLower,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedConfig {
    /// On delete, put the target back to the replicas it had before Windlass scaled it.
    #[serde(default)]
    pub restore_to_original_replica_count: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<HorizontalPodAutoscalerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<ScalingModifiers>,
}

/// KEDA's HPA settings; Windlass applies the behavior itself and creates no HPA.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalPodAutoscalerConfig {
    /// Accepted for KEDA compatibility; no HPA is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Scale-up and scale-down policies and stabilization windows (autoscaling/v2 shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "without_descriptions::<Option<HorizontalPodAutoscalerBehavior>>")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// Combines the named triggers into one metric with a formula, which replaces them in the
/// replica decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.target.matches('^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$') && double(self.target) > 0.0").message("target must be a number above 0").field_path(".target"))]
#[x_kube(validation = Rule::new("!has(self.activationTarget) || self.activationTarget.matches('^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?$')").message("activationTarget must be a number of 0 or more").field_path(".activationTarget"))]
#[x_kube(validation = Rule::new("!has(self.metricType) || self.metricType != 'Utilization'").message("metricType Utilization is not supported with scalingModifiers; use AverageValue or Value").field_path(".metricType"))]
pub struct ScalingModifiers {
    /// An expr-lang expression over the triggers' names, e.g. `(queue_a + queue_b) / 2`.
    #[schemars(length(min = 1, max = 4096))]
    pub formula: String,
    /// Target value of the composed metric, a number above 0.
    #[schemars(length(min = 1, max = 64))]
    pub target: String,
    /// The composed metric above this value makes the object active; 0 if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub activation_target: Option<String>,
    /// How the composed metric is compared with the target: AverageValue (default) or Value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricType>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The target's kind as resolved (`apps/v1.Deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_kind: Option<String>,
    /// The target's replicas before Windlass first scaled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When a trigger last reported activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Per trigger: consecutive failures and whether it is healthy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, TriggerHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_replica_count: Option<i32>,
    /// Per trigger: the value it last read and its target, from the last poll that read it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trigger_values: BTreeMap<String, TriggerValue>,
    /// When Windlass last changed the target's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerHealth {
    pub number_of_failures: i32,
    pub status: HealthStatus,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HealthStatus {
    #[default]
    Happy,
    Failing,
}
