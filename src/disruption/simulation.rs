//! Where the pods of the nodes about to be disrupted would go, without I/O: the provisioner's
//! scheduling simulation, asked with those nodes left out of the cluster. Their pods either fit
//! on the other nodes (delete them), need new nodes (launch those first, then delete them), or
//! fit nowhere (leave them, and say why). A pod goes only where its volumes can be reached.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::emptiness::needs_home;
use super::pass::{Pass, is_scaled_job_pod};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::provisioning::problem::{BoundPods, plan};
use crate::scheduling::NewClaim;
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::volumes::placement_shape;
use crate::state::ClusterState;

/// What disrupting a node takes.
#[derive(Debug)]
pub enum Outcome {
    /// Its pods fit on the other nodes.
    Delete,
    /// Its pods need these new NodeClaims (of `node_pools[claim.pool]`).
    Replace {
        node_pools: Vec<Arc<NodePool>>,
        claims: Vec<NewClaim>,
    },
    /// Some of its pods fit nowhere: why, for the first of them.
    Blocked(String),
}

/// Where the pods on the candidates' nodes would go if they went. Every NodeClaim not being
/// deleted is capacity with its free room; the candidates are left out, capacity and limits
/// alike. A ScaledJob's Job pods are not moved: they run to their end where they are (an
/// expired node's drain evicts them, and their Jobs make them anew).
pub fn reschedule(
    state: &ClusterState,
    catalog: &[InstanceType],
    pass: &Pass,
    candidates: &[&NodeClaim],
) -> Outcome {
    let pods: Vec<&Arc<Pod>> = candidates
        .iter()
        .flat_map(|c| pass.pods(c))
        .filter(|pod| needs_home(pod) && !is_scaled_job_pod(pod))
        .collect();
    if pods.is_empty() {
        return Outcome::Delete;
    }
    let mut shapes = Vec::with_capacity(pods.len());
    for pod in &pods {
        match placement_shape(pod, state) {
            Ok(shape) => shapes.push(shape),
            Err(error) => return Outcome::Blocked(format!("pod {}: {error}", pod.name_any())),
        }
    }
    let leaving: BTreeSet<String> = candidates.iter().map(|c| c.name_any()).collect();
    let (node_pools, plan) = plan(
        state,
        catalog,
        &state.node_claims.state(),
        BoundPods {
            by_node: pass.pods_by_node(),
            namespace_labels: pass.namespace_labels(),
        },
        |c| c.metadata.deletion_timestamp.is_none() && !pass.is_disrupting(c),
        &leaving,
        &shapes,
    );
    if let Some((pod, unplaced)) = plan.unplaced.first() {
        let pod = pods[*pod];
        return Outcome::Blocked(format!(
            "pod {}/{} would fit nowhere else: {unplaced}",
            pod.namespace().unwrap_or_default(),
            pod.name_any()
        ));
    }
    if plan.new_claims.is_empty() {
        Outcome::Delete
    } else {
        Outcome::Replace {
            node_pools,
            claims: plan.new_claims,
        }
    }
}
