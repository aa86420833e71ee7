//! The provisioner: pods the kube-scheduler marked Unschedulable are batched, the scheduling
//! simulation plans them onto NodeClaims already in flight or onto new ones, and the new ones
//! are created. Pods planned onto a NodeClaim are nominated to it and left out of later
//! batches while it is in flight (and briefly after), so nothing is provisioned twice.
//! Launching the NodeClaims is the NodeClaim controller's work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::batcher::Batcher;
use super::instance_types::InstanceType;
use super::node_claims::CLUSTER_LABEL;
use super::pod::PodShape;
use super::requirements::Requirement;
use super::resources::Resources;
use super::scheduling::{BoundPod, ExistingNode, LAUNCH_CANDIDATES, NewClaim, Problem, solve};
use super::unavailable::UnavailableOfferings;
use super::{catalog, pool_input, template_pods};
use crate::apis::node_claim::{
    CONDITION_INITIALIZED, NodeClaim, NodeClaimSpec, ResourceRequirements,
};
use crate::apis::node_pool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool, ZONE_LABEL};
use crate::cloud::aws::Aws;
use crate::metrics::{Metrics, PoolLabels};
use crate::state::ClusterState;

/// How often the instance catalog is read again from EC2.
const CATALOG_LIFETIME: Duration = Duration::from_secs(300);
/// How long a NodeClaim this process created is remembered while the watch has not yet shown it.
const STORE_LAG: Duration = Duration::from_secs(30);
/// How long a pod nominated to a NodeClaim waits, once it is initialized, for the
/// kube-scheduler to bind it before it is planned again.
const NOMINATION_GRACE: SignedDuration = SignedDuration::from_secs(30);
/// Pods that fit nowhere are planned again this often while nothing else changes.
const RETRY_UNPLACED: Duration = Duration::from_secs(10);

pub struct Provisioner {
    pub client: kube::Client,
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    /// Offerings that recently ran out of capacity; planned claims leave them out.
    pub unavailable: Arc<std::sync::Mutex<UnavailableOfferings>>,
    /// Per NodePool, why its limits hold pods back; the NodePool controller shows it.
    pub limit_reports: watch::Sender<LimitReports>,
    pub recorder: Recorder,
    pub aws: Aws,
    /// Labels the NodeClaims this install creates, for its NodeClaim controller.
    pub cluster: String,
    pub batch_idle: Duration,
    pub batch_max: Duration,
}

/// NodePool name → "limit cpu=4 reached: 1 pod left pending", for pools whose limits held
/// back pods of the last batch.
pub type LimitReports = BTreeMap<String, String>;

/// NodeClaims this process created, by name, with when; until the store shows them.
type Created = HashMap<String, (Instant, Arc<NodeClaim>)>;

/// Runs until `shutdown`.
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let state = &provisioner.state;
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = state.wait_until_ready() => if ready.is_err() { return },
    }
    let mut batcher = Batcher::new(
        provisioner.batch_idle,
        provisioner.batch_max,
        Instant::now(),
    );
    let mut nominated: HashMap<String, String> = HashMap::new();
    let mut created: Created = HashMap::new();
    let mut catalog: Option<(Instant, Arc<Vec<InstanceType>>)> = None;
    let mut last_plan: Option<(BTreeSet<String>, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let claims: HashMap<String, Arc<NodeClaim>> = state
            .node_claims
            .state()
            .into_iter()
            .map(|c| (c.name_any(), c))
            .collect();
        // The store lags our own creates: a NodeClaim created moments ago still counts.
        created.retain(|name, (at, _)| !claims.contains_key(name) && at.elapsed() < STORE_LAG);
        let now = Timestamp::now();
        nominated.retain(|_, claim| {
            created.contains_key(claim)
                || claims
                    .get(claim)
                    .is_some_and(|claim| nomination_holds(claim, now))
        });
        let pending: Vec<Arc<Pod>> = state
            .pods
            .state()
            .into_iter()
            .filter(|pod| is_unschedulable(pod) && !nominated.contains_key(&uid(pod)))
            .collect();
        if pending.is_empty() {
            report_limits(&provisioner.limit_reports, LimitReports::new());
        }
        let pending_uids: BTreeSet<String> = pending.iter().map(|p| uid(p)).collect();
        if !batcher.observe(pending_uids.clone(), Instant::now()) {
            continue;
        }
        // The same pods again, left over by the last plan: wait before trying them again.
        if last_plan
            .as_ref()
            .is_some_and(|(uids, at)| *uids == pending_uids && at.elapsed() < RETRY_UNPLACED)
        {
            continue;
        }
        last_plan = Some((pending_uids, Instant::now()));
        let fresh = catalog
            .as_ref()
            .filter(|(read, _)| read.elapsed() < CATALOG_LIFETIME);
        let types = match fresh {
            Some((_, types)) => types.clone(),
            None => match provisioner
                .aws
                .instance_catalog(&catalog::on_demand_prices())
                .await
            {
                Ok(types) => {
                    let types = Arc::new(types);
                    catalog = Some((Instant::now(), types.clone()));
                    types
                }
                Err(error) => {
                    warn!(%error, "reading the instance catalog failed; retrying with the next batch");
                    continue;
                }
            },
        };
        let types = with_availability(&types, &provisioner.unavailable);
        provision(&provisioner, &types, &pending, &mut nominated, &mut created).await;
    }
}

