//! The `windlass.dev/v1alpha1` API: custom resource types only, no I/O.
//!
//! Field names follow KEDA v2 (workload side) and Karpenter v1 (node side) so an existing
//! manifest ports by changing its `apiVersion`. Defaults and validation live in the schema,
//! so the API server fills and enforces them.

// Every `printcolumn(...)` of a kind repeats keys such as `type_`, which this lint misreads.
#![allow(clippy::duplicated_attributes)]

pub mod conditions;
pub mod ec2_node_class;
pub mod job_schedule;
pub mod labels;
pub mod node_claim;
pub mod node_pool;
pub mod scaled_job;
pub mod scaled_object;
pub mod schema;
#[cfg(test)]
pub mod testing;
pub mod trigger_auth;
pub mod triggers;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The API group of every Windlass kind.
pub const GROUP: &str = "windlass.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CustomResourceDefinition Windlass serves, in the order `crdgen` writes them.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        scaled_object::ScaledObject::crd(),
        scaled_job::ScaledJob::crd(),
        trigger_auth::TriggerAuthentication::crd(),
        trigger_auth::ClusterTriggerAuthentication::crd(),
        node_pool::NodePool::crd(),
        ec2_node_class::EC2NodeClass::crd(),
        node_claim::NodeClaim::crd(),
        job_schedule::JobSchedule::crd(),
    ]
}
