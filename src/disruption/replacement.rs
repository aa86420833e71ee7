//! Replacing a node (expiration, drift, consolidation): new capacity first, then the old node. The simulation
//! says where the candidate's pods would go. If they fit on other nodes the candidate is
//! deleted at once; if they need new nodes, the candidate's Node is tainted so nothing new
//! lands there, the replacements are created, and the candidate is deleted (so drained and
//! terminated) only once every replacement is Initialized. A replacement that goes away or does
//! not initialize within 10 minutes gives the replacement up: the replacements are deleted and
//! the taint comes off. What is under way is written on the candidate NodeClaim
//! (`windlass.dev/disruption`, `windlass.dev/replaced-by`), so a restart carries on with it.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::consolidation::node_price;
use super::emptiness::{ClaimedNode, may_disrupt, needs_home};
use super::expiration::{expire_after, expired};
use super::simulation::{Outcome, reschedule};
use super::{Disruption, room};
use crate::apis::labels::{
    DISRUPTED_TAINT, DISRUPTION_ANNOTATION, NODEPOOL_LABEL, REPLACED_BY_ANNOTATION,
    REPLACES_ANNOTATION, SCALED_JOB_LABEL,
};
use crate::apis::node_claim::{CONDITION_DRIFTED, CONDITION_INITIALIZED, NodeClaim};
use crate::apis::node_pool::DisruptionReason;
use crate::cloud::CloudProvider;
use crate::metrics::{DisruptionLabels, PoolLabels};
use crate::provisioning::claims::node_claim;
use crate::termination::drain::has_do_not_disrupt;
use crate::termination::{taint, untaint};

/// How long replacements may take to be Initialized.
const REPLACEMENT_TIMEOUT: SignedDuration = SignedDuration::from_mins(10);

/// Why a node is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Expiration,
    Drift,
    Consolidation,
}

impl Method {
    /// The metric label and the `windlass.dev/disruption` annotation.
    fn label(self) -> &'static str {
        match self {
            Method::Expiration => "expired",
            Method::Drift => "drifted",
            Method::Consolidation => "underutilized",
        }
    }

    fn from_label(label: &str) -> Self {
        [Method::Expiration, Method::Consolidation]
            .into_iter()
            .find(|m| m.label() == label)
            .unwrap_or(Method::Drift)
    }

    fn name(self) -> &'static str {
        match self {
            Method::Expiration => "expiration",
            Method::Drift => "drift",
            Method::Consolidation => "consolidation",
        }
    }
}

/// Whether a replacement of this NodeClaim is under way.
pub fn is_replacing(claim: &NodeClaim) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && claim.annotations().contains_key(DISRUPTION_ANNOTATION)
}