/// A pod nominated to a NodeClaim waits for it while it is in flight, and for a short while
/// after it is initialized, for the kube-scheduler to bind it; then it is planned again.
fn nomination_holds(claim: &NodeClaim, now: Timestamp) -> bool {
    if claim.metadata.deletion_timestamp.is_some() {
        return false;
    }
    initialized_since(claim).is_none_or(|since| now.duration_since(since) < NOMINATION_GRACE)
}

/// When the NodeClaim became Initialized, if it is.
fn initialized_since(claim: &NodeClaim) -> Option<Timestamp> {
    claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_INITIALIZED && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

fn report_limits(reports: &watch::Sender<LimitReports>, new: LimitReports) {
    reports.send_if_modified(|current| {
        let changed = *current != new;
        *current = new;
        changed
    });
}

/// The catalog with the offerings that recently ran out of capacity marked unavailable.
fn with_availability(
    catalog: &[InstanceType],
    unavailable: &std::sync::Mutex<UnavailableOfferings>,
) -> Vec<InstanceType> {
    let unavailable = unavailable
        .lock()
        .expect("the offerings lock is never poisoned");
    let now = Instant::now();
    catalog
        .iter()
        .map(|it| {
            let mut it = it.clone();
            for offering in &mut it.offerings {
                offering.available = !unavailable.is_unavailable(
                    &offering.capacity_type,
                    &it.name,
                    &offering.zone,
                    now,
                );
            }
            it
        })
        .collect()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Unbound, not terminating, and marked Unschedulable by the kube-scheduler.
fn is_unschedulable(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.spec.as_ref().is_some_and(|s| s.node_name.is_none())
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
}

async fn provision(
    provisioner: &Provisioner,
    catalog: &[InstanceType],
    pending: &[Arc<Pod>],
    nominated: &mut HashMap<String, String>,
    created: &mut Created,
) {
    let state = &provisioner.state;
    let mut shapes = Vec::new();
    let mut shaped_pods = Vec::new();
    for pod in pending {
        match PodShape::from_pod(pod) {
            Ok(shape) => {
                shapes.push(shape);
                shaped_pods.push(pod.clone());
            }
            Err(reason) => publish(provisioner, pod.as_ref(), "FailedProvisioning", reason).await,
        }
    }
    let daemon_sets: Vec<PodShape> = state
        .daemon_sets
        .state()
        .iter()
        .filter_map(|d| {
            let template = d.spec.as_ref()?.template.clone();
            let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            template_pods("daemon", &d.namespace()?, labels, &template.spec?, 1)
                .ok()?
                .pop()
        })
        .collect();
    let mut claims = state.node_claims.state();
    claims.extend(created.values().map(|(_, claim)| claim.clone()));
    let node_pools: Vec<Arc<NodePool>> = state
        .node_pools
        .state()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut pools = Vec::new();
    for node_pool in &node_pools {
        let mut input = pool_input(node_pool, catalog, &daemon_sets);
        let class_name = &node_pool.spec.template.spec.node_class_ref.name;
        let class = state
            .node_classes
            .state()
            .into_iter()
            .find(|c| &c.name_any() == class_name);
        let Some(status) = class.and_then(|c| c.status.clone()).filter(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        }) else {
            // A pool whose node class is not resolved cannot launch anything.
            input.instance_types.clear();
            pools.push(input);
            continue;
        };
        input.requirements.add(
            ZONE_LABEL,
            Requirement::one_of(status.subnets.iter().map(|s| s.zone.clone())),
        );
        input.requirements.add(
            crate::apis::node_pool::ARCH_LABEL,
            Requirement::one_of(
                status
                    .amis
                    .iter()
                    .flat_map(|a| a.requirements.iter().flat_map(|r| r.values.clone())),
            ),
        );
        for claim in claims
            .iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(&input.name))
        {
            input.in_use += claim_capacity(claim, catalog);
            input.nodes_in_use += 1;
        }
        pools.push(input);
    }
    // NodeClaims not yet initialized take planned pods; every other Node only counts for
    // topology, since the kube-scheduler already found no room there.
    let in_flight: Vec<Arc<NodeClaim>> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none() && initialized_since(c).is_none())
        .cloned()
        .collect();
    let mut existing: Vec<ExistingNode> = in_flight
        .iter()
        .map(|c| in_flight_node(c, catalog))
        .collect();
    let mut slot_of_claim: HashMap<String, usize> = HashMap::new();
    let mut slot_of_node: HashMap<String, usize> = HashMap::new();
    for (index, claim) in in_flight.iter().enumerate() {
        slot_of_claim.insert(claim.name_any(), index);
        if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) {
            slot_of_node.insert(node, index);
        }
    }
    for node in state.nodes.state() {
        if slot_of_node.contains_key(&node.name_any()) {
            continue;
        }
        slot_of_node.insert(node.name_any(), existing.len());
        existing.push(ExistingNode {
            name: node.name_any(),
            labels: node.labels().clone(),
            topology_only: true,
            ..ExistingNode::default()
        });
    }
    // Pods on Nodes, and pods nominated to an in-flight NodeClaim, count for topology there,
    // so a spread or anti-affinity sees them before they are bound.
    let pods_by_node = state.pods_by_node();
    let on_nodes = pods_by_node
        .iter()
        .filter_map(|(node, pods)| Some((*slot_of_node.get(node)?, pods)))
        .flat_map(|(slot, pods)| pods.iter().map(move |pod| (slot, pod.clone())));
    let nominated_pods = state.pods.state().into_iter().filter_map(|pod| {
        let unbound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_none());
        let slot = *slot_of_claim.get(nominated.get(&uid(&pod))?)?;
        unbound.then_some((slot, pod))
    });
    let bound: Vec<BoundPod> = on_nodes
        .chain(nominated_pods)
        .filter_map(|(node, pod)| {
            let shape = PodShape::from_pod(&pod).ok()?;
            Some(BoundPod {
                node,
                namespace: shape.namespace,
                labels: shape.labels,
                terms: shape.terms,
            })
        })
        .collect();
    let started = Instant::now();
    let plan = solve(&Problem {
        catalog,
        pools: &pools,
        existing: &existing,
        bound: &bound,
        pods: &shapes,
    });
    provisioner
        .metrics
        .scheduling_duration
        .observe(started.elapsed().as_secs_f64());
    provisioner.metrics.pending_pods.set(shapes.len() as i64);
    info!(
        pods = shapes.len(),
        new_claims = plan.new_claims.len(),
        onto_in_flight = plan.on_existing.len(),
        unplaced = plan.unplaced.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "planned a batch"
    );
    for (pod, node) in &plan.on_existing {
        nominated.insert(uid(&shaped_pods[*pod]), in_flight[*node].name_any());
    }
    let api: Api<NodeClaim> = Api::all(provisioner.client.clone());
    for claim in &plan.new_claims {
        let node_pool = &node_pools[claim.pool];
        let mut object = node_claim(node_pool, claim, catalog);
        object
            .labels_mut()
            .insert(CLUSTER_LABEL.to_owned(), provisioner.cluster.clone());
        match api.create(&PostParams::default(), &object).await {
            Ok(new) => {
                info!(nodeclaim = %new.name_any(), nodepool = %node_pool.name_any(), pods = claim.pods.len(), "created NodeClaim");
                for pod in &claim.pods {
                    nominated.insert(uid(&shaped_pods[*pod]), new.name_any());
                }
                created.insert(new.name_any(), (Instant::now(), Arc::new(new)));
                provisioner
                    .metrics
                    .nodeclaims_created
                    .get_or_create(&PoolLabels {
                        nodepool: node_pool.name_any(),
                    })
                    .inc();
            }
            Err(error) => {
                warn!(%error, nodepool = %node_pool.name_any(), "creating a NodeClaim failed")
            }
        }
    }
    let mut limited: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (pod, reason) in &plan.unplaced {
        publish(
            provisioner,
            shaped_pods[*pod].as_ref(),
            "FailedProvisioning",
            reason.clone(),
        )
        .await;
        for (index, pool) in pools.iter().enumerate() {
            let prefix = format!("nodepool {}: limit ", pool.name);
            if let Some(rest) = reason
                .split("; ")
                .find_map(|part| part.strip_prefix(&prefix))
            {
                *limited
                    .entry((index, rest.trim_end_matches(" reached").to_owned()))
                    .or_default() += 1;
            }
        }
    }
    let mut reports = LimitReports::new();
    for ((pool, limit), count) in limited {
        let note = format!(
            "limit {limit} reached: {count} pod{} left pending",
            if count == 1 { "" } else { "s" }
        );
        publish(
            provisioner,
            node_pools[pool].as_ref(),
            "LimitReached",
            note.clone(),
        )
        .await;
        let report = reports.entry(node_pools[pool].name_any()).or_default();
        if !report.is_empty() {
            report.push_str("; ");
        }
        report.push_str(&note);
    }
    report_limits(&provisioner.limit_reports, reports);
}

