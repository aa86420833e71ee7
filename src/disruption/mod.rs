//! The disruption loop: every 10 s it reads the cluster once (`pass`), looks at each
//! NodePool's nodes and deletes the NodeClaims a disruption method picks, within the pool's
//! budgets; termination then drains each node before its instance goes. Methods in
//! Karpenter's order: `emptiness` (delete), `expiration` and drift (replace), then
//! consolidation (`underutilized`: `multi_node`, then `single_node`; the pure parts in
//! `consolidation`), held off pools something is scaling out onto. A replacement asks the
//! `simulation` where the nodes' pods would go, launches the NodeClaims they need
//! (`replacement`), and deletes the nodes only once those are Initialized; one replacement at a
//! time. A node consolidation deletes is cordoned first and goes once no ScaledJob Job runs
//! there. `budgets` is the arithmetic the methods share.

pub mod budgets;
pub mod consolidation;
pub mod emptiness;
pub mod expiration;
mod multi_node;
mod pass;
mod replacement;
pub mod simulation;
mod single_node;
mod underutilized;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::DeleteParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apis::labels::NODEPOOL_LABEL;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::DisruptionReason;
use crate::cloud::CloudProvider;
use crate::events::Recorder;
use crate::metrics::{DisruptionLabels, Metrics, PoolLabels};
use crate::scale_outs::ScaleOuts;
use crate::state::ClusterState;
use emptiness::{EmptySince, consolidate_after, empty_claims};
use pass::Pass;

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
    /// What the scaling side is scaling out: consolidation holds off their pools.
    pub scale_outs: Arc<ScaleOuts>,
    /// Whether consolidation may replace spot nodes by cheaper spot ones (Karpenter's
    /// `SpotToSpotConsolidation` feature gate).
    pub spot_to_spot_consolidation: bool,
}

/// Why a node is disrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Emptiness,
    Expiration,
    Drift,
    Consolidation,
}

impl Method {
    /// The metric label and the `windlass.dev/disruption` annotation.
    fn label(self) -> &'static str {
        match self {
            Method::Emptiness => "empty",
            Method::Expiration => "expired",
            Method::Drift => "drifted",
            Method::Consolidation => "underutilized",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Emptiness => "emptiness",
            Method::Expiration => "expiration",
            Method::Drift => "drift",
            Method::Consolidation => "consolidation",
        }
    }
}

/// Runs until `shutdown`.
pub async fn run<C: CloudProvider>(disruption: Arc<Disruption<C>>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = disruption.state.wait_until_ready() => if ready.is_err() { return },
    }
    replacement::release_forgotten(&disruption).await;
    let mut empty_since = EmptySince::new();
    let mut consolidation = underutilized::Memory::default();
    let mut started = pass::Started::new();
    let mut tick = tokio::time::interval(PASS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut pass = Pass::read(
            &disruption.state,
            &disruption.cluster,
            Timestamp::now(),
            &started,
        );
        remove_empty(&disruption, &mut pass, &mut empty_since).await;
        // What is under way is carried on (its state is on the NodeClaims, so a restart picks
        // it up); one replacement at a time, while nodes cordoned for their Jobs wait aside.
        replacement::follow(&disruption, &pass).await;
        let acted =
            replacement::under_way(&pass) || replacement::start_next(&disruption, &mut pass).await;
        if acted {
            consolidation.interrupted();
        } else {
            underutilized::consolidate(&disruption, &mut pass, &mut consolidation).await;
        }
        pass.remember(&mut started);
    }
}

async fn remove_empty<C>(
    disruption: &Disruption<C>,
    pass: &mut Pass,
    empty_since: &mut EmptySince,
) {
    let claims = pass.claims.clone();
    empty_since.retain(|name, _| claims.iter().any(|c| c.name_any() == *name));
    let pools: Vec<_> = pass.pools().cloned().collect();
    for pool in pools {
        let Some(after) = consolidate_after(&pool.spec.disruption.consolidate_after) else {
            continue;
        };
        let pool_claims: Vec<&Arc<NodeClaim>> = claims
            .iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(&pool.name_any()))
            .filter(|c| pass.is_available(c))
            .collect();
        let claimed: Vec<_> = pool_claims.iter().filter_map(|c| pass.claimed(c)).collect();
        let due = empty_claims(&claimed, empty_since, after, pass.now);
        if due.is_empty() {
            continue;
        }
        let room = pass.room(&pool, DisruptionReason::Empty);
        for name in due.into_iter().take(room) {
            empty_since.remove(&name);
            if let Some(claim) = pool_claims.iter().find(|c| c.name_any() == name) {
                let note =
                    format!("its node has been empty for {after:#}: deleting it (emptiness)");
                if delete(
                    disruption,
                    claim,
                    Method::Emptiness,
                    EventType::Normal,
                    note,
                )
                .await
                {
                    pass.started(claim);
                }
            }
        }
    }
}

/// Deletes the NodeClaim (so drains and terminates it), with an Event and its metric; returns
/// whether it is going.
async fn delete<C>(
    disruption: &Disruption<C>,
    claim: &NodeClaim,
    method: Method,
    event_type: EventType,
    note: String,
) -> bool {
    let name = claim.name_any();
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(nodeclaim = %name, method = method.name(), "deleting");
            publish(disruption, claim, event_type, "Disrupting", note).await;
            disruption
                .metrics
                .disruption_actions
                .get_or_create(&DisruptionLabels {
                    nodepool: nodepool(claim),
                    reason: method.label().into(),
                })
                .inc();
            true
        }
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(error) => {
            warn!(nodeclaim = %name, %error, "deleting a NodeClaim to disrupt failed");
            false
        }
    }
}

/// Adds what consolidating the pool saved, in dollars per hour, to its metric.
fn record_savings<C>(disruption: &Disruption<C>, nodepool: String, savings: Option<f64>) {
    if let Some(savings) = savings.filter(|s| *s > 0.0) {
        disruption
            .metrics
            .consolidation_savings
            .get_or_create(&PoolLabels { nodepool })
            .inc_by(savings);
    }
}

fn nodepool(claim: &NodeClaim) -> String {
    claim
        .labels()
        .get(NODEPOOL_LABEL)
        .cloned()
        .unwrap_or_default()
}

async fn publish<C>(
    disruption: &Disruption<C>,
    claim: &NodeClaim,
    event_type: EventType,
    reason: &str,
    note: String,
) {
    crate::events::publish(
        &disruption.recorder,
        claim,
        event_type,
        reason,
        note,
        "Disrupt",
    )
    .await;
}