/// The candidates for the next replacement, in Karpenter's order: expired NodeClaims, then
/// drifted ones within their pool's budget. Tries each until one is acted on; returns whether
/// one was.
pub async fn start_next<C: CloudProvider>(
    disruption: &Disruption<C>,
    claims: &[Arc<NodeClaim>],
    now: Timestamp,
) -> bool {
    let launched = claims.iter().filter(|c| {
        c.metadata.deletion_timestamp.is_none()
            && c.status.as_ref().is_some_and(|s| s.node_name.is_some())
    });
    let mut candidates: Vec<(Method, &Arc<NodeClaim>)> = launched
        .clone()
        .filter(|c| expired(c, now))
        .map(|c| (Method::Expiration, c))
        .collect();
    candidates.extend(
        launched
            .filter(|c| !expired(c, now) && drifted(c).is_some())
            .filter(|c| voluntarily_disruptable(disruption, c, now))
            .filter(|c| {
                let Some(pool_name) = c.labels().get(NODEPOOL_LABEL) else {
                    return false;
                };
                let Some(pool) = disruption.state.node_pool(pool_name) else {
                    return false;
                };
                let pool_claims: Vec<&Arc<NodeClaim>> = claims
                    .iter()
                    .filter(|o| o.labels().get(NODEPOOL_LABEL) == Some(pool_name))
                    .collect();
                room(&pool, &pool_claims, DisruptionReason::Drifted, now) > 0
            })
            .map(|c| (Method::Drift, c)),
    );
    if candidates.is_empty() {
        return false;
    }
    let catalog = match disruption.cloud.instance_types().await {
        Ok(catalog) => catalog,
        Err(error) => {
            warn!(%error, "no instance types to plan replacements with");
            return false;
        }
    };
    for (method, candidate) in candidates {
        let why = match method {
            Method::Expiration => format!(
                "it has lived past its expireAfter of {:#}",
                expire_after(candidate).unwrap_or_default()
            ),
            Method::Drift | Method::Consolidation => drifted(candidate).unwrap_or_default(),
        };
        match reschedule(&disruption.state, &catalog, candidate) {
            Outcome::Delete => {
                let note = format!(
                    "{why}; its pods fit on other nodes: deleting it ({})",
                    method.name()
                );
                delete(disruption, candidate, method, EventType::Normal, note, None).await;
                return true;
            }
            Outcome::Blocked(blocked) if method == Method::Expiration => {
                let note = format!("{why}; {blocked}: deleting it anyway (expiration)");
                delete(
                    disruption,
                    candidate,
                    method,
                    EventType::Warning,
                    note,
                    None,
                )
                .await;
                return true;
            }
            Outcome::Blocked(blocked) => {
                publish(
                    disruption,
                    candidate,
                    EventType::Warning,
                    "DisruptionBlocked",
                    format!("{why}, but it stays: {blocked} (drift)"),
                )
                .await;
            }
            Outcome::Replace { node_pools, claims } => {
                let mut objects = Vec::with_capacity(claims.len());
                for planned in &claims {
                    let pool = &node_pools[planned.pool];
                    let class = disruption
                        .state
                        .node_class(&pool.spec.template.spec.node_class_ref.name);
                    let mut object = node_claim(
                        pool,
                        class.as_deref(),
                        planned,
                        &catalog,
                        &disruption.cluster,
                    );
                    object
                        .annotations_mut()
                        .insert(REPLACES_ANNOTATION.into(), candidate.name_any());
                    objects.push(object);
                }
                begin(disruption, candidate, method, &why, objects).await;
                return true;
            }
        }
    }
    false
}

/// The message of the claim's `Drifted` condition, if it is True.
fn drifted(claim: &NodeClaim) -> Option<String> {
    claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_DRIFTED && c.status == "True")
        .map(|c| c.message.clone())
}

/// What voluntary disruption asks of a node: settled, not protected, and no pod on it that
/// asks not to be disrupted or belongs to a ScaledJob's Job (it runs to its end; the node goes
/// once it is empty).
pub fn voluntarily_disruptable<C>(
    disruption: &Disruption<C>,
    claim: &NodeClaim,
    now: Timestamp,
) -> bool {
    let Some(node_name) = claim.status.as_ref().and_then(|s| s.node_name.as_ref()) else {
        return false;
    };
    let Some(node) = disruption
        .state
        .nodes
        .state()
        .into_iter()
        .find(|n| n.name_any() == *node_name)
    else {
        return false;
    };
    let pods = disruption
        .state
        .pods_by_node()
        .remove(node_name)
        .unwrap_or_default();
    let claimed = ClaimedNode {
        claim,
        node: &node,
        pods: &pods,
    };
    may_disrupt(&claimed, now)
        && !pods.iter().any(|p| {
            has_do_not_disrupt(p) || (needs_home(p) && p.labels().contains_key(SCALED_JOB_LABEL))
        })
}