/// What a NodeClaim counts against its pool's limits: its launched capacity, or until then
/// the largest its candidate types could bring.
fn claim_capacity(claim: &NodeClaim, catalog: &[InstanceType]) -> Resources {
    if let Some(capacity) = claim
        .status
        .as_ref()
        .map(|s| &s.capacity)
        .filter(|c| !c.is_empty())
    {
        return Resources::from_list(capacity);
    }
    candidates(claim, catalog).fold(Resources::default(), |max, it| max.max(&it.capacity))
}

fn candidates<'a>(
    claim: &'a NodeClaim,
    catalog: &'a [InstanceType],
) -> impl Iterator<Item = &'a InstanceType> {
    let names: BTreeSet<&str> = claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == INSTANCE_TYPE_LABEL)
        .flat_map(|r| r.values.iter().map(String::as_str))
        .collect();
    catalog
        .iter()
        .filter(move |it| names.contains(it.name.as_str()))
}

/// An in-flight NodeClaim as capacity for the simulation: what its smallest candidate type
/// would allocate, less what it was created for.
fn in_flight_node(claim: &NodeClaim, catalog: &[InstanceType]) -> ExistingNode {
    let allocatable = candidates(claim, catalog)
        .map(|it| it.allocatable)
        .reduce(|a, b| Resources {
            cpu: a.cpu.min(b.cpu),
            memory: a.memory.min(b.memory),
            pods: a.pods.min(b.pods),
        })
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = claim.labels().clone();
    for requirement in &claim.spec.requirements {
        if let [value] = requirement.values.as_slice()
            && requirement.operator == crate::apis::node_pool::RequirementOperator::In
        {
            labels.insert(requirement.key.clone(), value.clone());
        }
    }
    ExistingNode {
        name: claim.name_any(),
        labels,
        taints: claim.spec.taints.clone(),
        allocatable,
        requested: Resources::from_list(&claim.spec.resources.requests),
        host_ports: Vec::new(),
        topology_only: false,
    }
}

