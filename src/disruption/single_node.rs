//! Single-node consolidation: the candidates are the NodeClaims marked `Consolidatable` (a
//! `WhenEmptyOrUnderutilized` pool, no pod come or gone for its `consolidateAfter`), fewest
//! pods first; the first
//! whose pods fit on the other nodes is deleted, or the first that one cheaper node can take
//! over is replaced by it (through `replacement`, so the new node is Initialized first). Empty
//! nodes are emptiness's. A node running a pod consolidation must not move (see
//! [`consolidation::movable`]) is left alone.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::warn;

use super::consolidation::{self, Pending, cheaper, node_price};
use super::emptiness::needs_home;
use super::pass::Pass;
use super::replacement::{begin, replacement_claims};
use super::simulation::{Outcome, reschedule};
use super::{Disruption, Method, delete, nodepool, record_savings};
use crate::apis::node_claim::{CONDITION_CONSOLIDATABLE, NodeClaim};
use crate::apis::node_pool::DisruptionReason;
use crate::cloud::CloudProvider;

/// What consolidation keeps between passes, in memory.
#[derive(Default)]
pub struct Memory {
    /// The decision waiting out its validation.
    pending: Pending,
    /// The cluster as it was when nothing was found to consolidate.
    consolidated: consolidation::Consolidated,
}

impl Memory {
    /// Something else disrupted: a pending decision starts over.
    pub fn interrupted(&mut self) {
        self.pending.clear();
    }
}

/// Consolidates at most one node.
pub async fn consolidate<C: CloudProvider>(
    disruption: &Disruption<C>,
    pass: &mut Pass,
    memory: &mut Memory,
) {
    let now = pass.now;
    let Memory {
        pending,
        consolidated,
    } = memory;
    let mut candidates: Vec<(usize, Arc<NodeClaim>)> = pass
        .claims
        .iter()
        .filter(|claim| !pass.is_disrupting(claim))
        .filter(|claim| claim.has_condition(CONDITION_CONSOLIDATABLE))
        .filter_map(|claim| {
            let on_node = pass.pods(claim);
            let moving = on_node.iter().filter(|p| needs_home(p)).count();
            let keeps_node = on_node
                .iter()
                .any(|p| needs_home(p) && !consolidation::movable(p));
            (moving > 0
                && !keeps_node
                && pass.voluntarily_disruptable(claim)
                && pass.has_room(claim, DisruptionReason::Underutilized))
            .then(|| (moving, claim.clone()))
        })
        .collect();
    if candidates.is_empty() {
        pending.clear();
        return;
    }
    candidates.sort_by_key(|(moving, claim)| (*moving, claim.name_any()));
    let names: Vec<String> = candidates.iter().map(|(_, c)| c.name_any()).collect();
    let state = &disruption.state;
    let fingerprint = consolidation::fingerprint(
        &names,
        &state.node_claims.state(),
        &state.nodes.state(),
        pass.pods_by_node(),
        &state.node_pools.state(),
    );
    if consolidated.still(fingerprint, now) {
        return;
    }
    let catalog = match disruption.cloud.instance_types().await {
        Ok(catalog) => catalog,
        Err(error) => {
            warn!(%error, "no instance types to consolidate with");
            return;
        }
    };
    for (_, candidate) in candidates {
        let name = candidate.name_any();
        let current = pass
            .node(&candidate)
            .and_then(|node| node_price(node, &catalog));
        match reschedule(&disruption.state, &catalog, pass, &[&candidate]) {
            Outcome::Delete => {
                if pending.held(&name, now) {
                    pending.clear();
                    let saving = current.map_or(String::new(), |c| format!(", saving ${c:.4}/h"));
                    let note =
                        format!("its pods fit on other nodes: deleting it (consolidation){saving}");
                    let method = Method::Consolidation;
                    if delete(disruption, &candidate, method, EventType::Normal, note).await {
                        pass.started(&candidate);
                        record_savings(disruption, nodepool(&candidate), current);
                    }
                }
                return;
            }
            Outcome::Replace { node_pools, claims } if claims.len() == 1 => {
                let Some((planned, price)) =
                    current.and_then(|current| cheaper(&claims[0], &catalog, current))
                else {
                    continue;
                };
                let current = current.unwrap_or_default();
                if pending.held(&name, now) {
                    pending.clear();
                    let objects = replacement_claims(
                        disruption,
                        &node_pools,
                        &[planned],
                        &catalog,
                        &[&candidate],
                    );
                    let why = format!(
                        "one cheaper node can take its pods (${current:.4}/h → from ${price:.4}/h)"
                    );
                    let method = Method::Consolidation;
                    begin(disruption, pass, &[&candidate], method, &why, objects).await;
                }
                return;
            }
            Outcome::Replace { .. } | Outcome::Blocked(_) => {}
        }
    }
    pending.clear();
    consolidated.mark(fingerprint, now);
}
