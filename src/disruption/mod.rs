//! The disruption loop: every 10 s it looks at each NodePool's nodes and deletes the NodeClaims
//! a disruption method picks, within the pool's budgets; termination then drains each node
//! before its instance goes. Methods in Karpenter's order: `emptiness` (delete), `expiration`
//! and drift (replace), then `single_node` consolidation (delete, or replace by one cheaper
//! node; the pure parts in `consolidation`). A replacement asks the `simulation` where the
//! node's pods would go, launches the NodeClaims they need (`replacement`), and deletes the
//! node only once those are Initialized; one replacement at a time. `budgets` is the
//! arithmetic the methods share.

pub mod budgets;
pub mod consolidation;
pub mod emptiness;
pub mod expiration;
mod replacement;
pub mod simulation;
mod single_node;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::DeleteParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apis::labels::{CLUSTER_LABEL, NODEPOOL_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::{DisruptionReason, NodePool};
use crate::cloud::CloudProvider;
use crate::events::Recorder;
use crate::metrics::{DisruptionLabels, Metrics};
use crate::state::ClusterState;
use emptiness::{ClaimedNode, EmptySince, consolidate_after, empty_claims};

/// How often the loop looks for nodes to give back.
const PASS_INTERVAL: Duration = Duration::from_secs(10);

pub struct Disruption<C> {
    pub client: kube::Client,
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// The instance types replacements are planned from.
    pub cloud: Arc<C>,
    /// Only this install's NodeClaims are disrupted.
    pub cluster: String,
}

/// Runs until `shutdown`.
pub async fn run<C: CloudProvider>(disruption: Arc<Disruption<C>>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = disruption.state.wait_until_ready() => if ready.is_err() { return },
    }
    replacement::release_forgotten(&disruption).await;
    let mut empty_since = EmptySince::new();
    let mut consolidation = single_node::Memory::default();
    let mut tick = tokio::time::interval(PASS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let claims = own_claims(&disruption);
        remove_empty(&disruption, &claims, &mut empty_since, Timestamp::now()).await;
        // One replacement at a time: the one under way (its state is on the NodeClaims, so a
        // restart picks it up), or else the next candidate.
        let acted = match claims.iter().find(|c| replacement::is_replacing(c)) {
            Some(candidate) => {
                replacement::follow(&disruption, candidate).await;
                true
            }
            None => replacement::start_next(&disruption, &claims, Timestamp::now()).await,
        };
        if acted {
            consolidation.interrupted();
        } else {
            single_node::consolidate(&disruption, &claims, &mut consolidation, Timestamp::now())
                .await;
        }
    }
}

/// This install's NodeClaims.
fn own_claims<C>(disruption: &Disruption<C>) -> Vec<Arc<NodeClaim>> {
    disruption
        .state
        .node_claims
        .state()
        .into_iter()
        .filter(|c| c.labels().get(CLUSTER_LABEL) == Some(&disruption.cluster))
        .collect()
}

async fn remove_empty<C>(
    disruption: &Disruption<C>,
    claims: &[Arc<NodeClaim>],
    empty_since: &mut EmptySince,
    now: Timestamp,
) {
    let state = &disruption.state;
    empty_since.retain(|name, _| claims.iter().any(|c| c.name_any() == *name));
    let nodes: HashMap<String, _> = state
        .nodes
        .state()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let pods = state.pods_by_node();
    for pool in state.node_pools.state() {
        let Some(after) = consolidate_after(&pool.spec.disruption.consolidate_after) else {
            continue;
        };
        let pool_claims: Vec<&Arc<NodeClaim>> = claims
            .iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(&pool.name_any()))
            .collect();
        let claimed: Vec<ClaimedNode> = pool_claims
            .iter()
            .filter_map(|claim| {
                let node_name = claim.status.as_ref()?.node_name.as_ref()?;
                Some(ClaimedNode {
                    claim,
                    node: nodes.get(node_name)?,
                    pods: pods.get(node_name).map_or(&[], Vec::as_slice),
                })
            })
            .collect();
        let due = empty_claims(&claimed, empty_since, after, now);
        if due.is_empty() {
            continue;
        }
        let room = room(&pool, &pool_claims, DisruptionReason::Empty, now);
        for name in due.into_iter().take(room) {
            empty_since.remove(&name);
            if let Some(claim) = pool_claims.iter().find(|c| c.name_any() == name) {
                remove(disruption, &pool, claim, after).await;
            }
        }
    }
}

/// How many more of the pool's nodes may be disrupted for `reason` now: what its budgets
/// allow less the NodeClaims already being deleted or replaced. A budget Windlass cannot read
/// allows none.
fn room(
    pool: &NodePool,
    claims: &[&Arc<NodeClaim>],
    reason: DisruptionReason,
    now: Timestamp,
) -> usize {
    let disrupting = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_some() || replacement::is_replacing(c))
        .count();
    let budgets = &pool.spec.disruption.budgets;
    match budgets::allowed(budgets, claims.len(), reason, now) {
        Ok(allowed) => allowed.unwrap_or(usize::MAX).saturating_sub(disrupting),
        Err(error) => {
            warn!(nodepool = %pool.name_any(), %error, "disruption budget unreadable; disrupting nothing");
            0
        }
    }
}

async fn remove<C>(
    disruption: &Disruption<C>,
    pool: &NodePool,
    claim: &NodeClaim,
    after: jiff::SignedDuration,
) {
    let name = claim.name_any();
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(nodeclaim = %name, nodepool = %pool.name_any(), "empty: deleting");
            crate::events::publish(
                &disruption.recorder,
                claim,
                EventType::Normal,
                "Disrupting",
                format!("its node has been empty for {after:#}: deleting it (emptiness)"),
                "Disrupt",
            )
            .await;
            disruption
                .metrics
                .disruption_actions
                .get_or_create(&DisruptionLabels {
                    nodepool: pool.name_any(),
                    reason: "empty".into(),
                })
                .inc();
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(error) => warn!(nodeclaim = %name, %error, "deleting an empty NodeClaim failed"),
    }
}
