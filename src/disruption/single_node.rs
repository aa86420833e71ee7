//! Single-node consolidation: the candidates are the NodeClaims marked `Consolidatable` (a
//! `WhenEmptyOrUnderutilized` pool, no pod come or gone for its `consolidateAfter`), fewest
//! pods first; the first
//! whose pods fit on the other nodes is deleted, or the first that one cheaper node can take
//! over is replaced by it (through `replacement`, so the new node is Initialized first). Empty
//! nodes are emptiness's. A node running a pod consolidation must not move (see
//! [`consolidation::movable`]) is left alone.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::warn;

use super::consolidation::{self, Pending, cheaper, node_price};
use super::emptiness::needs_home;
use super::replacement::{self, Method, node_of, voluntarily_disruptable};
use super::simulation::{Outcome, reschedule};
use super::{Disruption, room};
use crate::apis::labels::{NODEPOOL_LABEL, REPLACES_ANNOTATION};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::DisruptionReason;
use crate::cloud::CloudProvider;
use crate::nodeclaim::consolidatable::is_consolidatable;
use crate::provisioning::claims::node_claim;

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
    claims: &[Arc<NodeClaim>],
    memory: &mut Memory,
    now: Timestamp,
) {
    let Memory {
        pending,
        consolidated,
    } = memory;
    let pods = disruption.state.pods_by_node();
    let mut candidates: Vec<(usize, &Arc<NodeClaim>)> = Vec::new();
    for claim in claims {
        if claim.metadata.deletion_timestamp.is_some() || replacement::is_replacing(claim) {
            continue;
        }
        let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.as_ref()) else {
            continue;
        };
        let Some(pool_name) = claim.labels().get(NODEPOOL_LABEL) else {
            continue;
        };
        let Some(pool) = disruption.state.node_pool(pool_name) else {
            continue;
        };
        let on_node = pods.get(node).map_or(&[][..], Vec::as_slice);
        let moving = on_node.iter().filter(|p| needs_home(p)).count();
        let keeps_node = on_node
            .iter()
            .any(|p| needs_home(p) && !consolidation::movable(p));
        let pool_claims: Vec<&Arc<NodeClaim>> = claims
            .iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(pool_name))
            .collect();
        if is_consolidatable(claim)
            && moving > 0
            && !keeps_node
            && voluntarily_disruptable(disruption, claim, now)
            && room(&pool, &pool_claims, DisruptionReason::Underutilized, now) > 0
        {
            candidates.push((moving, claim));
        }
    }
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
        &pods,
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
        let current = node_of(disruption, candidate).and_then(|node| node_price(&node, &catalog));
        match reschedule(&disruption.state, &catalog, candidate) {
            Outcome::Delete => {
                if pending.held(&name, now) {
                    pending.clear();
                    let saving = current.map_or(String::new(), |c| format!(", saving ${c:.4}/h"));
                    let note =
                        format!("its pods fit on other nodes: deleting it (consolidation){saving}");
                    replacement::delete(
                        disruption,
                        candidate,
                        Method::Consolidation,
                        EventType::Normal,
                        note,
                        current,
                    )
                    .await;
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
                    let pool = &node_pools[planned.pool];
                    let class = disruption
                        .state
                        .node_class(&pool.spec.template.spec.node_class_ref.name);
                    let mut object = node_claim(
                        pool,
                        class.as_deref(),
                        &planned,
                        &catalog,
                        &disruption.cluster,
                    );
                    object
                        .annotations_mut()
                        .insert(REPLACES_ANNOTATION.into(), name.clone());
                    let why = format!(
                        "one cheaper node can take its pods (${current:.4}/h → from ${price:.4}/h)"
                    );
                    replacement::begin(
                        disruption,
                        candidate,
                        Method::Consolidation,
                        &why,
                        vec![object],
                    )
                    .await;
                }
                return;
            }
            Outcome::Replace { .. } | Outcome::Blocked(_) => {}
        }
    }
    pending.clear();
    consolidated.mark(fingerprint, now);
}
