//! NodePool: the constraints and limits for nodes Windlass launches (Karpenter v1 semantics),
//! plus the requirement and node-class-reference shapes NodeClaim shares.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::schema::bounded_string_list;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "NodePool",
    shortname = "np",
    category = "windlass",
    status = "NodePoolStatus",
    derive = "PartialEq",
    doc = "Constraints, disruption policy and resource limits for the nodes Windlass launches (Karpenter NodePool semantics).",
    printcolumn(
        name = "NodeClass",
        type_ = "string",
        json_path = ".spec.template.spec.nodeClassRef.name"
    ),
    printcolumn(name = "Nodes", type_ = "integer", json_path = ".status.nodes"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".spec.weight",
        priority = 1
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".status.resources.cpu",
        priority = 1
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.resources.memory",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// What every node of this pool looks like.
    pub template: NodeClaimTemplate,
    #[serde(default)]
    pub disruption: Disruption,
    /// Upper bounds on the resources of all nodes of this pool together: cpu, memory, pods,
    /// ephemeral-storage, the devices (nvidia.com/gpu, amd.com/gpu, aws.amazon.com/neuron,
    /// aws.amazon.com/neuroncore, vpc.amazonaws.com/efa) and nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = LIMITABLE.len()))]
    #[x_kube(validation = limits_rule())]
    pub limits: BTreeMap<String, Quantity>,
    /// Pools with a higher weight are tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    #[serde(default)]
    pub metadata: TemplateMetadata,
    pub spec: NodeClaimTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.labels) || !('windlass.dev/nodepool' in self.labels || 'karpenter.sh/nodepool' in self.labels)").message("labels windlass.dev/nodepool and karpenter.sh/nodepool are set by Windlass").field_path(".labels"))]
#[x_kube(validation = Rule::new("!has(self.labels) || !('kubernetes.io/hostname' in self.labels)").message("label kubernetes.io/hostname is set by the kubelet").field_path(".labels"))]
pub struct TemplateMetadata {
    /// Labels applied to every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations applied to every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    /// Constraints on instance type, zone, capacity type, architecture and custom labels.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    pub node_class_ref: NodeClassReference,
    /// Taints every node carries for its whole life.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Taints present at boot that something else (a CNI, an agent) removes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// Node lifetime before replacement, e.g. `720h`, or `Never`.
    #[serde(default = "default_expire_after")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub expire_after: String,
    /// How long a draining node may wait for its pods before it is terminated anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub termination_grace_period: Option<String>,
}

/// The resources a NodePool may limit: those the simulation counts, and `nodes`. A limit on
/// any other would hold nothing back.
pub const LIMITABLE: [&str; 10] = [
    "cpu",
    "memory",
    "pods",
    "ephemeral-storage",
    "nvidia.com/gpu",
    "amd.com/gpu",
    "aws.amazon.com/neuron",
    "aws.amazon.com/neuroncore",
    "vpc.amazonaws.com/efa",
    "nodes",
];

fn limits_rule() -> Rule {
    let quoted: Vec<String> = LIMITABLE.iter().map(|name| format!("'{name}'")).collect();
    Rule::new(format!("self.all(k, k in [{}])", quoted.join(", "))).message(Message::Message(
        format!("Windlass counts and limits only {}", LIMITABLE.join(", ")),
    ))
}

fn default_expire_after() -> String {
    "720h".into()
}

