//! Consolidation of underused nodes (`WhenEmptyOrUnderutilized`): the candidates are the
//! NodeClaims marked `Consolidatable` (no pod come or gone for the pool's `consolidateAfter`)
//! whose every pod may move, within the pool's budget; `multi_node` looks for several to take
//! at once, then `single_node` for one. A decision is acted on once it has held for 15 s
//! (see [`consolidation::Pending`]); a node to delete is cordoned (tainted) first and goes at
//! the next pass, or once no ScaledJob Job runs there, never evicting one; a replacement goes
//! through `replacement`, new node first. Empty nodes are emptiness's. No pool
//! in which a ScaledObject or ScaledJob that is scaling out runs pods is consolidated (see
//! `scale_outs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::consolidation::{self, Pending, node_price};
use super::emptiness::needs_home;
use super::pass::{Pass, is_scaled_job_pod};
use super::replacement::{begin, replacement_claims};
use super::{Disruption, Method, multi_node, single_node};
use crate::apis::labels::NODEPOOL_LABEL;
use crate::apis::node_claim::{CONDITION_CONSOLIDATABLE, NodeClaim};
use crate::apis::node_pool::{DisruptionReason, NodePool};
use crate::cloud::CloudProvider;
use crate::scale_outs::ScaleOut;
use crate::scheduling::NewClaim;

/// What consolidation keeps between passes, in memory.
#[derive(Default)]
pub struct Memory {
    /// The decision waiting out its validation.
    pending: Pending,
    /// The cluster as it was when nothing was found to consolidate.
    consolidated: consolidation::Consolidated,
    /// The pools held off while something scales out, and what.
    held: BTreeMap<String, String>,
}

impl Memory {
    /// Something else disrupted: a pending decision starts over.
    pub fn interrupted(&mut self) {
        self.pending.clear();
    }
}

/// A NodeClaim consolidation may take.
pub struct Candidate {
    pub claim: Arc<NodeClaim>,
    /// Its node's hourly price.
    pub price: Option<f64>,
    /// Whether its node is a spot instance.
    pub spot: bool,
}

/// What consolidation would do.
pub struct Decision {
    pub candidates: Vec<Arc<NodeClaim>>,
    /// The candidates' hourly price together, when every one is known.
    pub current: Option<f64>,
    pub action: Action,
}

pub enum Action {
    /// Their pods fit on the other nodes.
    Delete,
    /// One cheaper node, of `node_pools[claim.pool]`, takes their pods; `price` is its
    /// cheapest offering.
    Replace {
        node_pools: Vec<Arc<NodePool>>,
        claim: NewClaim,
        price: f64,
    },
}

