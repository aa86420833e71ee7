//! The scheduling simulation, without I/O: where pending pods would go. First-fit decreasing
//! (largest pods first): each pod goes to the first existing node or already-planned NodeClaim
//! it fits, else to a new NodeClaim from the first NodePool (by weight) that can take it. A
//! planned NodeClaim keeps every instance type that still fits all its pods, cheapest first.
//!
//! Limits are kept by reservation: a planned NodeClaim reserves, per resource, the largest
//! capacity among the instance types a launch may pick (the 60 cheapest candidates), so no
//! choice CreateFleet makes can take a NodePool over its limits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Taint;

use super::instance_types::{InstanceType, is_well_known};
use super::pod::{PodShape, Term, TermKind, TopologyKey, Untolerated};
use super::requirements::{Requirement, Requirements};
use super::resources::{Limits, Resources, format_cpu, format_memory};
use crate::apis::labels::ZONE_LABEL;

/// How many instance types a launch offers CreateFleet.
pub const LAUNCH_CANDIDATES: usize = 60;

/// A NodePool as the simulation needs it.
#[derive(Clone, Debug, Default)]
pub struct NodePoolInput {
    pub name: String,
    pub weight: i32,
    /// The template's requirements, its labels (as `In [value]`) and the nodepool label.
    pub requirements: Requirements,
    pub taints: Vec<Taint>,
    pub limits: Limits,
    /// Capacity of the pool's existing nodes and NodeClaims.
    pub in_use: Resources,
    pub nodes_in_use: i64,
    /// DaemonSet pods every new node of this pool runs.
    pub daemon_overhead: Resources,
    /// Indices into the catalog this pool may launch.
    pub instance_types: Vec<usize>,
    /// Why the pool can launch nothing at all (its EC2NodeClass is not ready), if so.
    pub not_ready: Option<String>,
}

/// A node that exists or is being launched, with what is already requested on it.
#[derive(Clone, Debug, Default)]
pub struct ExistingNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub host_ports: Vec<(String, i32)>,
    /// Its pods count for topology, but nothing is planned onto it: a Node the kube-scheduler
    /// already weighed, or one this install does not manage.
    pub topology_only: bool,
}

/// A pod already on an existing node, counted for topology.
#[derive(Clone, Debug)]
pub struct BoundPod {
    pub node: usize,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub terms: Vec<Term>,
}

pub struct Problem<'a> {
    pub catalog: &'a [InstanceType],
    pub pools: &'a [NodePoolInput],
    pub existing: &'a [ExistingNode],
    pub bound: &'a [BoundPod],
    pub pods: &'a [PodShape],
}

/// A NodeClaim the simulation would create.
#[derive(Clone, Debug)]
pub struct NewClaim {
    pub pool: usize,
    pub requirements: Requirements,
    pub pods: Vec<usize>,
    /// The pods' requests plus the pool's DaemonSet overhead.
    pub requests: Resources,
    /// Catalog indices of every type that fits, cheapest first.
    pub instance_types: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub new_claims: Vec<NewClaim>,
    /// (pod, existing node) pairs.
    pub on_existing: Vec<(usize, usize)>,
    /// Pods that fit nowhere, with the reason.
    pub unplaced: Vec<(usize, Unplaced)>,
}

/// Why one NodePool cannot take a pod.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The pool can launch nothing: its EC2NodeClass is not ready.
    #[error("{0}")]
    NotReady(String),
    /// The pool's own requirements admit no instance type, whatever the pod.
    #[error("its requirements admit no instance type: {0}")]
    NoInstanceTypes(String),
    #[error(transparent)]
    Untolerated(#[from] Untolerated),
    /// The pod's node selector or affinity conflicts with the pool's requirements.
    #[error(transparent)]
    Requirements(#[from] Mismatch),
    #[error(transparent)]
    Topology(#[from] TopologyViolation),
    /// None of the pool's instance types satisfies the pod's requirements.
    #[error("no instance type of this NodePool satisfies {requirements}")]
    NoMatchingType { requirements: String },
    /// The pod (with the pool's DaemonSets) needs more than the largest type it could use.
    #[error(
        "the pod needs cpu={}, memory={} with DaemonSets; the largest instance type it could use allocates cpu={}, memory={}",
        format_cpu(.needed.cpu), format_memory(.needed.memory), format_cpu(.largest.cpu), format_memory(.largest.memory)
    )]
    TooLarge {
        needed: Resources,
        largest: Resources,
    },
    /// A limit of the pool, e.g. `cpu=4`.
    #[error("limit {0} reached")]
    Limit(String),
}

/// A topology term (spread, affinity, anti-affinity) that a placement would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyViolation {
    #[error("hostname spread")]
    HostnameSpread,
    #[error("hostname affinity")]
    HostnameAffinity,
    #[error("hostname anti-affinity")]
    HostnameAntiAffinity,
    #[error("another pod's anti-affinity")]
    OthersAntiAffinity,
    #[error("no zone satisfies the pod's topology")]
    NoZone,
}

/// Why a pod's node selector or required affinity does not fit a NodePool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The pod requires a label that no node of the pool will carry.
    #[error("label {key} ({wanted}) is not set on this NodePool's nodes")]
    LabelNotSet { key: String, wanted: String },
    #[error("requirement {key} {wanted} conflicts with {key} {offered}")]
    Conflict {
        key: String,
        wanted: String,
        offered: String,
    },
    #[error("no node affinity term matches")]
    NoTerm,
}

/// Why a pod fits nowhere: each NodePool's rejection, in the order they were tried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unplaced(pub Vec<(String, Rejection)>);

impl std::fmt::Display for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no NodePool");
        }
        for (index, (pool, rejection)) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "nodepool {pool}: {rejection}")?;
        }
        Ok(())
    }
}

pub fn solve(problem: &Problem) -> Plan {
    Solver::new(problem).run()
}

/// Why `pool`'s own requirements admit no instance type of `catalog`, if they admit none.
pub fn no_instance_types(pool: &NodePoolInput, catalog: &[InstanceType]) -> Option<String> {
    let admits_one = pool
        .instance_types
        .iter()
        .any(|&i| catalog[i].satisfies(&pool.requirements));
    (!admits_one).then(|| explain_no_instance_types(pool, catalog))
}

/// Why `pool`'s own requirements admit no instance type of `catalog`: the requirement that
/// admits none alone, else the first two that admit none together, else all of them.
pub fn explain_no_instance_types(pool: &NodePoolInput, catalog: &[InstanceType]) -> String {
    let offered: Vec<&InstanceType> = pool.instance_types.iter().map(|&i| &catalog[i]).collect();
    let single = |key: &str, requirement: &Requirement| {
        let mut only = Requirements::default();
        only.add(key, requirement.clone());
        only
    };
    let admits = |requirements: &Requirements| offered.iter().any(|it| it.satisfies(requirements));
    if !admits(&Requirements::default()) {
        return "no instance type is offered with capacity available".into();
    }
    let keys: Vec<(&String, &Requirement)> = pool.requirements.iter().collect();
    for (key, requirement) in &keys {
        if !admits(&single(key, requirement)) {
            return format!(
                "{key} {requirement} admits none of the {} instance types offered",
                offered.len()
            );
        }
    }
    for (index, (first, first_requirement)) in keys.iter().enumerate() {
        for (second, second_requirement) in &keys[index + 1..] {
            let mut both = single(first, first_requirement);
            both.add(second, (*second_requirement).clone());
            if !admits(&both) {
                return format!(
                    "{first} {first_requirement} and {second} {second_requirement} admit no instance type together"
                );
            }
        }
    }
    format!(
        "together {} admit no instance type",
        describe(&pool.requirements)
    )
}

/// Pod-counting state of one distinct term.
struct Group {
    term: Term,
    /// Matching pods per zone and per slot.
    zone_counts: HashMap<String, i64>,
    slot_counts: Vec<i64>,
    /// Pods that own this (anti-affinity) term, per zone and per slot, for symmetry.
    owner_zones: HashMap<String, i64>,
    owner_slots: Vec<i64>,
    total: i64,
}

