//! ScaledJob: creates Kubernetes Jobs from trigger metrics with KEDA's scaling strategies, and
//! keeps counters of job outcomes that survive history cleanup.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::schema::without_descriptions;
use super::triggers::{Trigger, TriggerValue};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "ScaledJob",
    namespaced,
    shortname = "sj",
    category = "windlass",
    status = "ScaledJobStatus",
    derive = "PartialEq",
    doc = "Creates Jobs from event-source metrics (KEDA ScaledJob semantics).",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicaCount"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicaCount"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.runningJobs"),
    printcolumn(name = "Succeeded", type_ = "integer", json_path = ".status.succeeded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Retries",
        type_ = "integer",
        json_path = ".status.retries",
        priority = 1
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
// A negative maxReplicaCount is reported by its own minimum alone.
#[x_kube(validation = Rule::new("self.maxReplicaCount < 0 || self.minReplicaCount <= self.maxReplicaCount").message("minReplicaCount must not exceed maxReplicaCount").field_path(".minReplicaCount"))]
#[x_kube(validation = Rule::new("self.triggers.all(t, !has(t.name) || self.triggers.filter(u, has(u.name) && u.name == t.name).size() == 1)").message("trigger names must be unique: status and metrics are keyed by them").field_path(".triggers"))]
#[x_kube(validation = Rule::new("self.triggers.all(t, !has(t.metricType) || t.metricType == 'AverageValue')").message("a ScaledJob counts one Job per queueLength: its triggers' metricType can only be AverageValue").field_path(".triggers"))]
pub struct ScaledJobSpec {
    /// The Job to create for each unit of work (a batch/v1 JobSpec).
    #[schemars(schema_with = "without_descriptions::<JobSpec>")]
    pub job_target_ref: JobSpec,
    /// Seconds between trigger polls.
    #[serde(default = "default_polling_interval")]
    #[schemars(range(min = 1))]
    pub polling_interval: i32,
    /// Finished successful Jobs to keep; older ones are deleted (their counts are kept).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0))]
    pub successful_jobs_history_limit: i32,
    /// Finished failed Jobs to keep; older ones are deleted (their counts are kept).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0))]
    pub failed_jobs_history_limit: i32,
    /// The container whose environment `...FromEnv` metadata reads; the first one if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_source_container_name: Option<String>,
    /// Jobs kept running (or created) even with no messages.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replica_count: i32,
    /// The most unfinished Jobs at once.
    #[serde(default = "default_max_replica_count")]
    #[schemars(range(min = 0))]
    pub max_replica_count: i32,
    /// What happens to running Jobs when this spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    #[serde(default)]
    pub scaling_strategy: ScalingStrategy,
    #[schemars(length(min = 1, max = 32))]
    pub triggers: Vec<Trigger>,
}

fn default_polling_interval() -> i32 {
    30
}

fn default_history_limit() -> i32 {
    100
}

fn default_max_replica_count() -> i32 {
    100
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Deletion propagation for Jobs removed by a `default` rollout.
    #[serde(default)]
    pub propagation_policy: PropagationPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    /// Delete unfinished Jobs of the old spec.
    #[default]
    Default,
    /// Let unfinished Jobs finish; new Jobs use the new spec.
    Gradual,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PropagationPolicy {
    #[default]
    Background,
    Foreground,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.strategy == 'custom' || (!has(self.customScalingQueueLengthDeduction) && !has(self.customScalingRunningJobPercentage))").message("customScaling fields apply only to strategy custom"))]
pub struct ScalingStrategy {
    #[serde(default)]
    pub strategy: JobScalingStrategy,
    /// `custom`: subtracted from the number of Jobs to create; 0 if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_scaling_queue_length_deduction: Option<i32>,
    /// `custom`: the share of running Jobs counted as still busy, a decimal number such as
    /// "0.5" (KEDA reads it as a float). Without it, `custom` works as `default` (as in KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)$"))]
    pub custom_scaling_running_job_percentage: Option<String>,
    /// Pod conditions that all must be True for a Job to count as no longer pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_pod_conditions: Vec<String>,
    /// How the counts of several triggers combine.
    #[serde(default)]
    pub multiple_scalers_calculation: MultipleScalersCalculation,
}

/// KEDA's four ways of turning queue length and running Jobs into Jobs to create.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JobScalingStrategy {
    #[default]
    Default,
    Custom,
    Accurate,
    Eager,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MultipleScalersCalculation {
    #[default]
    Max,
    Min,
    Avg,
    Sum,
}

/// Observed state, including outcome counters that only ever grow: deleting finished Jobs
/// (history limits) or restarting the controller never loses or repeats a count.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_time: Option<Time>,
    /// Unfinished Jobs at the last poll.
    #[serde(default)]
    pub running_jobs: i64,
    /// Unfinished Jobs whose pods have not started.
    #[serde(default)]
    pub pending_jobs: i64,
    /// Jobs that ended Complete, ever.
    #[serde(default)]
    pub succeeded: i64,
    /// Jobs that ended Failed, ever.
    #[serde(default)]
    pub failed: i64,
    /// Pod failures that a Job's backoffLimit retried, ever.
    #[serde(default)]
    pub retries: i64,
    /// UIDs of finished Jobs, still present, whose outcome is already in the counters. Written
    /// in the same update as the counters, so a restart neither repeats nor loses a count, and
    /// history cleanup deletes only Jobs listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted_jobs: Vec<String>,
    /// Per trigger: the value it last read and its target, from the last poll that read it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trigger_values: BTreeMap<String, TriggerValue>,
    /// When Windlass last created Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}