/// A node selector requirement, optionally asking for at least `minValues` distinct values
/// (e.g. instance types) to stay available for flexibility.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.key in ['kubernetes.io/hostname', 'windlass.dev/nodepool', 'karpenter.sh/nodepool'])").message("requirement key is set by Windlass or the kubelet and cannot be constrained").field_path(".key"))]
#[x_kube(validation = Rule::new("!self.key.startsWith('karpenter.k8s.aws/') || self.key in ['karpenter.k8s.aws/instance-category', 'karpenter.k8s.aws/instance-family', 'karpenter.k8s.aws/instance-generation', 'karpenter.k8s.aws/instance-size', 'karpenter.k8s.aws/instance-cpu', 'karpenter.k8s.aws/instance-memory', 'karpenter.k8s.aws/instance-gpu-count', 'karpenter.k8s.aws/instance-gpu-name', 'karpenter.k8s.aws/instance-gpu-manufacturer', 'karpenter.k8s.aws/instance-gpu-memory', 'karpenter.k8s.aws/instance-local-nvme', 'karpenter.k8s.aws/instance-network-bandwidth', 'karpenter.k8s.aws/instance-hypervisor', 'karpenter.k8s.aws/instance-encryption-in-transit-supported']").message("Windlass sets these karpenter.k8s.aws labels only: instance-category, -family, -generation, -size, -cpu, -memory, -gpu-count, -gpu-name, -gpu-manufacturer, -gpu-memory, -local-nvme, -network-bandwidth, -hypervisor, -encryption-in-transit-supported").field_path(".key"))]
#[x_kube(validation = Rule::new("!self.key.startsWith('karpenter.sh/') || self.key == 'karpenter.sh/capacity-type'").message("of the karpenter.sh labels only karpenter.sh/capacity-type can be a requirement").field_path(".key"))]
#[x_kube(validation = Rule::new("self.operator != 'In' || self.values.size() > 0").message("operator In needs at least one value").field_path(".values"))]
#[x_kube(validation = Rule::new("!(self.operator in ['Exists', 'DoesNotExist']) || self.values.size() == 0").message("operators Exists and DoesNotExist take no values").field_path(".values"))]
#[x_kube(validation = Rule::new("!(self.operator in ['Gt', 'Lt']) || (self.values.size() == 1 && self.values[0].matches('^[0-9]+$'))").message("operators Gt and Lt take exactly one non-negative integer value").field_path(".values"))]
#[x_kube(validation = Rule::new("!has(self.minValues) || (self.operator in ['In', 'Exists'] && (self.operator != 'In' || self.values.size() >= self.minValues))").message("minValues needs operator In with at least that many values, or Exists").field_path(".minValues"))]
pub struct NodeSelectorRequirementWithMinValues {
    #[schemars(
        length(min = 1, max = 316),
        regex(
            pattern = r"^(([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        )
    )]
    pub key: String,
    pub operator: RequirementOperator,
    /// Label values, so at most 63 characters each.
    #[serde(default)]
    #[schemars(schema_with = "bounded_string_list::<600, 63>")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RequirementOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// The EC2NodeClass holding the AWS settings of a node. `karpenter.k8s.aws` is accepted as the
/// group so a ported Karpenter manifest needs no further edit; both mean Windlass's EC2NodeClass.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.group in ['windlass.dev', 'karpenter.k8s.aws']").message("nodeClassRef.group must be windlass.dev").field_path(".group"))]
#[x_kube(validation = Rule::new("self.kind == 'EC2NodeClass'").message("nodeClassRef.kind must be EC2NodeClass").field_path(".kind"))]
pub struct NodeClassReference {
    pub group: String,
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
    /// How long a node must be consolidatable before it is acted on, or `Never`.
    #[serde(default = "default_consolidate_after")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub consolidate_after: String,
    /// How many nodes may be disrupted at once, optionally only in a cron window.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    fn default() -> Self {
        Self {
            consolidation_policy: ConsolidationPolicy::default(),
            consolidate_after: default_consolidate_after(),
            budgets: default_budgets(),
        }
    }
}

fn default_consolidate_after() -> String {
    "0s".into()
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget {
        nodes: "10%".into(),
        schedule: None,
        duration: None,
        reasons: Vec::new(),
    }]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    #[default]
    WhenEmptyOrUnderutilized,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.schedule) == has(self.duration)").message("schedule and duration go together").field_path(".schedule"))]
pub struct Budget {
    /// A node count or a percentage of the pool's nodes.
    #[serde(default = "default_budget_nodes")]
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// A cron schedule (UTC) opening the window in which this budget applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|\S+(\s+\S+){4})$"
    ))]
    pub schedule: Option<String>,
    /// How long the window stays open, e.g. `8h` or `1h30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?$"))]
    pub duration: Option<String>,
    /// The disruption reasons this budget limits; all if empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DisruptionReason>,
}

fn default_budget_nodes() -> String {
    "10%".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Capacity of this pool's nodes, summed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Quantity>,
    /// How many nodes this pool has.
    #[serde(default)]
    pub nodes: i64,
    /// How many more of its nodes its budgets let be disrupted now, by reason (`Empty`,
    /// `Drifted`, `Underutilized`), the nodes already being disrupted taken out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed_disruptions: BTreeMap<String, i64>,
}