/// The NodeClaim for a planned claim: the pool's template, the plan's requirements with the
/// instance types narrowed to the cheapest candidates, and the pods' requests.
fn node_claim(node_pool: &NodePool, claim: &NewClaim, catalog: &[InstanceType]) -> NodeClaim {
    let template = &node_pool.spec.template;
    let pool_name = node_pool.name_any();
    // The nodepool is a label on the NodeClaim, not a requirement it may carry.
    let mut requirements = claim.requirements.clone().without(NODEPOOL_LABEL);
    requirements.add(
        INSTANCE_TYPE_LABEL,
        Requirement::one_of(
            claim
                .instance_types
                .iter()
                .take(LAUNCH_CANDIDATES)
                .map(|&i| catalog[i].name.clone()),
        ),
    );
    let mut labels = template.metadata.labels.clone();
    labels.insert(NODEPOOL_LABEL.to_owned(), pool_name.clone());
    let requests = BTreeMap::from([
        (
            "cpu".to_owned(),
            Quantity(format!("{}m", claim.requests.cpu)),
        ),
        (
            "memory".to_owned(),
            Quantity(claim.requests.memory.to_string()),
        ),
        ("pods".to_owned(), Quantity(claim.requests.pods.to_string())),
    ]);
    NodeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{pool_name}-")),
            labels: Some(labels),
            annotations: Some(template.metadata.annotations.clone()).filter(|a| !a.is_empty()),
            owner_references: Some(vec![OwnerReference {
                api_version: "windlass.dev/v1alpha1".into(),
                kind: "NodePool".into(),
                name: pool_name,
                uid: node_pool.metadata.uid.clone().unwrap_or_default(),
                block_owner_deletion: Some(true),
                controller: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: NodeClaimSpec {
            requirements: requirements.to_node_selector(),
            resources: ResourceRequirements { requests },
            node_class_ref: template.spec.node_class_ref.clone(),
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            expire_after: template.spec.expire_after.clone(),
            termination_grace_period: template.spec.termination_grace_period.clone(),
        },
        status: None,
    }
}

async fn publish<K: Resource<DynamicType = ()>>(
    provisioner: &Provisioner,
    object: &K,
    reason: &str,
    note: String,
) {
    crate::events::publish(
        &provisioner.recorder,
        object,
        EventType::Warning,
        reason,
        note,
        "Provisioning",
    )
    .await;
}
