//! Replacing nodes (expiration, drift, consolidation): new capacity first, then the old
//! nodes. The simulation says where the candidates' pods would go. If they fit on other nodes
//! the candidates are deleted at once; if they need new nodes, the candidates' Nodes are
//! tainted so nothing new lands there, the replacements are created, and the candidates are
//! deleted (so drained and terminated) only once every replacement is Initialized. A
//! replacement that goes away or does not initialize within 10 minutes gives the replacement
//! up: the replacements are deleted and the taints come off. What is under way is written on
//! each candidate NodeClaim (`windlass.dev/disruption`, `windlass.dev/replaced-by`, the same on
//! every candidate of one replacement), so a restart carries on with it.

use std::sync::Arc;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::consolidation::node_price;
use super::expiration::{expire_after, expired};
use super::pass::Pass;
use super::simulation::{Outcome, reschedule};
use super::{Disruption, Method, delete, nodepool, publish, record_savings};
use crate::apis::labels::{
    DISRUPTED_TAINT, DISRUPTION_ANNOTATION, REPLACED_BY_ANNOTATION, REPLACES_ANNOTATION,
};
use crate::apis::node_claim::{CONDITION_DRIFTED, CONDITION_INITIALIZED, NodeClaim};
use crate::apis::node_pool::{DisruptionReason, NodePool};
use crate::cloud::CloudProvider;
use crate::provisioning::claims::node_claim;
use crate::scheduling::NewClaim;
use crate::scheduling::instance_types::InstanceType;
use crate::termination::set_disrupted_taint;

/// How long replacements may take to be Initialized.
const REPLACEMENT_TIMEOUT: SignedDuration = SignedDuration::from_mins(10);

impl Method {
    fn from_label(label: &str) -> Self {
        [Method::Expiration, Method::Consolidation]
            .into_iter()
            .find(|m| m.label() == label)
            .unwrap_or(Method::Drift)
    }
}

/// Whether a replacement of this NodeClaim is under way.
pub fn is_replacing(claim: &NodeClaim) -> bool {
    claim.metadata.deletion_timestamp.is_none()
        && claim.annotations().contains_key(DISRUPTION_ANNOTATION)
}

/// Whether a replacement (new nodes launching) is under way in this install; nodes cordoned
/// for their ScaledJob Jobs do not count.
pub fn under_way(pass: &Pass) -> bool {
    pass.claims
        .iter()
        .any(|c| is_replacing(c) && !replaced_by(c).is_empty())
}

/// The names of the NodeClaims launched to replace this one.
fn replaced_by(claim: &NodeClaim) -> &str {
    claim
        .annotations()
        .get(REPLACED_BY_ANNOTATION)
        .map_or("", String::as_str)
}

/// The candidates for the next replacement, in Karpenter's order: expired NodeClaims, then
/// drifted ones within their pool's budget. Tries each until one is acted on; returns whether
/// one was.
pub async fn start_next<C: CloudProvider>(disruption: &Disruption<C>, pass: &mut Pass) -> bool {
    let now = pass.now;
    let launched = pass
        .claims
        .iter()
        .filter(|c| pass.is_available(c) && c.node_name().is_some());
    let mut candidates: Vec<(Method, Arc<NodeClaim>)> = launched
        .clone()
        .filter(|c| expired(c, now))
        .map(|c| (Method::Expiration, c.clone()))
        .collect();
    candidates.extend(
        launched
            .filter(|c| !expired(c, now) && drifted(c).is_some())
            .filter(|c| pass.voluntarily_disruptable(c))
            .filter(|c| pass.has_room(c, DisruptionReason::Drifted))
            .map(|c| (Method::Drift, c.clone())),
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
                expire_after(&candidate).unwrap_or_default()
            ),
            _ => drifted(&candidate).unwrap_or_default(),
        };
        match reschedule(&disruption.state, &catalog, pass, &[&candidate]) {
            Outcome::Delete => {
                let note = format!(
                    "{why}; its pods fit on other nodes: deleting it ({})",
                    method.name()
                );
                if delete(disruption, &candidate, method, EventType::Normal, note).await {
                    pass.started(&candidate);
                }
                return true;
            }
            Outcome::Blocked(blocked) if method == Method::Expiration => {
                let note = format!("{why}; {blocked}: deleting it anyway (expiration)");
                if delete(disruption, &candidate, method, EventType::Warning, note).await {
                    pass.started(&candidate);
                }
                return true;
            }
            Outcome::Blocked(blocked) => {
                publish(
                    disruption,
                    &candidate,
                    EventType::Warning,
                    "DisruptionBlocked",
                    format!("{why}, but it stays: {blocked} (drift)"),
                )
                .await;
            }
            Outcome::Replace { node_pools, claims } => {
                let objects =
                    replacement_claims(disruption, &node_pools, &claims, &catalog, &[&candidate]);
                begin(disruption, pass, &[&candidate], method, &why, objects).await;
                return true;
            }
        }
    }
    false
}