/// Taints the candidate's Node, creates its replacements and writes down what is under way.
pub async fn begin<C>(
    disruption: &Disruption<C>,
    candidate: &NodeClaim,
    method: Method,
    why: &str,
    replacements: Vec<NodeClaim>,
) {
    let nodes: Api<Node> = Api::all(disruption.client.clone());
    if let Some(node) = node_of(disruption, candidate)
        && let Err(error) = taint(&nodes, &node).await
    {
        warn!(nodeclaim = %candidate.name_any(), %error, "tainting a node to replace failed");
        return;
    }
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    let mut names = Vec::with_capacity(replacements.len());
    for object in &replacements {
        match api.create(&PostParams::default(), object).await {
            Ok(created) => names.push(created.name_any()),
            Err(error) => {
                warn!(nodeclaim = %candidate.name_any(), %error, "creating a replacement failed");
                give_up(
                    disruption,
                    candidate,
                    &names,
                    &format!("creating a replacement failed: {error}"),
                )
                .await;
                return;
            }
        }
    }
    let patch = json!({"metadata": {"annotations": {
        DISRUPTION_ANNOTATION: method.label(),
        REPLACED_BY_ANNOTATION: names.join(","),
    }}});
    if let Err(error) = api
        .patch(
            &candidate.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(nodeclaim = %candidate.name_any(), %error, "recording a replacement failed");
        give_up(
            disruption,
            candidate,
            &names,
            &format!("recording the replacement failed: {error}"),
        )
        .await;
        return;
    }
    info!(nodeclaim = %candidate.name_any(), replacements = %names.join(","), method = method.name(), "replacing");
    publish(
        disruption,
        candidate,
        EventType::Normal,
        "Disrupting",
        format!(
            "{why}: launching {} first, then deleting it ({})",
            names.join(", "),
            method.name()
        ),
    )
    .await;
}

/// Carries a replacement under way on: deletes the candidate once every replacement is
/// Initialized, gives up if one went away or they took too long.
pub async fn follow<C: CloudProvider>(disruption: &Disruption<C>, candidate: &NodeClaim) {
    let method = Method::from_label(
        candidate
            .annotations()
            .get(DISRUPTION_ANNOTATION)
            .map_or("", String::as_str),
    );
    let names: Vec<String> = candidate
        .annotations()
        .get(REPLACED_BY_ANNOTATION)
        .map(|names| {
            names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    let mut replacements = Vec::with_capacity(names.len());
    for name in &names {
        match api.get_opt(name).await {
            Ok(Some(claim)) if claim.metadata.deletion_timestamp.is_none() => {
                replacements.push(claim)
            }
            Ok(_) => {
                give_up(
                    disruption,
                    candidate,
                    &names,
                    &format!("replacement {name} went away"),
                )
                .await;
                return;
            }
            Err(error) => {
                warn!(nodeclaim = %name, %error, "reading a replacement failed");
                return;
            }
        }
    }
    let initialized = |claim: &NodeClaim| {
        claim.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == CONDITION_INITIALIZED && c.status == "True")
        })
    };
    if replacements.iter().all(initialized) {
        let savings = match method {
            Method::Consolidation => savings(disruption, candidate, &replacements).await,
            Method::Expiration | Method::Drift => None,
        };
        let saving = savings.map_or(String::new(), |s| format!(", saving ${s:.4}/h"));
        let note = format!(
            "replaced by {}: deleting it ({}){saving}",
            names.join(", "),
            method.name()
        );
        delete(
            disruption,
            candidate,
            method,
            EventType::Normal,
            note,
            savings,
        )
        .await;
        return;
    }
    let started = replacements
        .iter()
        .filter_map(|c| c.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .min();
    if started.is_some_and(|at| Timestamp::now().duration_since(at) >= REPLACEMENT_TIMEOUT) {
        give_up(
            disruption,
            candidate,
            &names,
            "its replacements were not Initialized within 10 minutes",
        )
        .await;
    }
}