/// Consolidates at most one decision's nodes.
pub async fn consolidate<C: CloudProvider>(
    disruption: &Disruption<C>,
    pass: &mut Pass,
    memory: &mut Memory,
) {
    let now = pass.now;
    let held = held_pools(
        &disruption.scale_outs.active(now),
        pass.pods_by_node(),
        |node| pass.node_named(node)?.labels().get(NODEPOOL_LABEL).cloned(),
    );
    announce_holds(disruption, pass, &mut memory.held, held).await;
    let mut candidates: Vec<(usize, Arc<NodeClaim>)> = pass
        .claims
        .iter()
        .filter(|claim| pass.is_available(claim))
        .filter(|claim| {
            claim
                .labels()
                .get(NODEPOOL_LABEL)
                .is_none_or(|pool| !memory.held.contains_key(pool))
        })
        .filter(|claim| claim.has_condition(CONDITION_CONSOLIDATABLE))
        .filter_map(|claim| {
            let on_node = pass.pods(claim);
            let moving = on_node
                .iter()
                .filter(|p| needs_home(p) && !is_scaled_job_pod(p))
                .count();
            let keeps_node = on_node
                .iter()
                .any(|p| needs_home(p) && !consolidation::movable(p));
            let busy = moving > 0 || pass.runs_scaled_jobs(claim);
            (busy
                && !keeps_node
                && pass.may_disrupt_voluntarily(claim)
                && pass.has_room(claim, DisruptionReason::Underutilized))
            .then(|| (moving, claim.clone()))
        })
        .collect();
    if candidates.is_empty() {
        memory.pending.clear();
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
    if memory.consolidated.still(fingerprint, now) {
        return;
    }
    let catalog = match disruption.cloud.instance_types().await {
        Ok(catalog) => catalog,
        Err(error) => {
            warn!(%error, "no instance types to consolidate with");
            return;
        }
    };
    let candidates: Vec<Candidate> = candidates
        .into_iter()
        .map(|(_, claim)| Candidate {
            price: pass.node(&claim).and_then(|n| node_price(n, &catalog)),
            spot: pass.node(&claim).is_some_and(|n| consolidation::is_spot(n)),
            claim,
        })
        .collect();
    let spot_to_spot = disruption.spot_to_spot_consolidation;
    let decision = multi_node::decide(state, &catalog, pass, &candidates, spot_to_spot)
        .or_else(|| single_node::decide(state, &catalog, pass, &candidates, spot_to_spot));
    let Some(decision) = decision else {
        memory.pending.clear();
        memory.consolidated.mark(fingerprint, now);
        return;
    };
    // The same nodes and the same action, or the validation starts over.
    let names = decision
        .candidates
        .iter()
        .map(|c| c.name_any())
        .collect::<Vec<_>>()
        .join(",");
    let key = match &decision.action {
        Action::Delete => format!("delete {names}"),
        Action::Replace { claim, .. } => format!("replace {names} by {:?}", claim.instance_types),
    };
    if memory.pending.held(&key, now) {
        memory.pending.clear();
        act(disruption, pass, decision, &catalog).await;
    }
}

/// The NodePools in which a pod of something scaling out runs, each with the first such
/// object: consolidating there would evict the work arriving from the queue, or take the room
/// it is about to need.
pub fn held_pools(
    scale_outs: &[ScaleOut],
    pods_by_node: &HashMap<String, Vec<Arc<Pod>>>,
    pool_of_node: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    if scale_outs.is_empty() {
        return held;
    }
    for (node, pods) in pods_by_node {
        let Some(out) = scale_outs
            .iter()
            .find(|out| pods.iter().any(|pod| out.owns(pod)))
        else {
            continue;
        };
        if let Some(pool) = pool_of_node(node) {
            held.entry(pool).or_insert_with(|| out.object.clone());
        }
    }
    held
}

/// An Event on each NodePool as its hold starts.
async fn announce_holds<C>(
    disruption: &Disruption<C>,
    pass: &Pass,
    was: &mut BTreeMap<String, String>,
    now: BTreeMap<String, String>,
) {
    for (pool, object) in &now {
        if was.contains_key(pool) {
            continue;
        }
        info!(nodepool = %pool, scaling = %object, "consolidation held while it scales out");
        if let Some(pool) = pass.pools().find(|p| p.name_any() == *pool) {
            crate::events::publish(
                &disruption.recorder,
                pool.as_ref(),
                EventType::Normal,
                "ConsolidationHeld",
                format!("{object} is scaling out onto this pool's nodes: no consolidation until it settles"),
                "Disrupt",
            )
            .await;
        }
    }
    *was = now;
}

async fn act<C>(
    disruption: &Disruption<C>,
    pass: &mut Pass,
    decision: Decision,
    catalog: &[crate::scheduling::instance_types::InstanceType],
) {
    let Decision {
        candidates,
        current,
        action,
    } = decision;
    let claims: Vec<&NodeClaim> = candidates.iter().map(AsRef::as_ref).collect();
    let method = Method::Consolidation;
    let nodes = match claims.len() {
        1 => "its pods".to_owned(),
        n => format!("the pods of these {n} nodes"),
    };
    match action {
        // Cordoned first, so nothing new lands there; the next pass deletes them once no
        // ScaledJob Job runs there and their pods still fit elsewhere.
        Action::Delete => {
            let why = format!("{nodes} fit on other nodes");
            begin(disruption, pass, &claims, method, &why, Vec::new()).await;
        }
        Action::Replace {
            node_pools,
            claim,
            price,
        } => {
            let objects = replacement_claims(disruption, &node_pools, &[claim], catalog, &claims);
            let current = current.unwrap_or_default();
            let why =
                format!("one cheaper node can take {nodes} (${current:.4}/h → from ${price:.4}/h)");
            begin(disruption, pass, &claims, method, &why, objects).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use serde_json::json;

    fn pod(app: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": app, "namespace": "ns", "labels": {"app": app}}}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn a_pool_is_held_where_a_scaling_out_object_runs_pods() {
        let out = ScaleOut {
            object: "ScaledObject/ns/worker".into(),
            regarding: Default::default(),
            namespace: "ns".into(),
            pod_labels: BTreeMap::from([("app".into(), "worker".into())]),
            demand: None,
            until: Timestamp::from_second(1_800_000_000).unwrap(),
        };
        let pods = HashMap::from([
            ("n1".to_owned(), vec![pod("web"), pod("worker")]),
            ("n2".to_owned(), vec![pod("web")]),
            ("n3".to_owned(), vec![pod("worker")]),
        ]);
        let pool_of = |node: &str| match node {
            "n1" => Some("a".to_owned()),
            "n2" | "n3" => Some("b".to_owned()),
            _ => None,
        };
        let held = held_pools(&[out], &pods, pool_of);
        assert_eq!(
            held,
            BTreeMap::from([
                ("a".to_owned(), "ScaledObject/ns/worker".to_owned()),
                ("b".to_owned(), "ScaledObject/ns/worker".to_owned()),
            ])
        );
        assert!(
            held_pools(&[], &pods, pool_of).is_empty(),
            "nothing scales out"
        );
    }
}
