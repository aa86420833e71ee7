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
pub mod volumes;

pub use solver::{
    BoundPod, ExistingNode, LAUNCH_CANDIDATES, Mismatch, NODE_CLAIM_CANDIDATES, NewClaim,
    NodePoolInput, Plan, Problem, Rejection, Unplaced, cheapest_candidates, fractional_lower_bound,
    hourly_cost, no_instance_types, solve,
};

use k8s_openapi::api::core::v1::PodSpec;

use std::collections::BTreeMap;

use crate::apis::labels::{HOSTNAME_LABEL, NODEPOOL_LABEL, add_karpenter_aliases};
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

/// The labels a NodeClaim of `pool` carries before launch: the template's, the nodepool's
/// under both keys, and, as in Karpenter, each requirement with a single value whose label the
/// instance does not give (a pod selecting it then schedules on the Node).
pub fn claim_labels(
    pool: &str,
    template_labels: &BTreeMap<String, String>,
    requirements: &Requirements,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = requirements
        .iter()
        .filter(|(key, _)| !instance_types::is_well_known(key) && key.as_str() != HOSTNAME_LABEL)
        .filter_map(|(key, requirement)| {
            Some((key.clone(), requirement.single_value()?.to_owned()))
        })
        .collect();
    labels.extend(template_labels.clone());
    labels.insert(NODEPOOL_LABEL.to_owned(), pool.to_owned());
    add_karpenter_aliases(&mut labels);
    labels
}

/// The pods a workload template stands for, `replicas` times, as the simulation sees them.
pub fn template_pods(
    name: &str,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
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
