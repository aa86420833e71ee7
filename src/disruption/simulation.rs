//! Where the pods of a node about to be disrupted would go, without I/O: the provisioner's
//! scheduling simulation, asked with that node left out of the cluster. Its pods either fit on
//! the other nodes (delete it), need new nodes (launch those first, then delete it), or fit
//! nowhere (leave it, and say why).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::emptiness::needs_home;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::provisioning::problem::{ClusterView, cluster_view};
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::pod::PodShape;
use crate::scheduling::{NewClaim, Problem, solve};
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

/// Where the pods on `candidate`'s node would go if it went. Every NodeClaim not being
/// deleted is capacity with its free room; `candidate` is left out, capacity and limits alike.
pub fn reschedule(
    state: &ClusterState,
    catalog: &[InstanceType],
    candidate: &NodeClaim,
) -> Outcome {
    let pods = pods_to_move(state, candidate);
    if pods.is_empty() {
        return Outcome::Delete;
    }
    let mut shapes = Vec::with_capacity(pods.len());
    for pod in &pods {
        match PodShape::from_pod(pod) {
            Ok(shape) => shapes.push(shape),
            Err(error) => return Outcome::Blocked(format!("pod {}: {error}", pod.name_any())),
        }
    }
    let claims = state.node_claims.state();
    let leaving = BTreeSet::from([candidate.name_any()]);
    let ClusterView {
        node_pools,
        pools,
        existing,
        bound,
    } = cluster_view(
        state,
        catalog,
        &claims,
        |c| c.metadata.deletion_timestamp.is_none(),
        &leaving,
    );
    let plan = solve(&Problem {
        catalog,
        pools: &pools,
        existing: &existing,
        bound: &bound,
        pods: &shapes,
    });
    if let Some((pod, unplaced)) = plan.unplaced.first() {
        let pod = &pods[*pod];
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

/// The pods on the candidate's node that would need a home elsewhere.
fn pods_to_move(state: &ClusterState, candidate: &NodeClaim) -> Vec<Arc<Pod>> {
    let Some(node) = candidate.status.as_ref().and_then(|s| s.node_name.as_ref()) else {
        return Vec::new();
    };
    state
        .pods_by_node()
        .remove(node)
        .unwrap_or_default()
        .into_iter()
        .filter(|pod| needs_home(pod))
        .collect()
}
