//! The scheduling simulation, without I/O: where pending pods would go. Pods go largest first
//! (by their larger share of the batch's CPU or memory). Each goes to the first existing node
//! or planned NodeClaim that holds it without growing (a claim's cheapest type still fits
//! it), else to the one of the first few slots that could grow to hold it that would then
//! leave the least money idle, else to a new
//! NodeClaim from the first NodePool (by weight) that can take it. A planned NodeClaim keeps
//! every instance type that still fits all its pods, cheapest first. A pod first holds its
//! preferences (preferred affinities, ScheduleAnyway spreads) as if they were required, and
//! gives them up one at a time while it fits nowhere.
//!
//! Limits are kept by reservation: a planned NodeClaim reserves, per resource, the largest
//! capacity among the instance types its NodeClaim keeps (the 600 cheapest candidates), any of
//! which a launch may fall back to, so no choice CreateFleet makes can take a NodePool over its
//! limits.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Taint;

use super::instance_types::{
    InstanceType, ON_DEMAND, SPOT, UnmetMinValues, is_well_known, unmet_min_values,
};
use super::pod::{NamespaceLabels, PodShape, Preference, Term, TermKind, TopologyKey, Untolerated};
use super::requirements::{Requirement, Requirements};
use super::resources::{Limits, Resources};
use crate::apis::labels::{CAPACITY_TYPE_LABEL, ZONE_LABEL};

mod cost;
mod explain;
mod topology;

pub use cost::{fractional_lower_bound, hourly_cost};
pub use explain::{explain_no_instance_types, no_instance_types};
use topology::Group;

/// How many instance types a NodeClaim keeps, cheapest first: room for a launch to fall back
/// when the cheapest run out of capacity.
pub const NODE_CLAIM_CANDIDATES: usize = 600;

/// How many of them a launch offers CreateFleet.
pub const LAUNCH_CANDIDATES: usize = 60;

/// How many slots that can take a pod by growing are weighed against each other: enough to
/// pair a CPU-heavy pod with a node short of CPU, few enough that a pod's cost does not grow
/// with the batch.
const GROWTH_CHOICES: usize = 16;

/// The `limit` cheapest of `candidates` (catalog indices, cheapest first), unless that would
/// break a `minValues`; then, for each such requirement, the cheapest type of each value until
/// it has its count, and the cheapest others up to the limit.
pub fn cheapest_candidates<'a>(
    candidates: &'a [usize],
    requirements: &Requirements,
    catalog: &[InstanceType],
    limit: usize,
) -> Cow<'a, [usize]> {
    let cheapest = &candidates[..candidates.len().min(limit)];
    if unmet_min_values(requirements, cheapest, catalog).is_none() {
        return Cow::Borrowed(cheapest);
    }
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    for (key, requirement) in requirements.iter() {
        let Some(min_values) = requirement.min_values() else {
            continue;
        };
        let mut values: BTreeSet<&str> = BTreeSet::new();
        for (position, &i) in candidates.iter().enumerate() {
            if values.len() >= min_values {
                break;
            }
            let before = values.len();
            catalog[i].add_allowed_values(key, requirement, &mut values);
            if values.len() > before {
                kept.insert(position);
            }
        }
    }
    for position in 0..candidates.len() {
        if kept.len() >= limit {
            break;
        }
        kept.insert(position);
    }
    Cow::Owned(
        kept.into_iter()
            .map(|position| candidates[position])
            .collect(),
    )
}

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
    /// What the kubelet reports as capacity under the pool's EC2NodeClass (its max pods and
    /// storage), by catalog index; a type not here has the catalog's.
    pub capacity: HashMap<usize, Resources>,
    /// What the pool's EC2NodeClass `kubelet` settings and storage leave allocatable, by
    /// catalog index; a type not here has the catalog's (EKS's default reservations).
    pub allocatable: HashMap<usize, Resources>,
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
    /// For pod affinity terms with a `namespaceSelector`.
    pub namespaces: &'a NamespaceLabels,
}

/// A NodeClaim the simulation would create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewClaim {
    pub pool: usize,
    pub requirements: Requirements,
    pub pods: Vec<usize>,
    /// The pods' requests plus the pool's DaemonSet overhead.
    pub requests: Resources,
    /// Catalog indices of every type that fits, cheapest first.
    pub instance_types: Vec<usize>,
}