/// The NodeClaims the simulation planned, each naming the candidates it replaces.
pub fn replacement_claims<C>(
    disruption: &Disruption<C>,
    node_pools: &[Arc<NodePool>],
    planned: &[NewClaim],
    catalog: &[InstanceType],
    candidates: &[&NodeClaim],
) -> Vec<NodeClaim> {
    let replaces = names(candidates);
    planned
        .iter()
        .map(|planned| {
            let pool = &node_pools[planned.pool];
            let class = disruption
                .state
                .node_class(&pool.spec.template.spec.node_class_ref.name);
            let mut object = node_claim(
                pool,
                class.as_deref(),
                planned,
                catalog,
                &disruption.cluster,
            );
            object
                .annotations_mut()
                .insert(REPLACES_ANNOTATION.into(), replaces.clone());
            object
        })
        .collect()
}

fn names(claims: &[&NodeClaim]) -> String {
    claims
        .iter()
        .map(|c| c.name_any())
        .collect::<Vec<_>>()
        .join(",")
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

/// Taints the candidates' Nodes, creates their replacements and writes down on each candidate
/// what is under way.
pub async fn begin<C>(
    disruption: &Disruption<C>,
    pass: &mut Pass,
    candidates: &[&NodeClaim],
    method: Method,
    why: &str,
    replacements: Vec<NodeClaim>,
) {
    let nodes: Api<Node> = Api::all(disruption.client.clone());
    for (tainted, candidate) in candidates.iter().enumerate() {
        if let Some(node) = pass.node(candidate)
            && let Err(error) = set_disrupted_taint(&nodes, node, true).await
        {
            warn!(nodeclaim = %candidate.name_any(), %error, "tainting a node to replace failed");
            give_up(
                disruption,
                &candidates[..tainted],
                &[],
                &format!("tainting its node failed: {error}"),
            )
            .await;
            return;
        }
    }
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    let mut created = Vec::with_capacity(replacements.len());
    for object in &replacements {
        match api.create(&PostParams::default(), object).await {
            Ok(claim) => created.push(claim.name_any()),
            Err(error) => {
                warn!(nodeclaims = %names(candidates), %error, "creating a replacement failed");
                let why = format!("creating a replacement failed: {error}");
                give_up(disruption, candidates, &created, &why).await;
                return;
            }
        }
    }
    let record = json!({
        DISRUPTION_ANNOTATION: method.label(),
        REPLACED_BY_ANNOTATION: created.join(","),
    });
    for candidate in candidates {
        if let Err(error) = annotate(&api, candidate, &record).await {
            warn!(nodeclaim = %candidate.name_any(), %error, "recording a replacement failed");
            let why = format!("recording the replacement failed: {error}");
            give_up(disruption, candidates, &created, &why).await;
            return;
        }
        pass.started(candidate);
    }
    info!(nodeclaims = %names(candidates), replacements = %created.join(","), method = method.name(), "replacing");
    let together = |candidate: &NodeClaim| {
        let others: Vec<&NodeClaim> = candidates
            .iter()
            .copied()
            .filter(|c| c.name_any() != candidate.name_any())
            .collect();
        if others.is_empty() {
            String::new()
        } else {
            format!(" with {}", names(&others))
        }
    };
    for candidate in candidates {
        let note = if created.is_empty() {
            format!(
                "{why}: cordoned, it goes once no ScaledJob Job runs there{} ({})",
                together(candidate),
                method.name()
            )
        } else {
            format!(
                "{why}: launching {} first, then deleting it{} ({})",
                created.join(", "),
                together(candidate),
                method.name()
            )
        };
        publish(disruption, candidate, EventType::Normal, "Disrupting", note).await;
    }
}

/// Merges `annotations` into the claim's (a null value takes one off).
async fn annotate(
    api: &Api<NodeClaim>,
    claim: &NodeClaim,
    annotations: &serde_json::Value,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": annotations}});
    api.patch(
        &claim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
}

/// Carries each replacement under way on: deletes its candidates once every replacement is
/// Initialized, gives it up if one went away or they took too long.
pub async fn follow<C: CloudProvider>(disruption: &Disruption<C>, pass: &Pass) {
    let mut groups: BTreeMap<&str, Vec<&NodeClaim>> = BTreeMap::new();
    for claim in pass.claims.iter().filter(|c| is_replacing(c)) {
        groups.entry(replaced_by(claim)).or_default().push(claim);
    }
    for (replaced_by, candidates) in groups {
        if replaced_by.is_empty() {
            follow_cordoned(disruption, pass, &candidates).await;
        } else {
            follow_one(disruption, pass, replaced_by, &candidates).await;
        }
    }
}

/// Nodes consolidation cordoned: each goes once no ScaledJob Job runs there, if its pods
/// still fit on the other nodes together with those of the ones going before it; otherwise
/// its cordon comes off.
async fn follow_cordoned<C: CloudProvider>(
    disruption: &Disruption<C>,
    pass: &Pass,
    candidates: &[&NodeClaim],
) {
    let done: Vec<&NodeClaim> = candidates
        .iter()
        .copied()
        .filter(|c| !pass.runs_scaled_jobs(c))
        .collect();
    if done.is_empty() {
        return;
    }
    let catalog = match disruption.cloud.instance_types().await {
        Ok(catalog) => catalog,
        Err(error) => {
            warn!(%error, "no instance types to check a cordoned node with");
            return;
        }
    };
    let mut leaving: Vec<&NodeClaim> = Vec::with_capacity(done.len());
    for candidate in done {
        leaving.push(candidate);
        match reschedule(&disruption.state, &catalog, pass, &leaving) {
            Outcome::Delete => {
                let price = pass.node(candidate).and_then(|n| node_price(n, &catalog));
                let saving = price.map_or(String::new(), |p| format!(", saving ${p:.4}/h"));
                let note =
                    format!("its pods fit on other nodes: deleting it (consolidation){saving}");
                let method = Method::Consolidation;
                if delete(disruption, candidate, method, EventType::Normal, note).await {
                    record_savings(disruption, nodepool(candidate), price);
                }
            }
            Outcome::Replace { .. } | Outcome::Blocked(_) => {
                leaving.pop();
                let why = "its pods no longer fit on the other nodes";
                give_up(disruption, &[candidate], &[], why).await;
            }
        }
    }
}

async fn follow_one<C: CloudProvider>(
    disruption: &Disruption<C>,
    pass: &Pass,
    replaced_by: &str,
    candidates: &[&NodeClaim],
) {
    let method = Method::from_label(
        candidates[0]
            .annotations()
            .get(DISRUPTION_ANNOTATION)
            .map_or("", String::as_str),
    );
    let names: Vec<String> = replaced_by
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let api: Api<NodeClaim> = Api::all(disruption.client.clone());
    let mut replacements = Vec::with_capacity(names.len());
    for name in &names {
        match api.get_opt(name).await {
            Ok(Some(claim)) if claim.metadata.deletion_timestamp.is_none() => {
                replacements.push(claim)
            }
            Ok(_) => {
                let why = format!("replacement {name} went away");
                give_up(disruption, candidates, &names, &why).await;
                return;
            }
            Err(error) => {
                warn!(nodeclaim = %name, %error, "reading a replacement failed");
                return;
            }
        }
    }
    let initialized = replacements
        .iter()
        .all(|c| c.has_condition(CONDITION_INITIALIZED));
    // Consolidation never evicts a ScaledJob's Job: its node goes once the Job is done.
    let waits_for_jobs =
        method == Method::Consolidation && candidates.iter().any(|c| pass.runs_scaled_jobs(c));
    if initialized && !waits_for_jobs {
        let savings = match method {
            Method::Consolidation => savings(disruption, pass, candidates, &replacements).await,
            _ => None,
        };
        let saving = savings.map_or(String::new(), |s| format!(", saving ${s:.4}/h"));
        let others = if candidates.len() > 1 {
            format!(" with the {} nodes it replaces", candidates.len())
        } else {
            String::new()
        };
        let mut deleted = false;
        for candidate in candidates {
            let note = format!(
                "replaced by {}: deleting it{others} ({}){saving}",
                names.join(", "),
                method.name()
            );
            deleted |= delete(disruption, candidate, method, EventType::Normal, note).await;
        }
        if deleted {
            record_savings(disruption, nodepool(candidates[0]), savings);
        }
        return;
    }
    let started = replacements
        .iter()
        .filter_map(|c| c.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .min();
    if !initialized
        && started.is_some_and(|at| Timestamp::now().duration_since(at) >= REPLACEMENT_TIMEOUT)
    {
        let why = "its replacements were not Initialized within 10 minutes";
        give_up(disruption, candidates, &names, why).await;
    }
}

/// The candidates' hourly price less their replacements', when every one of them is known.
async fn savings<C: CloudProvider>(
    disruption: &Disruption<C>,
    pass: &Pass,
    candidates: &[&NodeClaim],
    replacements: &[NodeClaim],
) -> Option<f64> {
    let catalog = disruption.cloud.instance_types().await.ok()?;
    let price = |claim: &NodeClaim| pass.node(claim).and_then(|node| node_price(node, &catalog));
    let replaced: Option<f64> = candidates.iter().map(|c| price(c)).sum();
    let replaced_by: Option<f64> = replacements.iter().map(price).sum();
    Some(replaced? - replaced_by?)
}

/// Deletes the replacements made so far, takes the taint off the candidates' Nodes and the
/// record off the candidates.
async fn give_up<C>(
    disruption: &Disruption<C>,
    candidates: &[&NodeClaim],
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
    let cleared = json!({DISRUPTION_ANNOTATION: null, REPLACED_BY_ANNOTATION: null});
    for candidate in candidates {
        // Read afresh: the pass saw the Node before this replacement tainted it.
        let node = match candidate.node_name() {
            Some(name) => nodes.get_opt(name).await.ok().flatten(),
            None => None,
        };
        if let Some(node) = node
            && let Err(error) = set_disrupted_taint(&nodes, &node, false).await
        {
            warn!(nodeclaim = %candidate.name_any(), %error, "untainting a node failed");
        }
        if let Err(error) = annotate(&api, candidate, &cleared).await {
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
}

/// After a restart: a Node left tainted for a replacement that was never written down (the
/// process stopped between the taint and the record) gets its taint back off.
pub async fn release_forgotten<C>(disruption: &Disruption<C>) {
    let pass = Pass::read(
        &disruption.state,
        &disruption.cluster,
        Timestamp::now(),
        &Default::default(),
    );
    let nodes: Api<Node> = Api::all(disruption.client.clone());
    for claim in &pass.claims {
        if claim.is_disrupting() {
            continue;
        }
        let Some(node) = pass.node(claim) else {
            continue;
        };
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT));
        if tainted && node.metadata.deletion_timestamp.is_none() {
            match set_disrupted_taint(&nodes, node, false).await {
                Ok(()) => info!(node = %node.name_any(), "took a forgotten disruption taint off"),
                Err(error) => warn!(node = %node.name_any(), %error, "untainting a node failed"),
            }
        }
    }
}