/// The candidate's hourly price less its replacements', when every one of them is known.
async fn savings<C: CloudProvider>(
    disruption: &Disruption<C>,
    candidate: &NodeClaim,
    replacements: &[NodeClaim],
) -> Option<f64> {
    let catalog = disruption.cloud.instance_types().await.ok()?;
    let price =
        |claim: &NodeClaim| node_of(disruption, claim).and_then(|node| node_price(&node, &catalog));
    let replaced_by: Option<f64> = replacements.iter().map(price).sum();
    Some(price(candidate)? - replaced_by?)
}

/// Deletes the replacements made so far, takes the taint off the candidate's Node and the
/// record off the candidate.
async fn give_up<C>(
    disruption: &Disruption<C>,
    candidate: &NodeClaim,
    replacements: &[String],
    why: &str,
) {
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    for name in replacements {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => warn!(nodeclaim = %name, %error, "deleting a replacement failed"),
        }
    }
    let nodes: Api<Node> = Api::all(disruption.client.clone());
    if let Some(node) = node_of(disruption, candidate)
        && let Err(error) = untaint(&nodes, &node).await
    {
        warn!(nodeclaim = %candidate.name_any(), %error, "untainting a node failed");
    }
    let patch = json!({"metadata": {"annotations": {
        DISRUPTION_ANNOTATION: null,
        REPLACED_BY_ANNOTATION: null,
    }}});
    if let Err(error) = api
        .patch(
            &candidate.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        warn!(nodeclaim = %candidate.name_any(), %error, "clearing a replacement failed");
    }
    publish(
        disruption,
        candidate,
        EventType::Warning,
        "DisruptionFailed",
        format!("replacing it was given up: {why}"),
    )
    .await;
}

/// After a restart: a Node left tainted for a replacement that was never written down (the
/// process stopped between the taint and the record) gets its taint back off.
pub async fn release_forgotten<C>(disruption: &Disruption<C>) {
    let nodes: Api<Node> = Api::all(disruption.client.clone());
    for claim in super::own_claims(disruption) {
        if claim.metadata.deletion_timestamp.is_some() || is_replacing(&claim) {
            continue;
        }
        let Some(node) = node_of(disruption, &claim) else {
            continue;
        };
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT));
        if tainted && node.metadata.deletion_timestamp.is_none() {
            match untaint(&nodes, &node).await {
                Ok(()) => info!(node = %node.name_any(), "took a forgotten disruption taint off"),
                Err(error) => warn!(node = %node.name_any(), %error, "untainting a node failed"),
            }
        }
    }
}

pub fn node_of<C>(disruption: &Disruption<C>, claim: &NodeClaim) -> Option<Arc<Node>> {
    let name = claim.status.as_ref()?.node_name.as_ref()?;
    disruption
        .state
        .nodes
        .state()
        .into_iter()
        .find(|n| n.name_any() == *name)
}

/// Deletes the candidate (so drains and terminates it), with an Event and its metrics;
/// `savings` is what consolidation saves by it, in dollars per hour.
pub async fn delete<C>(
    disruption: &Disruption<C>,
    candidate: &NodeClaim,
    method: Method,
    event_type: EventType,
    note: String,
    savings: Option<f64>,
) {
    let name = candidate.name_any();
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            info!(nodeclaim = %name, method = method.name(), "deleting");
            publish(disruption, candidate, event_type, "Disrupting", note).await;
            let nodepool = candidate
                .labels()
                .get(NODEPOOL_LABEL)
                .cloned()
                .unwrap_or_default();
            if let Some(savings) = savings.filter(|s| *s > 0.0) {
                disruption
                    .metrics
                    .consolidation_savings
                    .get_or_create(&PoolLabels {
                        nodepool: nodepool.clone(),
                    })
                    .inc_by(savings);
            }
            disruption
                .metrics
                .disruption_actions
                .get_or_create(&DisruptionLabels {
                    nodepool,
                    reason: method.label().into(),
                })
                .inc();
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(error) => warn!(nodeclaim = %name, %error, "deleting a NodeClaim to disrupt failed"),
    }
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