enum SlotKind {
    Existing(usize),
    Claim(usize),
}

struct Slot {
    kind: SlotKind,
    requested: Resources,
    /// Existing: allocatable; claim: the per-resource maximum over candidates, a quick reject.
    room: Resources,
    zone: Option<String>,
    host_ports: Vec<(String, i32)>,
}

struct Claim {
    pool: usize,
    requirements: Requirements,
    pods: Vec<usize>,
    candidates: Vec<usize>,
    reserved: Resources,
}

/// What placing a pod on a slot would change.
struct Placement {
    requirements: Option<Requirements>,
    candidates: Option<Vec<usize>>,
    zone: Option<String>,
}

struct Solver<'a> {
    problem: &'a Problem<'a>,
    /// Per pool, the catalog indices it may launch that satisfy its requirements, cheapest first.
    pool_types: Vec<Vec<usize>>,
    pool_order: Vec<usize>,
    zones: BTreeSet<String>,
    groups: Vec<Group>,
    owned: Vec<Vec<usize>>,
    matched: Vec<Vec<usize>>,
    slots: Vec<Slot>,
    claims: Vec<Claim>,
    pool_reserved: Vec<Resources>,
    pool_claims: Vec<i64>,
    /// Per pool, the rejection every pod gets when its requirements admit no instance type.
    pool_rejections: Vec<Option<Rejection>>,
    existing_requirements: Vec<Requirements>,
    /// For the pod being placed, per zone-spread group that honours node affinity: its
    /// matching pods per zone, on the nodes the pod's node selector and affinity allow.
    allowed_zone_counts: HashMap<usize, HashMap<String, i64>>,
}

impl<'a> Solver<'a> {
    fn new(problem: &'a Problem<'a>) -> Self {
        let catalog = problem.catalog;
        let mut by_price: Vec<usize> = (0..catalog.len()).collect();
        by_price.sort_by(|&a, &b| {
            let price = |i: usize| catalog[i].min_price().unwrap_or(f64::INFINITY);
            price(a).total_cmp(&price(b)).then(a.cmp(&b))
        });
        let mut pool_order: Vec<usize> = (0..problem.pools.len()).collect();
        pool_order.sort_by(|&a, &b| {
            let (a, b) = (&problem.pools[a], &problem.pools[b]);
            b.weight.cmp(&a.weight).then(a.name.cmp(&b.name))
        });
        let mut zones: BTreeSet<String> = catalog
            .iter()
            .flat_map(|it| it.offerings.iter().map(|o| o.zone.clone()))
            .collect();
        zones.extend(
            problem
                .existing
                .iter()
                .filter(|n| !n.topology_only)
                .filter_map(|n| n.labels.get(ZONE_LABEL).cloned()),
        );

        let pool_types: Vec<Vec<usize>> = problem
            .pools
            .iter()
            .map(|pool| {
                let allowed: BTreeSet<usize> = pool.instance_types.iter().copied().collect();
                by_price
                    .iter()
                    .copied()
                    .filter(|i| allowed.contains(i) && catalog[*i].satisfies(&pool.requirements))
                    .collect()
            })
            .collect();
        let pool_rejections = problem
            .pools
            .iter()
            .zip(&pool_types)
            .map(|(pool, types)| {
                (types.is_empty() && pool.not_ready.is_none())
                    .then(|| Rejection::NoInstanceTypes(explain_no_instance_types(pool, catalog)))
            })
            .collect();
        let mut solver = Self {
            problem,
            pool_types,
            pool_order,
            zones,
            groups: Vec::new(),
            owned: Vec::new(),
            matched: Vec::new(),
            slots: Vec::new(),
            claims: Vec::new(),
            pool_reserved: vec![Resources::default(); problem.pools.len()],
            pool_claims: vec![0; problem.pools.len()],
            pool_rejections,
            existing_requirements: Vec::new(),
            allowed_zone_counts: HashMap::new(),
        };
        solver.index_terms();
        for (index, node) in problem.existing.iter().enumerate() {
            let mut requirements = Requirements::default();
            for (key, value) in &node.labels {
                requirements.add(key, Requirement::one_of([value.clone()]));
            }
            solver.existing_requirements.push(requirements);
            solver.add_slot(Slot {
                kind: SlotKind::Existing(index),
                requested: node.requested,
                room: node.allocatable,
                zone: node.labels.get(ZONE_LABEL).cloned(),
                host_ports: node.host_ports.clone(),
            });
        }
        for bound in problem.bound {
            let zone = solver.slots[bound.node].zone.clone();
            for group in solver.groups.iter_mut() {
                if group.term.namespace == bound.namespace
                    && group.term.selector.matches(&bound.labels)
                {
                    count(
                        &mut group.zone_counts,
                        &mut group.slot_counts,
                        &mut group.total,
                        zone.as_deref(),
                        bound.node,
                    );
                }
                if bound.terms.contains(&group.term) {
                    let mut ignored = 0;
                    count(
                        &mut group.owner_zones,
                        &mut group.owner_slots,
                        &mut ignored,
                        zone.as_deref(),
                        bound.node,
                    );
                }
            }
        }
        solver
    }