#[derive(Clone, Debug, Default, PartialEq)]
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
        "the pod needs {} with DaemonSets; the largest instance type it could use allocates {}",
        .needed.describe_for(.needed), .largest.describe_for(.needed)
    )]
    TooLarge {
        needed: Box<Resources>,
        largest: Box<Resources>,
    },
    /// A limit of the pool, e.g. `cpu=4`.
    #[error("limit {0} reached")]
    Limit(String),
    /// The types that fit the pod have too few values of a `minValues` requirement's key.
    #[error(
        "minValues: {key} needs {min_values} values, the instance types that fit the pod have {found}",
        key = .0.key, min_values = .0.min_values, found = .0.found
    )]
    MinValues(UnmetMinValues),
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
    /// Pools whose taints the pod does not tolerate come last: the pod was never meant for
    /// them, and an Event's note is cut short, so the reasons that matter lead.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no NodePool");
        }
        let untolerated = |rejection: &Rejection| matches!(rejection, Rejection::Untolerated(_));
        let ordered = self
            .0
            .iter()
            .filter(|(_, r)| !untolerated(r))
            .chain(self.0.iter().filter(|(_, r)| untolerated(r)));
        for (index, (pool, rejection)) in ordered.enumerate() {
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

/// Why a slot refused a pod: for good (it refuses every pod of the same class from now on,
/// since what decided it only ever grows or narrows), or only as things stand now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    ForGood,
    ForNow,
}

impl Refusal {
    /// For good only if every part refused for good.
    fn and(self, other: Refusal) -> Refusal {
        if self == Refusal::ForGood && other == Refusal::ForGood {
            Refusal::ForGood
        } else {
            Refusal::ForNow
        }
    }
}

/// Pods that every slot treats alike: same namespace, labels, requests, ports, tolerations,
/// node requirements and held terms. Slots are scanned first to last, and a slot that refused
/// one of them for good refuses the rest, so each class remembers the prefix of slots it need
/// not scan again. Without it each pod would rescan every planned claim, and the time per pod
/// would grow with the batch.
struct PlacementClass {
    /// A pod of the class, for the fields that never change.
    pod: usize,
    owned: Vec<usize>,
    requirements: Vec<Requirements>,
    /// Whether a topology refusal is for good: no held term depends on counts that can open a
    /// slot up later (zone spread, pod affinity).
    topology_settles: bool,
    /// Every slot below this refuses the class for good.
    refused_below: usize,
    /// Every slot below this refuses the class for good or cannot hold it on its cheapest
    /// type, unless it is in `reopened`.
    snug_refused_below: usize,
    /// Slots below `snug_refused_below` whose cheapest type changed since they refused.
    reopened: BTreeSet<usize>,
    /// How much of `Solver::cheapest_type_changes` the class has read.
    changes_seen: usize,
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
    /// Existing: allocatable; claim: what its cheapest candidate allocates.
    snug: Resources,
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
    /// A new claim's candidates, or a planned claim's narrowed ones where a `minValues` had
    /// to be checked against all of them; otherwise `commit` narrows them.
    candidates: Option<Vec<usize>>,
    /// A claim's cheapest candidate once the pod is on it.
    cheapest: Option<usize>,
    zone: Option<String>,
}

/// What the kubelet of a node of catalog type `i` launched by `pool` reports as capacity.
fn capacity(problem: &Problem, pool: usize, i: usize) -> Resources {
    problem.pools[pool]
        .capacity
        .get(&i)
        .copied()
        .unwrap_or(problem.catalog[i].capacity)
}

/// What a node of catalog type `i` launched by `pool` leaves for pods.
fn allocatable(problem: &Problem, pool: usize, i: usize) -> Resources {
    problem.pools[pool]
        .allocatable
        .get(&i)
        .copied()
        .unwrap_or(problem.catalog[i].allocatable)
}

