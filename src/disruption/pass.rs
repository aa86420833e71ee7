//! The cluster as one pass of the disruption loop sees it: the stores read once, indexed by
//! Node, NodePool and pool membership, so each method asks about a candidate without scanning
//! the stores again. What a pass starts disrupting counts against the budgets at once, and in
//! the passes of the next minute (`Started`), before the watch shows it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use tracing::warn;

use super::budgets;
use super::emptiness::{ClaimedNode, may_disrupt, needs_home};
use crate::apis::labels::{CLUSTER_LABEL, NODEPOOL_LABEL, REPLACES_ANNOTATION, SCALED_JOB_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::{DisruptionReason, NodePool};
use crate::scheduling::pod::NamespaceLabels;
use crate::state::ClusterState;
use crate::termination::drain::has_do_not_disrupt;

/// How long what a pass started counts as disrupting while the watch does not show it yet.
const REMEMBERED: SignedDuration = SignedDuration::from_mins(1);

/// What recent passes started disrupting, and when.
pub type Started = HashMap<String, Timestamp>;

pub struct Pass {
    pub now: Timestamp,
    /// This install's NodeClaims.
    pub claims: Vec<Arc<NodeClaim>>,
    nodes: HashMap<String, Arc<Node>>,
    pods: HashMap<String, Vec<Arc<Pod>>>,
    /// Every namespace's labels, for the simulations of this pass.
    namespace_labels: NamespaceLabels,
    pools: HashMap<String, Arc<NodePool>>,
    /// Per pool: its NodeClaims, and how many of them are being disrupted.
    sizes: HashMap<String, (usize, usize)>,
    /// NodeClaims this pass, or one in the last minute, started disrupting.
    started: HashSet<String>,
    /// NodeClaims being replaced, whose replacements must stay until they go.
    replacing: HashSet<String>,
}

impl Pass {
    pub fn read(state: &ClusterState, cluster: &str, now: Timestamp, recent: &Started) -> Self {
        let claims: Vec<Arc<NodeClaim>> = state
            .node_claims
            .state()
            .into_iter()
            .filter(|c| c.labels().get(CLUSTER_LABEL).map(String::as_str) == Some(cluster))
            .collect();
        let replacing: HashSet<String> = claims
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none() && c.is_disrupting())
            .map(|c| c.name_any())
            .collect();
        let started: HashSet<String> = recent
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < REMEMBERED)
            .map(|(name, _)| name.clone())
            .collect();
        let mut sizes: HashMap<String, (usize, usize)> = HashMap::new();
        for claim in &claims {
            if let Some(pool) = claim.labels().get(NODEPOOL_LABEL) {
                let size = sizes.entry(pool.clone()).or_default();
                size.0 += 1;
                size.1 += usize::from(claim.is_disrupting() || started.contains(&claim.name_any()));
            }
        }
        Self {
            now,
            claims,
            nodes: state
                .nodes
                .state()
                .into_iter()
                .map(|n| (n.name_any(), n))
                .collect(),
            pods: state.pods_by_node(),
            namespace_labels: state.namespace_labels(),
            pools: state
                .node_pools
                .state()
                .into_iter()
                .map(|p| (p.name_any(), p))
                .collect(),
            sizes,
            started,
            replacing,
        }
    }

    pub fn node(&self, claim: &NodeClaim) -> Option<&Arc<Node>> {
        self.nodes.get(claim.node_name()?)
    }

    pub fn node_named(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes.get(name)
    }

    /// The unfinished pods bound to the claim's Node.
    pub fn pods(&self, claim: &NodeClaim) -> &[Arc<Pod>] {
        claim
            .node_name()
            .and_then(|node| self.pods.get(node))
            .map_or(&[], Vec::as_slice)
    }

    /// Every Node's unfinished pods, by Node name.
    pub fn pods_by_node(&self) -> &HashMap<String, Vec<Arc<Pod>>> {
        &self.pods
    }

    pub fn namespace_labels(&self) -> &NamespaceLabels {
        &self.namespace_labels
    }

    pub fn pool(&self, claim: &NodeClaim) -> Option<&Arc<NodePool>> {
        self.pools.get(claim.labels().get(NODEPOOL_LABEL)?)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<NodePool>> {
        self.pools.values()
    }

    /// Whether the claim is being disrupted, by an earlier pass or this one.
    pub fn is_disrupting(&self, claim: &NodeClaim) -> bool {
        claim.is_disrupting() || self.started.contains(&claim.name_any())
    }

    /// How many more of the pool's nodes may be disrupted for `reason` now: what its budgets
    /// allow less the NodeClaims already being disrupted. A budget Windlass cannot read allows
    /// none.
    pub fn room(&self, pool: &NodePool, reason: DisruptionReason) -> usize {
        let (nodes, disrupting) = self
            .sizes
            .get(&pool.name_any())
            .copied()
            .unwrap_or_default();
        let budgets = &pool.spec.disruption.budgets;
        budgets::room(budgets, nodes, disrupting, reason, self.now).unwrap_or_else(|error| {
            warn!(nodepool = %pool.name_any(), %error, "disruption budget unreadable; disrupting nothing");
            0
        })
    }

    /// Whether the claim's pool has room to disrupt it for `reason`.
    pub fn has_room(&self, claim: &NodeClaim, reason: DisruptionReason) -> bool {
        self.pool(claim)
            .is_some_and(|pool| self.room(pool, reason) > 0)
    }

    /// Whether the claim was launched to replace NodeClaims still being replaced: it is not
    /// empty or underused, it is waiting for their pods.
    pub fn is_pending_replacement(&self, claim: &NodeClaim) -> bool {
        claim
            .annotations()
            .get(REPLACES_ANNOTATION)
            .is_some_and(|names| names.split(',').any(|n| self.replacing.contains(n)))
    }

    /// Whether any disruption method may take the claim now: not being disrupted, and not a
    /// replacement still waiting for the pods it was made for.
    pub fn is_available(&self, claim: &NodeClaim) -> bool {
        !self.is_disrupting(claim) && !self.is_pending_replacement(claim)
    }

    /// Writes down what this pass started, for the next passes; forgets what is gone or
    /// older than a minute.
    pub fn remember(&self, recent: &mut Started) {
        for name in &self.started {
            recent.entry(name.clone()).or_insert(self.now);
        }
        recent.retain(|name, at| {
            self.now.duration_since(*at) < REMEMBERED
                && self.claims.iter().any(|c| c.name_any() == *name)
        });
    }

    /// Counts the claim as disrupting from now on.
    pub fn started(&mut self, claim: &NodeClaim) {
        if !self.is_disrupting(claim)
            && let Some(pool) = claim.labels().get(NODEPOOL_LABEL)
            && let Some(size) = self.sizes.get_mut(pool)
        {
            size.1 += 1;
        }
        self.started.insert(claim.name_any());
    }

    /// The claim with its Node and pods, once it has a Node.
    pub fn claimed<'a>(&'a self, claim: &'a NodeClaim) -> Option<ClaimedNode<'a>> {
        Some(ClaimedNode {
            claim,
            node: self.node(claim)?,
            pods: self.pods(claim),
        })
    }

    /// What voluntary disruption asks of a node: settled, not protected, and no pod on it that
    /// asks not to be disrupted.
    pub fn may_disrupt_voluntarily(&self, claim: &NodeClaim) -> bool {
        self.claimed(claim)
            .is_some_and(|claimed| may_disrupt(&claimed, self.now))
            && !self.pods(claim).iter().any(|p| has_do_not_disrupt(p))
    }

    /// Whether a pod of a ScaledJob's Job runs on the claim's node: it runs to its end, never
    /// evicted, so the node goes only once it is done.
    pub fn runs_scaled_jobs(&self, claim: &NodeClaim) -> bool {
        self.pods(claim).iter().any(|p| is_scaled_job_pod(p))
    }

    /// What drift asks of a node: voluntarily disruptable, and no ScaledJob Job running there.
    pub fn voluntarily_disruptable(&self, claim: &NodeClaim) -> bool {
        self.may_disrupt_voluntarily(claim) && !self.runs_scaled_jobs(claim)
    }
}

/// A running pod of a Job a ScaledJob created.
pub fn is_scaled_job_pod(pod: &Pod) -> bool {
    needs_home(pod) && pod.labels().contains_key(SCALED_JOB_LABEL)
}