    /// One group per distinct term; each pod's own terms and the groups whose selector it matches.
    fn index_terms(&mut self) {
        let mut index: HashMap<&Term, usize> = HashMap::new();
        let terms = self
            .problem
            .pods
            .iter()
            .flat_map(|p| p.terms.iter())
            .chain(self.problem.bound.iter().flat_map(|b| b.terms.iter()));
        for term in terms {
            if !index.contains_key(term) {
                index.insert(term, self.groups.len());
                self.groups.push(Group {
                    term: term.clone(),
                    zone_counts: HashMap::new(),
                    slot_counts: Vec::new(),
                    owner_zones: HashMap::new(),
                    owner_slots: Vec::new(),
                    total: 0,
                });
            }
        }
        for pod in self.problem.pods {
            self.owned
                .push(pod.terms.iter().map(|t| index[t]).collect());
            self.matched.push(
                self.groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| {
                        g.term.namespace == pod.namespace && g.term.selector.matches(&pod.labels)
                    })
                    .map(|(i, _)| i)
                    .collect(),
            );
        }
    }

    /// Fills `allowed_zone_counts` for the pod's zone spreads that honour node affinity (the
    /// kube-scheduler's default `nodeAffinityPolicy: Honor`): pods on nodes the pod could not
    /// go to do not count.
    fn count_allowed_nodes(&mut self, pod: usize) {
        self.allowed_zone_counts.clear();
        let shape = &self.problem.pods[pod];
        if shape.requirements.iter().all(Requirements::is_empty) {
            return;
        }
        let honoring: Vec<usize> = self.owned[pod]
            .iter()
            .copied()
            .filter(|&g| {
                let term = &self.groups[g].term;
                matches!(term.kind, TermKind::Spread(_)) && term.key == TopologyKey::Zone
            })
            .collect();
        if honoring.is_empty() {
            return;
        }
        let allowed: Vec<(usize, &String)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index, slot.zone.as_ref()?)))
            .filter(|&(index, _)| self.node_affinity_allows(shape, index))
            .collect();
        for g in honoring {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for &(slot, zone) in &allowed {
                let matching = self.groups[g].slot_counts[slot];
                if matching > 0 {
                    *counts.entry(zone.clone()).or_default() += matching;
                }
            }
            self.allowed_zone_counts.insert(g, counts);
        }
    }

    /// Whether the node of a slot can satisfy the pod's node selector and required affinity.
    fn node_affinity_allows(&self, shape: &PodShape, slot: usize) -> bool {
        match self.slots[slot].kind {
            SlotKind::Existing(node) => labels_allow(shape, &self.problem.existing[node].labels),
            SlotKind::Claim(claim) => {
                let requirements = &self.claims[claim].requirements;
                shape.requirements.iter().any(|alternative| {
                    alternative
                        .iter()
                        .all(|(key, requirement)| match requirements.get(key) {
                            Some(claimed) => !claimed.intersect(requirement).is_unsatisfiable(),
                            None => is_well_known(key) || requirement.allows_absent(),
                        })
                })
            }
        }
    }

    fn add_slot(&mut self, slot: Slot) -> usize {
        for group in &mut self.groups {
            group.slot_counts.push(0);
            group.owner_slots.push(0);
        }
        self.slots.push(slot);
        self.slots.len() - 1
    }

    fn run(mut self) -> Plan {
        let pods = self.problem.pods;
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_by(|&a, &b| {
            let (a_req, b_req) = (&pods[a].requests, &pods[b].requests);
            b_req
                .cpu
                .cmp(&a_req.cpu)
                .then(b_req.memory.cmp(&a_req.memory))
                .then(a.cmp(&b))
        });
        let mut plan = Plan::default();
        let mut failed: Vec<(usize, Unplaced)> = Vec::new();
        let mut pending = order;
        // Pods with pod affinity may need pods placed after them; retry while that helps.
        loop {
            for &pod in &pending {
                if let Err(reason) = self.place(pod, &mut plan) {
                    failed.push((pod, reason));
                }
            }
            let progress = failed.len() < pending.len();
            if failed.is_empty() || !progress || !failed.iter().any(|(p, _)| self.has_affinity(*p))
            {
                break;
            }
            pending = failed.drain(..).map(|(p, _)| p).collect();
        }
        plan.unplaced = failed;
        plan.new_claims = self
            .claims
            .into_iter()
            .map(|claim| {
                let pool = &self.problem.pools[claim.pool];
                let requests = claim
                    .pods
                    .iter()
                    .fold(pool.daemon_overhead, |sum, &p| sum + pods[p].requests);
                NewClaim {
                    pool: claim.pool,
                    requirements: claim.requirements,
                    pods: claim.pods,
                    requests,
                    instance_types: claim.candidates,
                }
            })
            .collect();
        plan
    }

    fn has_affinity(&self, pod: usize) -> bool {
        self.owned[pod]
            .iter()
            .any(|&g| self.groups[g].term.kind == TermKind::Affinity)
    }

    fn place(&mut self, pod: usize, plan: &mut Plan) -> Result<(), Unplaced> {
        self.count_allowed_nodes(pod);
        for slot in 0..self.slots.len() {
            if let Some(placement) = self.try_slot(pod, slot) {
                self.commit(pod, slot, placement);
                if let SlotKind::Existing(node) = self.slots[slot].kind {
                    plan.on_existing.push((pod, node));
                }
                return Ok(());
            }
        }
        let mut reasons = Vec::new();
        for index in 0..self.pool_order.len() {
            let pool = self.pool_order[index];
            match self.new_claim(pod, pool) {
                Ok(()) => return Ok(()),
                Err(rejection) => reasons.push((self.problem.pools[pool].name.clone(), rejection)),
            }
        }
        Err(Unplaced(reasons))
    }

    /// Where the pod would go on this slot, if it fits there. Why it does not is never shown:
    /// the pod then tries the next slot, and only a new claim's rejection is reported.
    fn try_slot(&self, pod: usize, slot_index: usize) -> Option<Placement> {
        let shape = &self.problem.pods[pod];
        let slot = &self.slots[slot_index];
        if let SlotKind::Existing(node) = slot.kind
            && self.problem.existing[node].topology_only
        {
            return None;
        }
        let requested = slot.requested + shape.requests;
        let port_taken = shape
            .host_ports
            .iter()
            .any(|port| slot.host_ports.contains(port));
        if !requested.fits(&slot.room) || port_taken {
            return None;
        }
        match slot.kind {
            SlotKind::Existing(node) => {
                let existing = &self.problem.existing[node];
                shape.tolerates(&existing.taints).ok()?;
                if !labels_allow(shape, &existing.labels) {
                    return None;
                }
                let zone = self
                    .topology(pod, slot_index, &self.existing_requirements[node])
                    .ok()?;
                Some(Placement {
                    requirements: None,
                    candidates: None,
                    zone,
                })
            }
            SlotKind::Claim(claim_index) => {
                let claim = &self.claims[claim_index];
                let pool = &self.problem.pools[claim.pool];
                shape.tolerates(&pool.taints).ok()?;
                let alternatives: Vec<Option<Requirements>> =
                    if shape.requirements.iter().all(Requirements::is_empty) {
                        vec![None]
                    } else {
                        self.alternatives(&claim.requirements, shape)
                            .ok()?
                            .into_iter()
                            .map(Some)
                            .collect()
                    };
                alternatives.into_iter().find_map(|requirements| {
                    self.claim_placement(pod, slot_index, claim_index, requirements)
                })
            }
        }
    }

    /// Placing a pod on a planned claim under one of its requirement alternatives (`None`:
    /// the claim's requirements unchanged), if some candidate type still fits.
    fn claim_placement(
        &self,
        pod: usize,
        slot_index: usize,
        claim_index: usize,
        mut requirements: Option<Requirements>,
    ) -> Option<Placement> {
        let shape = &self.problem.pods[pod];
        let claim = &self.claims[claim_index];
        let zone = self
            .topology(
                pod,
                slot_index,
                requirements.as_ref().unwrap_or(&claim.requirements),
            )
            .ok()?;
        if let Some(zone) = &zone {
            let narrowed = requirements.get_or_insert_with(|| claim.requirements.clone());
            narrowed.add(ZONE_LABEL, Requirement::one_of([zone.clone()]));
        }
        // A claim's slot counts the pool's DaemonSet overhead from the start.
        let with_daemons = self.slots[slot_index].requested + shape.requests;
        let catalog = self.problem.catalog;
        let ceiling = self.limit_ceiling(claim.pool, claim.reserved);
        let candidates: Vec<usize> = claim
            .candidates
            .iter()
            .copied()
            .filter(|&i| {
                with_daemons.fits(&catalog[i].allocatable)
                    && ceiling.is_none_or(|c| catalog[i].capacity.fits(&c))
                    && requirements
                        .as_ref()
                        .is_none_or(|r| catalog[i].satisfies(r))
            })
            .collect();
        (!candidates.is_empty()).then_some(Placement {
            requirements,
            candidates: Some(candidates),
            zone,
        })
    }

    /// The claim requirements narrowed by one of the pod's alternatives. A label no launched
    /// node will carry (not well-known, not set by the pool) satisfies only requirements that
    /// allow it to be absent.
    fn alternatives(
        &self,
        base: &Requirements,
        shape: &PodShape,
    ) -> Result<Vec<Requirements>, Mismatch> {
        let mut first_error = None;
        let mut compatible = Vec::new();
        for alternative in &shape.requirements {
            let mut merged = base.clone();
            let mut error = None;
            for (key, requirement) in alternative.iter() {
                if base.get(key).is_none() && !is_well_known(key) {
                    if !requirement.allows_absent() {
                        error = Some(Mismatch::LabelNotSet {
                            key: key.clone(),
                            wanted: requirement.to_string(),
                        });
                        break;
                    }
                    continue;
                }
                merged.add(key, requirement.clone());
                if merged.get(key).is_some_and(Requirement::is_unsatisfiable) {
                    error = Some(Mismatch::Conflict {
                        key: key.clone(),
                        wanted: requirement.to_string(),
                        offered: base.get(key).map_or("Any".to_owned(), ToString::to_string),
                    });
                    break;
                }
            }
            match error {
                None => compatible.push(merged),
                Some(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if compatible.is_empty() {
            return Err(first_error.unwrap_or(Mismatch::NoTerm));
        }
        Ok(compatible)
    }

    /// Checks the pod's topology terms (and others' anti-affinity towards it) on a slot; for a
    /// slot whose zone is still open, the zone it must be narrowed to.
    fn topology(
        &self,
        pod: usize,
        slot: usize,
        requirements: &Requirements,
    ) -> Result<Option<String>, TopologyViolation> {
        let shape = &self.problem.pods[pod];
        let fixed_zone = self.slots.get(slot).and_then(|s| s.zone.clone());
        let mut options: Option<BTreeSet<String>> = None;
        let zone_options = |options: &mut Option<BTreeSet<String>>| -> BTreeSet<String> {
            options
                .get_or_insert_with(|| match &fixed_zone {
                    Some(zone) => BTreeSet::from([zone.clone()]),
                    None => self
                        .zones
                        .iter()
                        .filter(|z| requirements.allows(ZONE_LABEL, z))
                        .cloned()
                        .collect(),
                })
                .clone()
        };
        let slot_count = |counts: &Vec<i64>| counts.get(slot).copied().unwrap_or(0);
        let mut spread_preference: Option<&HashMap<String, i64>> = None;
        for &g in &self.owned[pod] {
            let group = &self.groups[g];
            let self_match = group.term.selector.matches(&shape.labels);
            // As the kube-scheduler: the pod counts towards its own spread only if it matches.
            let own = i64::from(self_match);
            match (group.term.kind, group.term.key) {
                (
                    TermKind::Spread(skew) | TermKind::SpreadOverAllNodes(skew),
                    TopologyKey::Hostname,
                ) => {
                    if slot_count(&group.slot_counts) + own > i64::from(skew) {
                        return Err(TopologyViolation::HostnameSpread);
                    }
                }
                (
                    TermKind::Spread(skew) | TermKind::SpreadOverAllNodes(skew),
                    TopologyKey::Zone,
                ) => {
                    let counts = self
                        .allowed_zone_counts
                        .get(&g)
                        .unwrap_or(&group.zone_counts);
                    let eligible: Vec<&String> = self
                        .zones
                        .iter()
                        .filter(|z| shape.requirements.iter().any(|r| r.allows(ZONE_LABEL, z)))
                        .collect();
                    let min = eligible
                        .iter()
                        .map(|z| counts.get(*z).copied().unwrap_or(0))
                        .min()
                        .unwrap_or(0);
                    let allowed: BTreeSet<String> = zone_options(&mut options)
                        .into_iter()
                        .filter(|z| {
                            counts.get(z).copied().unwrap_or(0) + own - min <= i64::from(skew)
                        })
                        .collect();
                    options = Some(allowed);
                    spread_preference = Some(counts);
                }
                (TermKind::Affinity, TopologyKey::Hostname) => {
                    if slot_count(&group.slot_counts) == 0 && !(group.total == 0 && self_match) {
                        return Err(TopologyViolation::HostnameAffinity);
                    }
                }
                (TermKind::Affinity, TopologyKey::Zone) => {
                    if !(group.total == 0 && self_match) {
                        let allowed: BTreeSet<String> = zone_options(&mut options)
                            .into_iter()
                            .filter(|z| group.zone_counts.get(z).copied().unwrap_or(0) > 0)
                            .collect();
                        options = Some(allowed);
                    } else {
                        zone_options(&mut options);
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Hostname) => {
                    if slot_count(&group.slot_counts) > 0 {
                        return Err(TopologyViolation::HostnameAntiAffinity);
                    }
                }
                (TermKind::AntiAffinity, TopologyKey::Zone) => {
                    let allowed: BTreeSet<String> = zone_options(&mut options)
                        .into_iter()
                        .filter(|z| group.zone_counts.get(z).copied().unwrap_or(0) == 0)
                        .collect();
                    options = Some(allowed);
                }
            }
        }
        for &g in &self.matched[pod] {
            let group = &self.groups[g];
            if group.term.kind != TermKind::AntiAffinity {
                continue;
            }
            match group.term.key {
                TopologyKey::Hostname => {
                    if slot_count(&group.owner_slots) > 0 {
                        return Err(TopologyViolation::OthersAntiAffinity);
                    }
                }
                TopologyKey::Zone => {
                    let allowed: BTreeSet<String> = zone_options(&mut options)
                        .into_iter()
                        .filter(|z| group.owner_zones.get(z).copied().unwrap_or(0) == 0)
                        .collect();
                    options = Some(allowed);
                }
            }
        }
        let Some(options) = options else {
            return Ok(None);
        };
        if options.is_empty() {
            return Err(TopologyViolation::NoZone);
        }
        if fixed_zone.is_some() {
            return Ok(None);
        }
        // Fill the emptiest zone of a spread first, as the kube-scheduler would.
        let zone = match spread_preference {
            Some(counts) => options
                .iter()
                .min_by_key(|z| counts.get(*z).copied().unwrap_or(0))
                .cloned(),
            None => options.into_iter().next(),
        };
        Ok(zone)
    }

    /// The largest capacity a claim of `pool` may have, given what the pool's other claims
    /// reserve; `None` without limits.
    fn limit_ceiling(&self, pool: usize, own_reservation: Resources) -> Option<Resources> {
        let input = &self.problem.pools[pool];
        let limits = input.limits;
        if limits.cpu.is_none() && limits.memory.is_none() && limits.pods.is_none() {
            return None;
        }
        let others = input.in_use + self.pool_reserved[pool] - own_reservation;
        Some(Resources {
            cpu: limits.cpu.map_or(i64::MAX, |l| l - others.cpu),
            memory: limits.memory.map_or(i64::MAX, |l| l - others.memory),
            pods: limits.pods.map_or(i64::MAX, |l| l - others.pods),
        })
    }

    fn new_claim(&mut self, pod: usize, pool_index: usize) -> Result<(), Rejection> {
        let shape = &self.problem.pods[pod];
        let pool = &self.problem.pools[pool_index];
        shape
            .tolerates(&pool.taints)
            .map_err(Rejection::Untolerated)?;
        let alternatives = self
            .alternatives(&pool.requirements, shape)
            .map_err(Rejection::Requirements)?;
        if let Some(reason) = &pool.not_ready {
            return Err(Rejection::NotReady(reason.clone()));
        }
        if let Some(rejection) = &self.pool_rejections[pool_index] {
            return Err(rejection.clone());
        }
        if let Some(nodes) = pool.limits.nodes
            && pool.nodes_in_use + self.pool_claims[pool_index] + 1 > nodes
        {
            return Err(Rejection::Limit(format!("nodes={nodes}")));
        }
        let mut first_error = None;
        for requirements in alternatives {
            match self.claim_for(pod, pool_index, requirements) {
                Ok((requirements, candidates, zone)) => {
                    self.open_claim(pod, pool_index, requirements, candidates, zone);
                    return Ok(());
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(Rejection::Requirements(Mismatch::NoTerm)))
    }

    /// A new claim of `pool` for the pod under one requirement alternative: its requirements,
    /// candidate types and zone.
    fn claim_for(
        &self,
        pod: usize,
        pool_index: usize,
        mut requirements: Requirements,
    ) -> Result<(Requirements, Vec<usize>, Option<String>), Rejection> {
        let shape = &self.problem.pods[pod];
        let pool = &self.problem.pools[pool_index];
        let zone = self
            .topology(pod, usize::MAX, &requirements)
            .map_err(Rejection::Topology)?;
        if let Some(zone) = &zone {
            requirements.add(ZONE_LABEL, Requirement::one_of([zone.clone()]));
        }
        // The pool's types already satisfy its own requirements; recheck only when narrowed.
        let narrowed = requirements != pool.requirements;
        let catalog = self.problem.catalog;
        let needed = shape.requests + pool.daemon_overhead;
        let matching: Vec<usize> = self.pool_types[pool_index]
            .iter()
            .copied()
            .filter(|&i| !narrowed || catalog[i].satisfies(&requirements))
            .collect();
        if matching.is_empty() {
            return Err(Rejection::NoMatchingType {
                requirements: describe(&requirements),
            });
        }
        let fitting: Vec<usize> = matching
            .iter()
            .copied()
            .filter(|&i| needed.fits(&catalog[i].allocatable))
            .collect();
        if fitting.is_empty() {
            let largest = matching.iter().fold(Resources::default(), |max, &i| {
                max.max(&catalog[i].allocatable)
            });
            return Err(Rejection::TooLarge { needed, largest });
        }
        let ceiling = self.limit_ceiling(pool_index, Resources::default());
        let candidates: Vec<usize> = fitting
            .iter()
            .copied()
            .filter(|&i| ceiling.is_none_or(|c| catalog[i].capacity.fits(&c)))
            .collect();
        if candidates.is_empty() {
            let reserved = pool.in_use + self.pool_reserved[pool_index];
            let nodes = pool.nodes_in_use + self.pool_claims[pool_index] + 1;
            // The pod alone may stay within the limits while the cheapest node for it does not.
            let which = pool
                .limits
                .exceeded(&(reserved + shape.requests), nodes)
                .or_else(|| {
                    pool.limits
                        .exceeded(&(reserved + catalog[fitting[0]].capacity), nodes)
                })
                .unwrap_or_else(|| "cpu/memory".into());
            return Err(Rejection::Limit(which));
        }
        Ok((requirements, candidates, zone))
    }

    fn open_claim(
        &mut self,
        pod: usize,
        pool_index: usize,
        requirements: Requirements,
        candidates: Vec<usize>,
        zone: Option<String>,
    ) {
        let pool = &self.problem.pools[pool_index];
        let claim_index = self.claims.len();
        let slot = self.add_slot(Slot {
            kind: SlotKind::Claim(claim_index),
            requested: pool.daemon_overhead,
            room: Resources::default(),
            zone: None,
            host_ports: Vec::new(),
        });
        self.claims.push(Claim {
            pool: pool_index,
            requirements,
            pods: Vec::new(),
            candidates: Vec::new(),
            reserved: Resources::default(),
        });
        self.pool_claims[pool_index] += 1;
        self.commit(
            pod,
            slot,
            Placement {
                requirements: None,
                candidates: Some(candidates),
                zone,
            },
        );
    }

    fn commit(&mut self, pod: usize, slot_index: usize, placement: Placement) {
        let shape = &self.problem.pods[pod];
        let catalog = self.problem.catalog;
        let slot = &mut self.slots[slot_index];
        slot.requested += shape.requests;
        slot.host_ports.extend(shape.host_ports.iter().cloned());
        if let Some(zone) = &placement.zone {
            slot.zone = Some(zone.clone());
        }
        if let SlotKind::Claim(claim_index) = slot.kind {
            let claim = &mut self.claims[claim_index];
            claim.pods.push(pod);
            if let Some(requirements) = placement.requirements {
                claim.requirements = requirements;
            }
            if let Some(zone) = &placement.zone {
                claim
                    .requirements
                    .add(ZONE_LABEL, Requirement::one_of([zone.clone()]));
            }
            // A zone narrowed to one by the pods' node selectors is as fixed as a chosen one.
            if slot.zone.is_none()
                && let Some([zone]) = claim
                    .requirements
                    .get(ZONE_LABEL)
                    .and_then(Requirement::finite_values)
                    .map(|zones| zones.iter().collect::<Vec<_>>())
                    .as_deref()
            {
                slot.zone = Some((*zone).clone());
            }
            if let Some(candidates) = placement.candidates {
                slot.room = candidates.iter().fold(Resources::default(), |max, &i| {
                    max.max(&catalog[i].allocatable)
                });
                claim.candidates = candidates;
                let reserved = claim
                    .candidates
                    .iter()
                    .take(LAUNCH_CANDIDATES)
                    .fold(Resources::default(), |max, &i| {
                        max.max(&catalog[i].capacity)
                    });
                self.pool_reserved[claim.pool] =
                    self.pool_reserved[claim.pool] - claim.reserved + reserved;
                claim.reserved = reserved;
            }
        }
        let zone = slot.zone.clone();
        for &g in &self.matched[pod] {
            let group = &mut self.groups[g];
            count(
                &mut group.zone_counts,
                &mut group.slot_counts,
                &mut group.total,
                zone.as_deref(),
                slot_index,
            );
        }
        for &g in &self.owned[pod] {
            let group = &mut self.groups[g];
            let mut ignored = 0;
            count(
                &mut group.owner_zones,
                &mut group.owner_slots,
                &mut ignored,
                zone.as_deref(),
                slot_index,
            );
        }
    }
}

/// Whether a node with these labels satisfies one of the pod's node-affinity alternatives.
fn labels_allow(shape: &PodShape, labels: &BTreeMap<String, String>) -> bool {
    shape.requirements.iter().any(|alternative| {
        alternative
            .iter()
            .all(|(key, requirement)| match labels.get(key) {
                Some(value) => requirement.allows(value),
                None => requirement.allows_absent(),
            })
    })
}

fn count(
    zones: &mut HashMap<String, i64>,
    slots: &mut [i64],
    total: &mut i64,
    zone: Option<&str>,
    slot: usize,
) {
    if let Some(zone) = zone {
        *zones.entry(zone.to_owned()).or_default() += 1;
    }
    slots[slot] += 1;
    *total += 1;
}

fn describe(requirements: &Requirements) -> String {
    if requirements.is_empty() {
        return "{}".into();
    }
    let parts: Vec<String> = requirements
        .iter()
        .map(|(k, r)| format!("{k} {r}"))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::apis::labels::{ARCH_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};
    use crate::apis::node_pool::RequirementOperator;
    use crate::scheduling::fake;
    use crate::scheduling::instance_types::{ON_DEMAND, Offering, Shape};
    use crate::scheduling::pod::Selector;

    const GIB: i64 = 1 << 30;

    /// m5.large- and m5.xlarge-like types in three zones.
    fn small_catalog() -> Vec<InstanceType> {
        let offerings = |price: f64| {
            fake::ZONES
                .iter()
                .map(|zone| Offering {
                    zone: (*zone).into(),
                    capacity_type: ON_DEMAND.into(),
                    price: Some(price),
                    available: true,
                })
                .collect()
        };
        vec![
            InstanceType::new(
                "m5.large",
                "amd64",
                Shape {
                    vcpus: 2,
                    memory_mib: 8192,
                    max_pods: 29,
                },
                offerings(0.096),
            ),
            InstanceType::new(
                "m5.xlarge",
                "amd64",
                Shape {
                    vcpus: 4,
                    memory_mib: 16384,
                    max_pods: 58,
                },
                offerings(0.192),
            ),
            InstanceType::new(
                "m6g.xlarge",
                "arm64",
                Shape {
                    vcpus: 4,
                    memory_mib: 16384,
                    max_pods: 58,
                },
                offerings(0.154),
            ),
        ]
    }

    fn pool(name: &str, catalog: &[InstanceType]) -> NodePoolInput {
        NodePoolInput {
            name: name.into(),
            instance_types: (0..catalog.len()).collect(),
            ..NodePoolInput::default()
        }
    }

    fn pod(name: &str, cpu: i64, memory: i64) -> PodShape {
        PodShape {
            name: format!("default/{name}"),
            namespace: "default".into(),
            labels: BTreeMap::new(),
            requests: Resources {
                cpu,
                memory,
                pods: 1,
            },
            requirements: vec![Requirements::default()],
            tolerations: Vec::new(),
            terms: Vec::new(),
            host_ports: Vec::new(),
        }
    }

    fn with_term(mut pod: PodShape, kind: TermKind, key: TopologyKey, app: &str) -> PodShape {
        let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
        pod.labels = labels.clone();
        pod.terms.push(Term {
            kind,
            key,
            namespace: "default".into(),
            selector: Selector::with_labels(labels),
        });
        pod
    }

    fn solve_for(
        catalog: &[InstanceType],
        pools: &[NodePoolInput],
        existing: &[ExistingNode],
        pods: &[PodShape],
    ) -> Plan {
        solve(&Problem {
            catalog,
            pools,
            existing,
            bound: &[],
            pods,
        })
    }

    fn names(catalog: &[InstanceType], claim: &NewClaim) -> Vec<String> {
        claim
            .instance_types
            .iter()
            .map(|&i| catalog[i].name.clone())
            .collect()
    }

    #[test]
    fn packs_pods_onto_the_cheapest_types_that_fit() {
        let catalog = small_catalog();
        let pods: Vec<_> = (0..3)
            .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
            .collect();
        let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
        assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
        assert_eq!(plan.new_claims.len(), 1);
        let claim = &plan.new_claims[0];
        assert_eq!(claim.pods.len(), 3);
        assert_eq!(
            names(&catalog, claim),
            ["m6g.xlarge", "m5.xlarge"],
            "a 2-vCPU type cannot hold 3 vCPU"
        );
    }

    #[test]
    fn node_selectors_and_affinity_narrow_the_claim() {
        let catalog = small_catalog();
        let mut arm = pod("arm", 1000, GIB);
        arm.requirements[0].add(ARCH_LABEL, Requirement::one_of(["amd64"]));
        let mut zoned = pod("zoned", 1000, GIB);
        zoned.requirements = vec![
            {
                let mut r = Requirements::default();
                r.add(ZONE_LABEL, Requirement::one_of(["nowhere"]));
                r
            },
            {
                let mut r = Requirements::default();
                r.add(ZONE_LABEL, Requirement::one_of(["test-zone-2"]));
                r
            },
        ];
        let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &[arm, zoned]);
        assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
        for claim in &plan.new_claims {
            for &i in &claim.instance_types {
                assert!(catalog[i].satisfies(&claim.requirements));
            }
        }
        let zoned_claim = plan
            .new_claims
            .iter()
            .find(|c| c.pods.contains(&1))
            .unwrap();
        assert!(zoned_claim.requirements.allows(ZONE_LABEL, "test-zone-2"));
        assert!(!zoned_claim.requirements.allows(ZONE_LABEL, "test-zone-1"));
        assert!(
            zoned_claim.requirements.allows(ARCH_LABEL, "amd64"),
            "the second pod joined the first"
        );
    }

    #[test]
    fn unknown_labels_and_untolerated_taints_leave_pods_pending_with_a_reason() {
        let catalog = small_catalog();
        let mut tainted = pool("gpu", &catalog);
        tainted.taints = vec![Taint {
            key: "nvidia.com/gpu".into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let mut team = pod("team", 100, GIB);
        team.requirements[0].add(
            "team",
            Requirement::new(RequirementOperator::In, &["a".into()]),
        );
        let plan = solve_for(&catalog, &[tainted], &[], &[pod("plain", 100, GIB), team]);
        assert_eq!(plan.unplaced.len(), 2);
        for (_, reason) in &plan.unplaced {
            assert!(
                reason
                    .to_string()
                    .contains("taint nvidia.com/gpu=true:NoSchedule is not tolerated"),
                "{reason}"
            );
        }
        let mut labelled = pool("default", &catalog);
        labelled
            .requirements
            .add("team", Requirement::one_of(["b"]));
        let mut team = pod("team", 100, GIB);
        team.requirements[0].add("team", Requirement::one_of(["a"]));
        let plan = solve_for(&catalog, &[labelled], &[], &[team]);
        assert!(
            plan.unplaced[0]
                .1
                .to_string()
                .contains("team In [a] conflicts with team In [b]"),
            "{:?}",
            plan.unplaced
        );
    }

    #[test]
    fn limits_stop_new_claims_and_say_which() {
        let catalog = small_catalog();
        let mut limited = pool("default", &catalog);
        limited.instance_types = vec![0];
        limited.limits = Limits {
            cpu: Some(4000),
            memory: Some(8 * GIB),
            ..Limits::default()
        };
        let pods: Vec<_> = (0..3)
            .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
            .collect();
        let plan = solve_for(&catalog, &[limited], &[], &pods);
        // An m5.large holds one such pod (1930m allocatable); one node takes all 8Gi.
        assert_eq!(plan.new_claims.len(), 1);
        assert_eq!(plan.unplaced.len(), 2);
        assert!(
            plan.unplaced[0]
                .1
                .to_string()
                .contains("limit memory=8Gi reached"),
            "{:?}",
            plan.unplaced
        );
    }

    #[test]
    fn a_limit_smaller_than_the_cheapest_node_is_named() {
        let catalog = small_catalog();
        let mut limited = pool("default", &catalog);
        limited.limits = Limits {
            cpu: Some(1000),
            ..Limits::default()
        };
        let plan = solve_for(&catalog, &[limited], &[], &[pod("p", 500, GIB)]);
        assert_eq!(
            plan.unplaced[0].1.to_string(),
            "nodepool default: limit cpu=1 reached"
        );
    }

    #[test]
    fn weights_order_the_node_pools() {
        let catalog = small_catalog();
        let mut heavy = pool("z-heavy", &catalog);
        heavy.weight = 50;
        let plan = solve_for(
            &catalog,
            &[pool("a-light", &catalog), heavy],
            &[],
            &[pod("p", 100, GIB)],
        );
        assert_eq!(plan.new_claims[0].pool, 1);
    }

    #[test]
    fn in_flight_capacity_is_used_before_new_claims() {
        let catalog = small_catalog();
        let node = ExistingNode {
            name: "in-flight".into(),
            labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
            allocatable: Resources {
                cpu: 3920,
                memory: 14 * GIB,
                pods: 58,
            },
            ..ExistingNode::default()
        };
        let pods: Vec<_> = (0..4)
            .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
            .collect();
        let plan = solve_for(&catalog, &[pool("default", &catalog)], &[node], &pods);
        assert_eq!(plan.on_existing.len(), 3);
        assert_eq!(plan.new_claims.len(), 1);
    }

    #[test]
    fn topology_spreads_zones_and_separates_hosts() {
        let catalog = small_catalog();
        let spread: Vec<_> = (0..6)
            .map(|i| {
                with_term(
                    pod(&format!("s{i}"), 100, GIB),
                    TermKind::Spread(1),
                    TopologyKey::Zone,
                    "web",
                )
            })
            .collect();
        let plan_spread = solve_for(&catalog, &[pool("default", &catalog)], &[], &spread);
        let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
        for claim in &plan_spread.new_claims {
            let zone = claim
                .requirements
                .get(ZONE_LABEL)
                .unwrap()
                .finite_values()
                .unwrap()
                .iter()
                .next()
                .unwrap()
                .clone();
            *per_zone.entry(zone).or_default() += claim.pods.len();
        }
        assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [2, 2, 2]);

        let apart: Vec<_> = (0..3)
            .map(|i| {
                with_term(
                    pod(&format!("a{i}"), 100, GIB),
                    TermKind::AntiAffinity,
                    TopologyKey::Hostname,
                    "db",
                )
            })
            .collect();
        assert_eq!(
            solve_for(&catalog, &[pool("default", &catalog)], &[], &apart)
                .new_claims
                .len(),
            3
        );

        let together: Vec<_> = (0..4)
            .map(|i| {
                with_term(
                    pod(&format!("t{i}"), 1000, GIB),
                    TermKind::Affinity,
                    TopologyKey::Zone,
                    "cache",
                )
            })
            .collect();
        let plan_together = solve_for(&catalog, &[pool("default", &catalog)], &[], &together);
        let zones: BTreeSet<_> = plan_together
            .new_claims
            .iter()
            .map(|c| c.requirements.get(ZONE_LABEL).unwrap().to_string())
            .collect();
        assert_eq!(zones.len(), 1, "{zones:?}");

        let mut ports = vec![pod("h1", 100, GIB), pod("h2", 100, GIB)];
        for p in &mut ports {
            p.host_ports = vec![("TCP".into(), 8080)];
        }
        assert_eq!(
            solve_for(&catalog, &[pool("default", &catalog)], &[], &ports)
                .new_claims
                .len(),
            2
        );
    }

    #[test]
    fn pods_already_on_in_flight_capacity_count_for_topology() {
        let catalog = small_catalog();
        let node = ExistingNode {
            name: "in-flight".into(),
            labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
            allocatable: Resources {
                cpu: 3920,
                memory: 14 * GIB,
                pods: 58,
            },
            ..ExistingNode::default()
        };
        let web = with_term(
            pod("web-1", 100, GIB),
            TermKind::Spread(1),
            TopologyKey::Zone,
            "web",
        );
        let bound = [BoundPod {
            node: 0,
            namespace: "default".into(),
            labels: web.labels.clone(),
            terms: web.terms.clone(),
        }];
        let pools = [pool("default", &catalog)];
        let plan = solve(&Problem {
            catalog: &catalog,
            pools: &pools,
            existing: &[node],
            bound: &bound,
            pods: std::slice::from_ref(&web),
        });
        assert!(
            plan.on_existing.is_empty(),
            "the spread already has a pod in test-zone-1"
        );
        assert_eq!(plan.new_claims.len(), 1);
        assert!(
            !plan.new_claims[0]
                .requirements
                .allows(ZONE_LABEL, "test-zone-1")
        );
    }

    #[test]
    fn running_nodes_count_for_topology_but_take_no_pods() {
        let catalog = small_catalog();
        let running = ExistingNode {
            name: "running".into(),
            labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
            allocatable: Resources {
                cpu: 3920,
                memory: 14 * GIB,
                pods: 58,
            },
            topology_only: true,
            ..ExistingNode::default()
        };
        let web = |name: &str| {
            with_term(
                pod(name, 100, GIB),
                TermKind::Spread(1),
                TopologyKey::Zone,
                "web",
            )
        };
        let on_node = web("web-0");
        let bound = [BoundPod {
            node: 0,
            namespace: "default".into(),
            labels: on_node.labels.clone(),
            terms: on_node.terms.clone(),
        }];
        let pools = [pool("default", &catalog)];
        let pending = [web("web-1"), web("web-2")];
        let plan = solve(&Problem {
            catalog: &catalog,
            pools: &pools,
            existing: &[running],
            bound: &bound,
            pods: &pending,
        });
        assert!(plan.on_existing.is_empty(), "{:?}", plan.on_existing);
        assert_eq!(plan.new_claims.len(), 2);
        for claim in &plan.new_claims {
            assert!(
                !claim.requirements.allows(ZONE_LABEL, "test-zone-1"),
                "test-zone-1 already has the running pod"
            );
        }
    }

    fn zone_of(claim: &NewClaim) -> String {
        let zones = claim.requirements.get(ZONE_LABEL).unwrap().finite_values();
        let zones: Vec<&String> = zones.unwrap().iter().collect();
        assert_eq!(zones.len(), 1, "{zones:?}");
        zones[0].clone()
    }

    #[test]
    fn a_pool_whose_requirements_admit_no_type_names_the_conflict() {
        let catalog = small_catalog();
        let mut conflicting = pool("graviton", &catalog);
        conflicting
            .requirements
            .add(ARCH_LABEL, Requirement::one_of(["amd64"]));
        conflicting
            .requirements
            .add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m6g.xlarge"]));
        let plan = solve_for(&catalog, &[conflicting], &[], &[pod("p", 100, GIB)]);
        let Unplaced(reasons) = &plan.unplaced[0].1;
        assert_eq!(
            reasons[0].1,
            Rejection::NoInstanceTypes(
                "kubernetes.io/arch In [amd64] and node.kubernetes.io/instance-type In [m6g.xlarge] admit no instance type together".into()
            )
        );
        let mut unknown = pool("unknown", &catalog);
        unknown
            .requirements
            .add(INSTANCE_TYPE_LABEL, Requirement::one_of(["t4g.nano"]));
        assert_eq!(
            explain_no_instance_types(&unknown, &catalog),
            "node.kubernetes.io/instance-type In [t4g.nano] admits none of the 3 instance types offered"
        );
    }

    #[test]
    fn a_pod_larger_than_every_type_and_one_matching_no_type_get_their_own_reasons() {
        let catalog = small_catalog();
        let pools = [pool("default", &catalog)];
        let mut arm_large = pod("arm-large", 100, GIB);
        arm_large.requirements[0].add(ARCH_LABEL, Requirement::one_of(["arm64"]));
        arm_large.requirements[0].add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m5.large"]));
        let plan = solve_for(
            &catalog,
            &pools,
            &[],
            &[pod("huge", 64_000, GIB), arm_large],
        );
        let reason = |index: usize| {
            let (_, Unplaced(reasons)) = plan.unplaced.iter().find(|(p, _)| *p == index).unwrap();
            reasons[0].1.clone()
        };
        assert!(
            matches!(reason(0), Rejection::TooLarge { needed, largest } if needed.cpu == 64_000 && largest.cpu == 3920),
            "{:?}",
            reason(0)
        );
        assert!(
            reason(0)
                .to_string()
                .starts_with("the pod needs cpu=64, memory=1Gi"),
            "{}",
            reason(0)
        );
        assert!(
            matches!(reason(1), Rejection::NoMatchingType { .. }),
            "{:?}",
            reason(1)
        );
    }

    #[test]
    fn a_pool_whose_node_class_is_not_ready_says_so() {
        let catalog = small_catalog();
        let mut waiting = pool("default", &catalog);
        waiting.not_ready = Some("EC2NodeClass default is not ready: no subnet matches".into());
        let plan = solve_for(&catalog, &[waiting], &[], &[pod("p", 100, GIB)]);
        assert_eq!(
            plan.unplaced[0].1.to_string(),
            "nodepool default: EC2NodeClass default is not ready: no subnet matches"
        );
    }

    #[test]
    fn a_pod_outside_its_own_spread_selector_does_not_count_itself() {
        let catalog = small_catalog();
        let node = |name: &str, zone: &str, topology_only: bool| ExistingNode {
            name: name.into(),
            labels: BTreeMap::from([(ZONE_LABEL.to_owned(), zone.to_owned())]),
            allocatable: Resources {
                cpu: 3920,
                memory: 14 * GIB,
                pods: 58,
            },
            topology_only,
            ..ExistingNode::default()
        };
        let existing = [
            node("running", "test-zone-1", true),
            node("in-flight", "test-zone-1", false),
        ];
        let web = with_term(
            pod("web-0", 100, GIB),
            TermKind::Spread(1),
            TopologyKey::Zone,
            "web",
        );
        let bound = [BoundPod {
            node: 0,
            namespace: "default".into(),
            labels: web.labels.clone(),
            terms: Vec::new(),
        }];
        // Sidecars spread by the web pods' selector but are not web pods themselves.
        let sidecar = |name: &str| {
            let mut sidecar = web.clone();
            sidecar.name = format!("default/{name}");
            sidecar.labels = BTreeMap::from([("app".to_owned(), "sidecar".to_owned())]);
            sidecar
        };
        let pools = [pool("default", &catalog)];
        let pending = [sidecar("sidecar-0"), sidecar("sidecar-1")];
        let plan = solve(&Problem {
            catalog: &catalog,
            pools: &pools,
            existing: &existing,
            bound: &bound,
            pods: &pending,
        });
        assert!(plan.new_claims.is_empty(), "{:?}", plan.new_claims);
        assert_eq!(plan.on_existing, [(0, 1), (1, 1)]);
    }

    #[test]
    fn a_zone_from_a_node_selector_counts_for_the_spread() {
        let catalog = small_catalog();
        let mut pinned = pod("pinned", 1000, GIB);
        pinned.labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        pinned.requirements[0].add(ZONE_LABEL, Requirement::one_of(["test-zone-1"]));
        let spread = with_term(
            pod("spread", 100, GIB),
            TermKind::Spread(1),
            TopologyKey::Zone,
            "web",
        );
        let pools = [pool("default", &catalog)];
        let plan = solve_for(&catalog, &pools, &[], &[pinned, spread]);
        assert_eq!(plan.new_claims.len(), 2, "{:?}", plan.new_claims);
        let spread_claim = plan.new_claims.iter().find(|c| c.pods == [1]).unwrap();
        assert_ne!(
            zone_of(spread_claim),
            "test-zone-1",
            "the pinned web pod already stands in test-zone-1"
        );
    }

    #[test]
    fn spread_counts_only_nodes_the_pod_may_use_unless_told_to_ignore_affinity() {
        let catalog = small_catalog();
        let other_pool = |name: &str| ExistingNode {
            name: name.into(),
            labels: BTreeMap::from([
                (ZONE_LABEL.to_owned(), "test-zone-1".to_owned()),
                (NODEPOOL_LABEL.to_owned(), "other".to_owned()),
            ]),
            topology_only: true,
            ..ExistingNode::default()
        };
        let existing = [other_pool("other-0"), other_pool("other-1")];
        let web = |name: &str, kind: TermKind| {
            let mut web = with_term(pod(name, 100, GIB), kind, TopologyKey::Zone, "web");
            web.terms.push(Term {
                kind: TermKind::AntiAffinity,
                key: TopologyKey::Hostname,
                namespace: "default".into(),
                selector: Selector::with_labels(web.labels.clone()),
            });
            web.requirements[0].add(NODEPOOL_LABEL, Requirement::one_of(["mine"]));
            web
        };
        let bound: Vec<BoundPod> = (0..2)
            .map(|node| BoundPod {
                node,
                namespace: "default".into(),
                labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                terms: Vec::new(),
            })
            .collect();
        let mut mine = pool("mine", &catalog);
        mine.requirements
            .add(NODEPOOL_LABEL, Requirement::one_of(["mine"]));
        let zones = |kind: TermKind| {
            let pending: Vec<PodShape> = (0..3).map(|i| web(&format!("web-{i}"), kind)).collect();
            let plan = solve(&Problem {
                catalog: &catalog,
                pools: std::slice::from_ref(&mine),
                existing: &existing,
                bound: &bound,
                pods: &pending,
            });
            let mut zones: Vec<String> = plan.new_claims.iter().map(zone_of).collect();
            zones.sort();
            zones
        };
        assert_eq!(
            zones(TermKind::Spread(1)),
            ["test-zone-1", "test-zone-2", "test-zone-3"],
            "the other pool's pods are on nodes these pods cannot use"
        );
        assert!(
            !zones(TermKind::SpreadOverAllNodes(1)).contains(&"test-zone-1".to_owned()),
            "nodeAffinityPolicy: Ignore counts them"
        );
    }

    #[test]
    fn the_benchmark_workload_places_every_pod() {
        let catalog = fake::catalog(400);
        let pods = fake::benchmark_pods(1000, 42);
        let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
        assert!(
            plan.unplaced.is_empty(),
            "{:?}",
            &plan.unplaced[..plan.unplaced.len().min(3)]
        );
        let anti = plan
            .new_claims
            .iter()
            .filter(|c| c.pods.iter().any(|&p| pods[p].labels.contains_key("app")))
            .count();
        assert_eq!(anti, 200, "each anti-affinity pod has its own node");
    }

    fn arbitrary_pod() -> impl Strategy<Value = PodShape> {
        (
            0usize..8,
            prop::sample::select(vec![100i64, 250, 500, 1000, 1500, 3000]),
            prop::sample::select(vec![128i64, 512, 1024, 3072, 8192]),
            prop::option::of(prop::sample::select(vec!["amd64", "arm64"])),
            any::<bool>(),
            prop::option::of(0usize..3),
        )
            .prop_map(|(index, cpu, memory_mib, arch, tolerant, family)| {
                let mut pod = pod(&format!("p{index}"), cpu, memory_mib << 20);
                if let Some(arch) = arch {
                    pod.requirements[0].add(ARCH_LABEL, Requirement::one_of([arch]));
                }
                if tolerant {
                    pod.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }];
                }
                match family {
                    Some(0) => with_term(pod, TermKind::Spread(1), TopologyKey::Zone, "spread"),
                    Some(1) => {
                        with_term(pod, TermKind::AntiAffinity, TopologyKey::Hostname, "apart")
                    }
                    Some(_) => with_term(pod, TermKind::Spread(1), TopologyKey::Hostname, "hosts"),
                    None => pod,
                }
            })
    }

    fn arbitrary_pool(catalog_size: usize) -> impl Strategy<Value = NodePoolInput> {
        (
            prop::option::of(1i64..16),
            prop::option::of(1i64..64),
            any::<bool>(),
            0i32..3,
            prop::option::of(1i64..6),
        )
            .prop_map(
                move |(cpu, memory_gib, tainted, weight, nodes)| NodePoolInput {
                    name: format!("pool-{weight}-{tainted}"),
                    weight,
                    taints: if tainted {
                        vec![Taint {
                            key: "dedicated".into(),
                            value: None,
                            effect: "NoSchedule".into(),
                            time_added: None,
                        }]
                    } else {
                        Vec::new()
                    },
                    limits: Limits {
                        cpu: cpu.map(|c| c * 1000),
                        memory: memory_gib.map(|g| g * GIB),
                        pods: None,
                        nodes,
                    },
                    daemon_overhead: Resources {
                        cpu: 100,
                        memory: 128 << 20,
                        pods: 1,
                    },
                    instance_types: (0..catalog_size).collect(),
                    ..NodePoolInput::default()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Every placed pod fits its claim, no limit is exceeded whatever type a launch picks,
        /// and every pod is placed once or has a reason.
        #[test]
        fn plans_are_sound(
            pods in prop::collection::vec(arbitrary_pod(), 1..40),
            pools in prop::collection::vec(arbitrary_pool(12), 1..3),
        ) {
            let catalog = fake::catalog(12);
            let plan = solve_for(&catalog, &pools, &[], &pods);
            let mut seen = vec![0; pods.len()];
            for claim in &plan.new_claims {
                let pool = &pools[claim.pool];
                prop_assert!(!claim.instance_types.is_empty());
                let requests = claim.pods.iter().fold(pool.daemon_overhead, |sum, &p| sum + pods[p].requests);
                prop_assert_eq!(requests, claim.requests);
                for &i in &claim.instance_types {
                    prop_assert!(requests.fits(&catalog[i].allocatable), "{} overfull", catalog[i].name);
                    prop_assert!(catalog[i].satisfies(&claim.requirements));
                }
                let mut apart = 0;
                let mut hosts = 0;
                for &p in &claim.pods {
                    seen[p] += 1;
                    prop_assert!(pods[p].tolerates(&pool.taints).is_ok());
                    for &i in &claim.instance_types {
                        let labels = &catalog[i].labels;
                        prop_assert!(labels.iter().all(|(k, v)| pods[p].requirements[0].allows(k, v)));
                    }
                    apart += usize::from(pods[p].labels.get("app").is_some_and(|a| a == "apart"));
                    hosts += usize::from(pods[p].labels.get("app").is_some_and(|a| a == "hosts"));
                }
                prop_assert!(apart <= 1, "anti-affinity pods share a node");
                prop_assert!(hosts <= 1, "hostname spread with maxSkew 1 doubled up on a new node");
            }
            for (pool_index, pool) in pools.iter().enumerate() {
                let claims: Vec<_> = plan.new_claims.iter().filter(|c| c.pool == pool_index).collect();
                let worst = claims.iter().fold(Resources::default(), |sum, claim| {
                    sum + claim.instance_types.iter().take(LAUNCH_CANDIDATES).fold(Resources::default(), |max, &i| max.max(&catalog[i].capacity))
                });
                prop_assert_eq!(pool.limits.exceeded(&Resources { pods: 0, ..worst }, claims.len() as i64), None);
            }
            for (pod, reason) in &plan.unplaced {
                seen[*pod] += 1;
                prop_assert!(!reason.to_string().is_empty());
            }
            prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        }
    }
}