struct Solver<'a> {
    problem: &'a Problem<'a>,
    /// Per pool, the catalog indices it may launch that satisfy its requirements, cheapest first.
    pool_types: Vec<Vec<usize>>,
    pool_order: Vec<usize>,
    zones: BTreeSet<String>,
    /// Per pool, the zones it can launch in: its types' offerings its requirements allow.
    pool_zones: Vec<BTreeSet<String>>,
    /// The zones of every Node and in-flight NodeClaim, managed or not.
    node_zones: BTreeSet<String>,
    /// For the pod being placed, the zones its zone spreads count: those of the pools whose
    /// taints it tolerates and of the nodes, that its node requirements allow.
    spread_zones: Vec<String>,
    groups: Vec<Group>,
    /// The group of each required term, and apart from them of each preferred one: the same
    /// term binds differently when it is only preferred.
    group_of: HashMap<Term, usize>,
    preferred_group_of: HashMap<Term, usize>,
    /// Per pod, the groups of the terms it holds now: its required ones and the preferred ones
    /// it has not given up.
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
    /// Per pod, how many of its preferences it has given up.
    relaxed: Vec<usize>,
    /// Per pod holding a node-affinity preference, each required alternative narrowed by it.
    preferred_requirements: Vec<Option<Vec<Requirements>>>,
    classes: Vec<PlacementClass>,
    /// Class indices by the hash of their hashable fields.
    class_index: HashMap<u64, Vec<usize>>,
    /// The claim slots whose cheapest type changed, in order: each may hold again what it
    /// could not.
    cheapest_type_changes: Vec<usize>,
    /// Whether classes skip the slots that refused them for good (off only to test that
    /// skipping changes no plan).
    skip_refused: bool,
}

impl<'a> Solver<'a> {
    fn allocatable(&self, pool: usize, i: usize) -> Resources {
        allocatable(self.problem, pool, i)
    }

