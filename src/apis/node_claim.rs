//! NodeClaim: one requested node, from launch to termination (Karpenter v1 semantics). The spec
//! is immutable: a different node is a different NodeClaim.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::labels::DISRUPTION_ANNOTATION;
use super::node_pool::{NodeClassReference, NodeSelectorRequirementWithMinValues};

/// The instance was created.
pub const CONDITION_LAUNCHED: &str = "Launched";
/// A Node with the instance's providerID joined the cluster.
pub const CONDITION_REGISTERED: &str = "Registered";
/// The Node is Ready and its startup taints are gone.
pub const CONDITION_INITIALIZED: &str = "Initialized";
/// The node no longer matches its NodePool or EC2NodeClass.
pub const CONDITION_DRIFTED: &str = "Drifted";
/// The node may be removed or replaced by a cheaper one.
pub const CONDITION_CONSOLIDATABLE: &str = "Consolidatable";
/// The node is being replaced or drained.
pub const CONDITION_DISRUPTING: &str = "Disrupting";

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "NodeClaim",
    shortname = "nc",
    category = "windlass",
    status = "NodeClaimStatus",
    derive = "PartialEq",
    doc = "A request for one node; Windlass launches an instance for it and tracks it until termination.",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".metadata.labels.node\\.kubernetes\\.io/instance-type"
    ),
    printcolumn(
        name = "Capacity",
        type_ = "string",
        json_path = ".metadata.labels.windlass\\.dev/capacity-type"
    ),
    printcolumn(
        name = "Zone",
        type_ = "string",
        json_path = ".metadata.labels.topology\\.kubernetes\\.io/zone"
    ),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
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
        name = "ID",
        type_ = "string",
        json_path = ".status.providerID",
        priority = 1
    ),
    printcolumn(
        name = "NodePool",
        type_ = "string",
        json_path = ".metadata.labels.windlass\\.dev/nodepool",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("NodeClaim spec is immutable"))]
pub struct NodeClaimSpec {
    /// Constraints the instance must satisfy, including the candidate instance types.
    #[schemars(length(min = 1, max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// The resources of the pods this node was sized for.
    #[serde(default)]
    pub resources: ResourceRequirements,
    pub node_class_ref: NodeClassReference,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    #[serde(default = "default_expire_after")]
    #[schemars(regex(pattern = r"^(([0-9]+(s|m|h))+|Never)$"))]
    pub expire_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub termination_grace_period: Option<String>,
}

fn default_expire_after() -> String {
    "720h".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `aws:///<zone>/<instance-id>`, set once launched.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// When a pod last bound to or left this node; consolidation waits on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_event_time: Option<Time>,
}

impl NodeClaim {
    /// Being deleted (its node drains) or replaced (its replacements launch first): counted
    /// against its pool's disruption budgets, and no candidate for another disruption.
    pub fn is_disrupting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
            || self
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(DISRUPTION_ANNOTATION))
    }

    /// The name of the Node it launched, once registered.
    pub fn node_name(&self) -> Option<&str> {
        self.status.as_ref()?.node_name.as_deref()
    }

    /// Whether condition `type_` is True.
    pub fn has_condition(&self, type_: &str) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
    }
}
