//! The scheduling simulation and what it reads, without I/O: a pod's needs (`pod`,
//! `resources`, `requirements`), instance types and their offerings (`instance_types`, the
//! bundled `catalog`), and the solver that places pods onto nodes and new NodeClaims. `fake`
//! builds Karpenter's benchmark world.

pub mod catalog;
pub mod fake;
pub mod instance_types;
pub mod pod;
pub mod requirements;
pub mod resources;
mod solver;

pub use solver::{
    BoundPod, ExistingNode, LAUNCH_CANDIDATES, Mismatch, NewClaim, NodePoolInput, Plan, Problem,
    Rejection, Unplaced, no_instance_types, solve,
};

use k8s_openapi::api::core::v1::PodSpec;

use crate::apis::labels::NODEPOOL_LABEL;
use crate::apis::node_pool::NodePool;
use instance_types::InstanceType;
use pod::PodShape;
use requirements::{Requirement, Requirements};
use resources::Resources;

/// A NodePool as the simulation sees it: requirements with the template's labels and the
/// nodepool label, the taints pods must tolerate (startup taints are expected to go away),
/// limits, weight, and the DaemonSet pods its nodes would run.
pub fn pool_input(
    node_pool: &NodePool,
    catalog: &[InstanceType],
    daemon_sets: &[PodShape],
) -> NodePoolInput {
    let name = node_pool.metadata.name.clone().unwrap_or_default();
    let template = &node_pool.spec.template;
    let mut requirements = Requirements::from_node_pool(&template.spec.requirements);
    for (key, value) in &template.metadata.labels {
        requirements.add(key, Requirement::one_of([value.clone()]));
    }
    requirements.add(NODEPOOL_LABEL, Requirement::one_of([name.clone()]));
    let taints = template.spec.taints.clone();
    let daemon_overhead = daemon_sets
        .iter()
        .filter(|daemon| {
            daemon.tolerates(&taints).is_ok()
                && daemon.requirements.iter().any(|alternative| {
                    alternative.iter().all(|(key, requirement)| {
                        requirements
                            .get(key)
                            .is_none_or(|pool| !pool.intersect(requirement).is_unsatisfiable())
                    })
                })
        })
        .fold(Resources::default(), |sum, daemon| sum + daemon.requests);
    NodePoolInput {
        name,
        weight: node_pool.spec.weight.unwrap_or(0),
        requirements,
        taints,
        limits: Resources::limits(&node_pool.spec.limits),
        daemon_overhead,
        instance_types: (0..catalog.len()).collect(),
        ..NodePoolInput::default()
    }
}

/// The pods a workload template stands for, `replicas` times, as the simulation sees them.
pub fn template_pods(
    name: &str,
    namespace: &str,
    labels: Option<&std::collections::BTreeMap<String, String>>,
    spec: &PodSpec,
    replicas: i32,
) -> Result<Vec<PodShape>, pod::PodShapeError> {
    let mut pod = k8s_openapi::api::core::v1::Pod::default();
    pod.metadata.namespace = Some(namespace.to_owned());
    pod.metadata.labels = labels.cloned();
    pod.spec = Some(spec.clone());
    (0..replicas.max(0))
        .map(|index| {
            pod.metadata.name = Some(format!("{name}-{index}"));
            PodShape::from_pod(&pod)
        })
        .collect()
}