    fn new(problem: &'a Problem<'a>) -> Self {
        let catalog = problem.catalog;
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

        // Each pool's types cheapest first at the offerings its requirements allow: an
        // on-demand pool does not rank its types by their spot prices.
        let pool_types: Vec<Vec<usize>> = problem
            .pools
            .iter()
            .map(|pool| {
                let mut types: Vec<(usize, f64)> = pool
                    .instance_types
                    .iter()
                    .copied()
                    .collect::<BTreeSet<usize>>()
                    .into_iter()
                    .filter(|&i| catalog[i].satisfies(&pool.requirements))
                    .map(|i| {
                        let price = catalog[i]
                            .cheapest_offering(&pool.requirements)
                            .and_then(|offering| offering.price);
                        (i, price.unwrap_or(f64::INFINITY))
                    })
                    .collect();
                types.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                types.into_iter().map(|(i, _)| i).collect()
            })
            .collect();
        let pool_zones = problem
            .pools
            .iter()
            .zip(&pool_types)
            .map(|(pool, types)| {
                if pool.not_ready.is_some() {
                    return BTreeSet::new();
                }
                types
                    .iter()
                    .flat_map(|&i| &catalog[i].offerings)
                    .filter(|o| {
                        pool.requirements.allows(ZONE_LABEL, &o.zone)
                            && pool
                                .requirements
                                .allows(CAPACITY_TYPE_LABEL, &o.capacity_type)
                    })
                    .map(|o| o.zone.clone())
                    .collect()
            })
            .collect();
        let node_zones = problem
            .existing
            .iter()
            .filter_map(|n| n.labels.get(ZONE_LABEL).cloned())
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
            pool_zones,
            node_zones,
            spread_zones: Vec::new(),
            groups: Vec::new(),
            group_of: HashMap::new(),
            preferred_group_of: HashMap::new(),
            owned: Vec::new(),
            matched: Vec::new(),
            slots: Vec::new(),
            claims: Vec::new(),
            pool_reserved: vec![Resources::default(); problem.pools.len()],
            pool_claims: vec![0; problem.pools.len()],
            pool_rejections,
            existing_requirements: Vec::new(),
            allowed_zone_counts: HashMap::new(),
            relaxed: vec![0; problem.pods.len()],
            preferred_requirements: vec![None; problem.pods.len()],
            classes: Vec::new(),
            class_index: HashMap::new(),
            cheapest_type_changes: Vec::new(),
            skip_refused: true,
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
                snug: node.allocatable,
                zone: node.labels.get(ZONE_LABEL).cloned(),
                host_ports: node.host_ports.clone(),
            });
        }
        for bound in problem.bound {
            let zone = solver.slots[bound.node].zone.clone();
            for group in solver.groups.iter_mut() {
                if group
                    .term
                    .namespaces
                    .includes(&bound.namespace, problem.namespaces)
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
                if !group.preferred && bound.terms.contains(&group.term) {
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
        let total = pods
            .iter()
            .fold(Resources::default(), |sum, pod| sum + pod.requests);
        // Largest first by each pod's larger share of the batch's CPU or memory: CPU-heavy
        // and memory-heavy pods of like size then arrive together and fill a node's two
        // dimensions alike, where CPU order alone would fill early nodes on CPU and late
        // ones on memory.
        let share = |pod: usize| {
            let requests = &pods[pod].requests;
            let of = |amount: i64, total: i64| amount as f64 / total.max(1) as f64;
            of(requests.cpu, total.cpu).max(of(requests.memory, total.memory))
        };
        let mut order: Vec<usize> = (0..pods.len()).collect();
        order.sort_by(|&a, &b| {
            let (a_req, b_req) = (&pods[a].requests, &pods[b].requests);
            share(b)
                .total_cmp(&share(a))
                .then(b_req.cpu.cmp(&a_req.cpu))
                .then(b_req.memory.cmp(&a_req.memory))
                .then(a.cmp(&b))
        });
        let mut plan = Plan::default();
        let mut failed: Vec<(usize, Unplaced)> = Vec::new();
        let mut pending = order;
        // Pods with pod affinity may need pods placed after them; retry while that helps.
        loop {
            for &pod in &pending {
                if let Err(reason) = self.place_relaxing(pod, &mut plan) {
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

    /// The node requirements the pod is placed under: its required alternatives, narrowed by
    /// the node-affinity preference it holds, if any.
    fn requirements(&self, pod: usize) -> &[Requirements] {
        self.preferred_requirements[pod]
            .as_deref()
            .unwrap_or(&self.problem.pods[pod].requirements)
    }

    /// Gives up the pod's next preference; false when it holds none.
    fn relax(&mut self, pod: usize) -> bool {
        if self.relaxed[pod] >= self.problem.pods[pod].preferences.len() {
            return false;
        }
        self.relaxed[pod] += 1;
        self.hold_preferences(pod);
        true
    }

    /// Sets the pod's terms and node requirements to its required ones plus the preferences
    /// it has not given up.
    fn hold_preferences(&mut self, pod: usize) {
        let shape = &self.problem.pods[pod];
        let held = &shape.preferences[self.relaxed[pod]..];
        let mut owned: Vec<usize> = shape.terms.iter().map(|t| self.group_of[t]).collect();
        owned.extend(held.iter().filter_map(|preference| match preference {
            Preference::Term(term) => Some(self.preferred_group_of[term]),
            Preference::Node(_) => None,
        }));
        self.owned[pod] = owned;
        let node_preference = held.iter().find_map(|preference| match preference {
            Preference::Node(requirements) => Some(requirements),
            Preference::Term(_) => None,
        });
        self.preferred_requirements[pod] = node_preference.map(|preference| {
            shape
                .requirements
                .iter()
                .map(|alternative| {
                    let mut narrowed = alternative.clone();
                    for (key, requirement) in preference.iter() {
                        narrowed.add(key, requirement.clone());
                    }
                    narrowed
                })
                .collect()
        });
    }

    fn has_affinity(&self, pod: usize) -> bool {
        self.owned[pod]
            .iter()
            .any(|&g| self.groups[g].term.kind == TermKind::Affinity)
    }

    /// Places the pod, giving up its preferences one at a time, in its place in the queue, as
    /// Karpenter does; a pod that fits nowhere even without them takes them back for a later
    /// round.
    fn place_relaxing(&mut self, pod: usize, plan: &mut Plan) -> Result<(), Unplaced> {
        loop {
            match self.place(pod, plan) {
                Ok(()) => return Ok(()),
                Err(reason) => {
                    if !self.relax(pod) {
                        if self.relaxed[pod] > 0 {
                            self.relaxed[pod] = 0;
                            self.hold_preferences(pod);
                        }
                        return Err(reason);
                    }
                }
            }
        }
    }

    fn place(&mut self, pod: usize, plan: &mut Plan) -> Result<(), Unplaced> {
        self.prepare_topology(pod);
        let class = self.class_of(pod);
        let found = match self.snug_slot(pod, class) {
            Some(found) => Some(found),
            None => self.growth_slot(pod, class),
        };
        if let Some((slot, placement)) = found {
            self.commit(pod, slot, placement);
            if let SlotKind::Existing(node) = self.slots[slot].kind {
                plan.on_existing.push((pod, node));
            }
            return Ok(());
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

    /// The first slot the pod fits without making its node dearer: an existing node with
    /// room, or a planned claim whose cheapest type still holds it. Small pods then fill what
    /// larger ones left over before any claim grows.
    fn snug_slot(&mut self, pod: usize, class: usize) -> Option<(usize, Placement)> {
        let below = self.classes[class].snug_refused_below;
        let seen = self.classes[class].changes_seen;
        let reopened: Vec<usize> = self.cheapest_type_changes[seen..]
            .iter()
            .copied()
            .filter(|&slot| slot < below)
            .collect();
        let entry = &mut self.classes[class];
        entry.reopened.extend(reopened);
        entry.changes_seen = self.cheapest_type_changes.len();
        let reopened: Vec<usize> = entry.reopened.iter().copied().collect();
        for slot in reopened {
            match self.try_snug(pod, slot, class) {
                Ok(placement) => return Some((slot, placement)),
                Err(Refusal::ForGood) => {
                    self.classes[class].reopened.remove(&slot);
                }
                Err(Refusal::ForNow) => {}
            }
        }
        let mut all_for_good = true;
        for slot in below..self.slots.len() {
            match self.try_snug(pod, slot, class) {
                Ok(placement) => return Some((slot, placement)),
                Err(Refusal::ForGood) if all_for_good && self.skip_refused => {
                    self.classes[class].snug_refused_below = slot + 1;
                }
                Err(_) => all_for_good = false,
            }
        }
        None
    }

    /// Where the pod goes when no slot holds it without growing: of the first
    /// `GROWTH_CHOICES` slots that can take it, the one whose cheapest type would then leave
    /// the least money idle. First fit would grow the earliest claim until one of its
    /// resources ran out, and leave the other idle.
    fn growth_slot(&mut self, pod: usize, class: usize) -> Option<(usize, Placement)> {
        let mut all_for_good = true;
        let mut best: Option<(f64, usize, Placement)> = None;
        let mut choices = 0;
        for slot in self.classes[class].refused_below..self.slots.len() {
            match self.try_slot(pod, slot, class) {
                Ok(placement) => {
                    // The refused prefix ends at the first slot that takes the pod.
                    all_for_good = false;
                    let idle = self.idle_cost_after(pod, slot, &placement);
                    if best.as_ref().is_none_or(|(least, _, _)| idle < *least) {
                        best = Some((idle, slot, placement));
                    }
                    choices += 1;
                    if choices == GROWTH_CHOICES {
                        break;
                    }
                }
                Err(Refusal::ForGood) if all_for_good && self.skip_refused => {
                    self.classes[class].refused_below = slot + 1;
                }
                Err(_) => all_for_good = false,
            }
        }
        best.map(|(_, slot, placement)| (slot, placement))
    }

    /// $/hour the slot's cheapest type would leave idle with the pod on it: its price times
    /// the mean unused share of its CPU and memory. An existing node costs nothing more.
    fn idle_cost_after(&self, pod: usize, slot_index: usize, placement: &Placement) -> f64 {
        let slot = &self.slots[slot_index];
        let (SlotKind::Claim(claim), Some(cheapest)) = (&slot.kind, placement.cheapest) else {
            return 0.0;
        };
        let allocatable = allocatable(self.problem, self.claims[*claim].pool, cheapest);
        let used = slot.requested + self.problem.pods[pod].requests;
        let unused = |total: i64, used: i64| {
            if total > 0 {
                (total - used) as f64 / total as f64
            } else {
                0.0
            }
        };
        let price = self.problem.catalog[cheapest].min_price().unwrap_or(0.0);
        price * (unused(allocatable.cpu, used.cpu) + unused(allocatable.memory, used.memory)) / 2.0
    }

    /// `try_slot`, but only where the slot's cheapest type still holds the pod. Not fitting
    /// that type counts as for good: only a change of the slot's cheapest type, which
    /// `cheapest_type_changes` records, lifts it.
    fn try_snug(&self, pod: usize, slot_index: usize, class: usize) -> Result<Placement, Refusal> {
        let slot = &self.slots[slot_index];
        if !(slot.requested + self.problem.pods[pod].requests).fits(&slot.snug) {
            return Err(Refusal::ForGood);
        }
        let placement = self.try_slot(pod, slot_index, class)?;
        match (&slot.kind, placement.cheapest) {
            // Narrowed off its cheapest type (by the pod's requirements or a zone).
            (SlotKind::Claim(claim), Some(cheapest))
                if Some(&cheapest) != self.claims[*claim].candidates.first() =>
            {
                Err(Refusal::ForNow)
            }
            _ => Ok(placement),
        }
    }

    /// Where the pod would go on this slot, if it fits there. Why it does not is never shown:
    /// the pod then tries the next slot, and only a new claim's rejection is reported.
    fn try_slot(&self, pod: usize, slot_index: usize, class: usize) -> Result<Placement, Refusal> {
        let shape = &self.problem.pods[pod];
        let slot = &self.slots[slot_index];
        if let SlotKind::Existing(node) = slot.kind
            && self.problem.existing[node].topology_only
        {
            return Err(Refusal::ForGood);
        }
        // A slot's requests only grow and its room only shrinks.
        let requested = slot.requested + shape.requests;
        let port_taken = shape
            .host_ports
            .iter()
            .any(|port| slot.host_ports.contains(port));
        if !requested.fits(&slot.room) || port_taken {
            return Err(Refusal::ForGood);
        }
        let requirements = self.requirements(pod);
        let topology_refusal = if self.classes[class].topology_settles {
            Refusal::ForGood
        } else {
            Refusal::ForNow
        };
        match slot.kind {
            SlotKind::Existing(node) => {
                let existing = &self.problem.existing[node];
                shape
                    .tolerates(&existing.taints)
                    .map_err(|_| Refusal::ForGood)?;
                if !labels_allow(requirements, &existing.labels) {
                    return Err(Refusal::ForGood);
                }
                let zone = self
                    .topology(pod, slot_index, &self.existing_requirements[node])
                    .map_err(|_| topology_refusal)?;
                Ok(Placement {
                    requirements: None,
                    candidates: None,
                    cheapest: None,
                    zone,
                })
            }
            SlotKind::Claim(claim_index) => {
                let claim = &self.claims[claim_index];
                let pool = &self.problem.pools[claim.pool];
                shape
                    .tolerates(&pool.taints)
                    .map_err(|_| Refusal::ForGood)?;
                // A pod whose selector the claim already meets narrows nothing.
                let implied = requirements.iter().any(|alternative| {
                    alternative.iter().all(|(key, wanted)| {
                        claim
                            .requirements
                            .get(key)
                            .is_some_and(|claimed| claimed.is_within(wanted))
                    })
                });
                // A claim's requirements only narrow, and never gain a label its launched
                // node would not carry, so a mismatch stays one.
                let alternatives: Vec<Option<Requirements>> = if implied {
                    vec![None]
                } else {
                    // An alternative that narrows nothing needs no recheck of the candidates.
                    self.alternatives(&claim.requirements, requirements)
                        .map_err(|_| Refusal::ForGood)?
                        .into_iter()
                        .map(|merged| (merged != claim.requirements).then_some(merged))
                        .collect()
                };
                let mut refusal = Refusal::ForGood;
                for requirements in alternatives {
                    match self.claim_placement(
                        pod,
                        slot_index,
                        claim_index,
                        requirements,
                        topology_refusal,
                    ) {
                        Ok(placement) => return Ok(placement),
                        Err(other) => refusal = refusal.and(other),
                    }
                }
                Err(refusal)
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
        topology_refusal: Refusal,
    ) -> Result<Placement, Refusal> {
        let claim = &self.claims[claim_index];
        let zone = self
            .topology(
                pod,
                slot_index,
                requirements.as_ref().unwrap_or(&claim.requirements),
            )
            .map_err(|_| topology_refusal)?;
        if let Some(zone) = &zone {
            let narrowed = requirements.get_or_insert_with(|| claim.requirements.clone());
            narrowed.add(ZONE_LABEL, Requirement::one_of([zone.clone()]));
        }
        let catalog = self.problem.catalog;
        let narrowed = requirements.as_ref().unwrap_or(&claim.requirements);
        // Candidates only narrow, but the limit ceiling rises again when another claim of the
        // pool narrows and reserves less, and the zone topology picks may differ next time.
        let refusal = if self.limit_ceiling(claim.pool, claim.reserved).is_some() || zone.is_some()
        {
            Refusal::ForNow
        } else {
            Refusal::ForGood
        };
        if narrowed.iter().any(|(_, r)| r.min_values().is_some()) {
            let candidates: Vec<usize> = self
                .still_fitting(pod, slot_index, claim_index, requirements.as_ref())
                .collect();
            if candidates.is_empty() || unmet_min_values(narrowed, &candidates, catalog).is_some() {
                return Err(refusal);
            }
            return Ok(Placement {
                requirements,
                cheapest: candidates.first().copied(),
                candidates: Some(candidates),
                zone,
            });
        }
        // The rest of the candidates are narrowed only where the pod is placed.
        let Some(cheapest) = self
            .still_fitting(pod, slot_index, claim_index, requirements.as_ref())
            .next()
        else {
            return Err(refusal);
        };
        Ok(Placement {
            requirements,
            candidates: None,
            cheapest: Some(cheapest),
            zone,
        })
    }

    /// The claim's candidates (cheapest first) that would still hold its pods with this one,
    /// within the pool's limits and the narrowed requirements.
    fn still_fitting<'s>(
        &'s self,
        pod: usize,
        slot_index: usize,
        claim_index: usize,
        requirements: Option<&'s Requirements>,
    ) -> impl Iterator<Item = usize> + 's {
        let claim = &self.claims[claim_index];
        // A claim's slot counts the pool's DaemonSet overhead from the start.
        let with_daemons = self.slots[slot_index].requested + self.problem.pods[pod].requests;
        let ceiling = self.limit_ceiling(claim.pool, claim.reserved);
        let catalog = self.problem.catalog;
        let pool = claim.pool;
        claim.candidates.iter().copied().filter(move |&i| {
            with_daemons.fits(&self.allocatable(pool, i))
                && ceiling.is_none_or(|c| capacity(self.problem, pool, i).fits(&c))
                && requirements.is_none_or(|r| catalog[i].satisfies(r))
        })
    }

    /// The class of the pod as it is held now (its preferences given up so far included).
    fn class_of(&mut self, pod: usize) -> usize {
        let shape = &self.problem.pods[pod];
        let owned = &self.owned[pod];
        let requirements = self.requirements(pod);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            &shape.namespace,
            &shape.labels,
            &shape.requests,
            &shape.host_ports,
            owned,
        )
            .hash(&mut hasher);
        let hash = hasher.finish();
        let pods = self.problem.pods;
        let same = |class: &PlacementClass| {
            let other = &pods[class.pod];
            class.owned == *owned
                && class.requirements == requirements
                && other.namespace == shape.namespace
                && other.labels == shape.labels
                && other.requests == shape.requests
                && other.host_ports == shape.host_ports
                && other.tolerations == shape.tolerations
                && other.node_affinity == shape.node_affinity
        };
        if let Some(&class) = self
            .class_index
            .get(&hash)
            .and_then(|classes| classes.iter().find(|&&c| same(&self.classes[c])))
        {
            return class;
        }
        let topology_settles = owned.iter().all(|&g| {
            let term = &self.groups[g].term;
            match term.kind {
                TermKind::AntiAffinity => true,
                TermKind::Spread(_) => term.key == TopologyKey::Hostname,
                TermKind::Affinity => false,
            }
        });
        let class = PlacementClass {
            pod,
            owned: owned.clone(),
            requirements: requirements.to_vec(),
            topology_settles,
            refused_below: 0,
            snug_refused_below: 0,
            reopened: BTreeSet::new(),
            changes_seen: self.cheapest_type_changes.len(),
        };
        self.classes.push(class);
        let index = self.classes.len() - 1;
        self.class_index.entry(hash).or_default().push(index);
        index
    }

    /// The claim requirements narrowed by one of the pod's alternatives. A label no launched
    /// node will carry (not well-known, not set by the pool) satisfies only requirements that
    /// allow it to be absent.
    fn alternatives(
        &self,
        base: &Requirements,
        pod_requirements: &[Requirements],
    ) -> Result<Vec<Requirements>, Mismatch> {
        let mut first_error = None;
        let mut compatible = Vec::new();
        for alternative in pod_requirements {
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

    /// The largest capacity a claim of `pool` may have, given what the pool's other claims
    /// reserve; `None` without limits.
    fn limit_ceiling(&self, pool: usize, own_reservation: Resources) -> Option<Resources> {
        let input = &self.problem.pools[pool];
        let limits = input.limits;
        if !limits.limits_resources() {
            return None;
        }
        let others = input.in_use + self.pool_reserved[pool] - own_reservation;
        Some(limits.room(&others))
    }

    fn new_claim(&mut self, pod: usize, pool_index: usize) -> Result<(), Rejection> {
        let shape = &self.problem.pods[pod];
        let pool = &self.problem.pools[pool_index];
        shape
            .tolerates(&pool.taints)
            .map_err(Rejection::Untolerated)?;
        let alternatives = self
            .alternatives(&pool.requirements, self.requirements(pod))
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
            .filter(|&i| needed.fits(&self.allocatable(pool_index, i)))
            .collect();
        if fitting.is_empty() {
            let largest = matching.iter().fold(Resources::default(), |max, &i| {
                max.max(&self.allocatable(pool_index, i))
            });
            return Err(Rejection::TooLarge {
                needed: Box::new(needed),
                largest: Box::new(largest),
            });
        }
        let ceiling = self.limit_ceiling(pool_index, Resources::default());
        let candidates: Vec<usize> = fitting
            .iter()
            .copied()
            .filter(|&i| ceiling.is_none_or(|c| capacity(self.problem, pool_index, i).fits(&c)))
            .collect();
        if candidates.is_empty() {
            let reserved = pool.in_use + self.pool_reserved[pool_index];
            let nodes = pool.nodes_in_use + self.pool_claims[pool_index] + 1;
            // The pod alone may stay within the limits while the cheapest node for it does not.
            let which = pool
                .limits
                .exceeded(&(reserved + shape.requests), nodes)
                .or_else(|| {
                    pool.limits.exceeded(
                        &(reserved + capacity(self.problem, pool_index, fitting[0])),
                        nodes,
                    )
                })
                .unwrap_or_else(|| "cpu/memory".into());
            return Err(Rejection::Limit(which));
        }
        if let Some(unmet) = unmet_min_values(&requirements, &candidates, catalog) {
            return Err(Rejection::MinValues(unmet));
        }
        let mut candidates = candidates;
        if capacity_types(&requirements) != capacity_types(&pool.requirements) {
            rank_by_price(catalog, &mut candidates, &requirements);
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
            snug: Resources::default(),
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
                cheapest: candidates.first().copied(),
                candidates: Some(candidates),
                zone,
            },
        );
    }

    fn commit(&mut self, pod: usize, slot_index: usize, mut placement: Placement) {
        if placement.candidates.is_none()
            && let SlotKind::Claim(claim_index) = self.slots[slot_index].kind
        {
            placement.candidates = Some(
                self.still_fitting(
                    pod,
                    slot_index,
                    claim_index,
                    placement.requirements.as_ref(),
                )
                .collect(),
            );
        }
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
            let mut capacity_types_narrowed = false;
            if let Some(requirements) = placement.requirements {
                capacity_types_narrowed =
                    capacity_types(&requirements) != capacity_types(&claim.requirements);
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
            if let Some(mut candidates) = placement.candidates {
                if capacity_types_narrowed {
                    rank_by_price(catalog, &mut candidates, &claim.requirements);
                }
                slot.room = candidates.iter().fold(Resources::default(), |max, &i| {
                    max.max(&allocatable(self.problem, claim.pool, i))
                });
                let snug = candidates
                    .first()
                    .map(|&i| allocatable(self.problem, claim.pool, i))
                    .unwrap_or_default();
                if snug != slot.snug {
                    slot.snug = snug;
                    self.cheapest_type_changes.push(slot_index);
                }
                claim.candidates = candidates;
                let reserved = cheapest_candidates(
                    &claim.candidates,
                    &claim.requirements,
                    catalog,
                    NODE_CLAIM_CANDIDATES,
                )
                .iter()
                .copied()
                .fold(Resources::default(), |max, i| {
                    max.max(&capacity(self.problem, claim.pool, i))
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

/// Which of on-demand and spot `requirements` allow.
fn capacity_types(requirements: &Requirements) -> [bool; 2] {
    [ON_DEMAND, SPOT].map(|capacity_type| requirements.allows(CAPACITY_TYPE_LABEL, capacity_type))
}

/// Orders a claim's candidates by their cheapest offering under its own requirements. Its
/// pool ranks them at every capacity type the pool allows; once a pod narrows the claim to
/// fewer, that order would keep the types cheapest at prices the claim cannot launch at.
fn rank_by_price(catalog: &[InstanceType], candidates: &mut [usize], requirements: &Requirements) {
    let price = |i: usize| {
        catalog[i]
            .cheapest_offering(requirements)
            .and_then(|offering| offering.price)
            .unwrap_or(f64::INFINITY)
    };
    let mut priced: Vec<(f64, usize)> = candidates.iter().map(|&i| (price(i), i)).collect();
    priced.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (slot, (_, i)) in candidates.iter_mut().zip(priced) {
        *slot = i;
    }
}

/// Whether a node with these labels satisfies one of the pod's node-affinity alternatives.
fn labels_allow(requirements: &[Requirements], labels: &BTreeMap<String, String>) -> bool {
    requirements.iter().any(|alternative| {
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
mod tests;
