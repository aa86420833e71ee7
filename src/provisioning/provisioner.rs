//! The provisioner: pods the kube-scheduler marked Unschedulable are batched, the scheduling
//! simulation plans them onto NodeClaims already in flight or onto new ones, and the new ones
//! are created. An in-flight NodeClaim's room is what it will allocate less the pods bound to
//! it, so the pods it was made for find it again in every later batch, and after a restart:
//! nothing is provisioned twice, and nothing depends on memory. Launching the NodeClaims is
//! the NodeClaim controller's work.
//!
//! Demand-aware provisioning: when a ScaledObject or ScaledJob scales out, its demand is
//! planned at once (`ahead`), without waiting for its pods to be marked Unschedulable and for
//! the batch window. That pass plans onto every live NodeClaim's free room, since the pods it
//! plans have not been turned away from any Node yet, so a demand that fits launches nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::Recorder;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ahead::{AheadPod, ahead_pods};
use super::batcher::Batcher;
use super::claims::{limit_notes, node_claim, unpriced_candidates};
use super::problem::{BoundPods, is_unschedulable, plan, pool_inputs, takes_pods};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::cloud::CloudProvider;
use crate::metrics::{Metrics, PoolLabels};
use crate::scale_outs::{ScaleOut, ScaleOuts};
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::volumes::placement_shape;
use crate::scheduling::{NodePoolInput, no_instance_types};
use crate::state::ClusterState;

/// How often NodePools are checked for instance types while nothing about them changes.
const POOL_CHECK: Duration = Duration::from_secs(300);
/// How long a NodeClaim this process created is remembered while the watch has not yet shown it.
const STORE_LAG: Duration = Duration::from_secs(30);
/// Pods that fit nowhere are planned again this often while nothing else changes.
const RETRY_UNPLACED: Duration = Duration::from_secs(10);

pub struct Provisioner<C> {
    pub client: kube::Client,
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    /// What the last batch found about each NodePool; the NodePool controller shows it.
    pub pool_reports: watch::Sender<PoolReports>,
    pub recorder: Recorder,
    /// Instance types, with the offerings that just ran out of capacity left out.
    pub cloud: Arc<C>,
    /// Labels the NodeClaims this install creates, for its NodeClaim controller.
    pub cluster: String,
    pub batch_idle: Duration,
    pub batch_max: Duration,
    /// What is scaling out, with its demand.
    pub scale_outs: Arc<ScaleOuts>,
}

/// What the provisioner found about one NodePool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// "limit cpu=4 reached: 1 pod left pending", while its limits hold pods back.
    pub limit: Option<String>,
    /// Why its requirements admit no instance type, while they admit none.
    pub no_instance_types: Option<String>,
}

/// NodePool name → its report.
pub type PoolReports = BTreeMap<String, PoolReport>;

/// NodeClaims this process created, by name, with when; until the store shows them.
type Created = HashMap<String, (Instant, Arc<NodeClaim>)>;

/// Runs until `shutdown`.
pub async fn run<C: CloudProvider>(provisioner: Arc<Provisioner<C>>, shutdown: CancellationToken) {
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
    let mut created: Created = HashMap::new();
    let mut last_plan: Option<(BTreeSet<String>, Instant)> = None;
    let mut checked_pools: Option<(PoolVersions, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        let demanded = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            _ = provisioner.scale_outs.demanded.notified() => true,
        };
        if demanded {
            provision_ahead(&provisioner, &mut created).await;
            continue;
        }
        let claims: HashMap<String, Arc<NodeClaim>> = state
            .node_claims
            .state()
            .into_iter()
            .map(|c| (c.name_any(), c))
            .collect();
        // The store lags our own creates: a NodeClaim created moments ago still counts.
        created.retain(|name, (at, _)| !claims.contains_key(name) && at.elapsed() < STORE_LAG);
        let versions = pool_versions(state);
        let pools_changed = checked_pools
            .as_ref()
            .is_none_or(|(seen, at)| *seen != versions || at.elapsed() >= POOL_CHECK);
        if pools_changed
            && !versions.is_empty()
            && let Ok(types) = provisioner.cloud.instance_types().await
        {
            check_pools(&provisioner, &types).await;
            checked_pools = Some((versions, Instant::now()));
        }
        // Every unschedulable pod is planned, also one a NodeClaim in flight was made for:
        // that claim's capacity is free for it until a pod is bound there, so a restart (which
        // forgets what was planned) finds the room again instead of launching twice.
        let pending: Vec<Arc<Pod>> = state
            .pods
            .state()
            .into_iter()
            .filter(|pod| state.provisions_for(pod) && is_unschedulable(pod))
            .collect();
        if pending.is_empty() {
            provisioner.metrics.pending_pods.set(0);
            update_reports(&provisioner.pool_reports, |report| report.limit = None);
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
        // A failed read is logged where it failed; the pods are planned again next time.
        let Ok(types) = provisioner.cloud.instance_types().await else {
            continue;
        };
        let planned: Vec<Planned> = pending.into_iter().map(Planned::Pending).collect();
        provision(&provisioner, &types, &planned, &[], &mut created).await;
    }
}

/// Each NodePool's and EC2NodeClass's resourceVersion: what a pool's instance types depend on.
type PoolVersions = BTreeSet<(String, String)>;

fn pool_versions(state: &ClusterState) -> PoolVersions {
    let version = |meta: &ObjectMeta| {
        (
            meta.name.clone().unwrap_or_default(),
            meta.resource_version.clone().unwrap_or_default(),
        )
    };
    let pools = state.node_pools.state();
    let classes = state.node_classes.state();
    if pools.is_empty() {
        return PoolVersions::new();
    }
    pools
        .iter()
        .map(|p| version(&p.metadata))
        .chain(classes.iter().map(|c| version(&c.metadata)))
        .collect()
}

/// Whether each NodePool's requirements admit any instance type; a pool that admits none
/// gets a Warning Event and its report says why, whether or not pods are pending.
async fn check_pools<C>(provisioner: &Provisioner<C>, catalog: &[InstanceType]) {
    let (node_pools, pools) = pools_of(&provisioner.state, catalog);
    let mut found = BTreeMap::new();
    for (node_pool, pool) in node_pools.iter().zip(&pools) {
        let problem = if pool.not_ready.is_some() {
            None
        } else {
            no_instance_types(pool, catalog)
        };
        found.insert(node_pool.name_any(), problem);
    }
    let previous = provisioner.pool_reports.borrow().clone();
    for node_pool in &node_pools {
        let name = node_pool.name_any();
        let problem = found.get(&name).cloned().flatten();
        let before = previous
            .get(&name)
            .and_then(|r| r.no_instance_types.clone());
        if let Some(problem) = &problem
            && before.as_ref() != Some(problem)
        {
            publish(
                provisioner,
                node_pool.as_ref(),
                "NoInstanceTypes",
                format!("its requirements admit no instance type: {problem}"),
            )
            .await;
        }
    }
    provisioner.pool_reports.send_if_modified(|reports| {
        let before = reports.clone();
        reports.retain(|name, _| found.contains_key(name));
        for (name, problem) in found {
            reports.entry(name).or_default().no_instance_types = problem;
        }
        *reports != before
    });
}

/// Every NodePool, and each as the simulation sees it.
fn pools_of(
    state: &ClusterState,
    catalog: &[InstanceType],
) -> (Vec<Arc<NodePool>>, Vec<NodePoolInput>) {
    pool_inputs(
        state.node_pools.state(),
        &state.node_classes.state(),
        &state.daemon_sets.state(),
        catalog,
    )
}

/// Changes every pool's report with `change`, telling the NodePool controller if it changed.
fn update_reports(reports: &watch::Sender<PoolReports>, change: impl Fn(&mut PoolReport)) {
    reports.send_if_modified(|reports| {
        let before = reports.clone();
        reports.values_mut().for_each(&change);
        *reports != before
    });
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Plans the demand of every scale-out, with the pods already pending, and creates the
/// NodeClaims that needs.
async fn provision_ahead<C: CloudProvider>(provisioner: &Provisioner<C>, created: &mut Created) {
    let state = &provisioner.state;
    let scale_outs = provisioner.scale_outs.active(Timestamp::now());
    let pods = state.pods.state();
    let ahead: Vec<AheadPod> = ahead_pods(&scale_outs, &pods)
        .into_iter()
        .filter(|a| state.provisions_for(&a.pod))
        .collect();
    if ahead.is_empty() {
        return;
    }
    let Ok(types) = provisioner.cloud.instance_types().await else {
        return;
    };
    let planned_ahead: BTreeSet<String> = ahead
        .iter()
        .filter(|a| !a.to_come)
        .map(|a| uid(&a.pod))
        .collect();
    let planned: Vec<Planned> = pods
        .into_iter()
        .filter(|pod| state.provisions_for(pod) && is_unschedulable(pod))
        .filter(|pod| !planned_ahead.contains(&uid(pod)))
        .map(Planned::Pending)
        .chain(ahead.into_iter().map(Planned::Ahead))
        .collect();
    provision(provisioner, &types, &planned, &scale_outs, created).await;
}

/// A pod a pass plans: one the kube-scheduler marked Unschedulable, or one a scale-out is
/// about to need room for.
enum Planned {
    Pending(Arc<Pod>),
    Ahead(AheadPod),
}

impl Planned {
    fn pod(&self) -> &Arc<Pod> {
        match self {
            Planned::Pending(pod) => pod,
            Planned::Ahead(ahead) => &ahead.pod,
        }
    }
}

/// Plans `planned` and creates the NodeClaims the plan needs. A pass with pods planned ahead
/// (`scale_outs` their scale-outs) plans onto every live NodeClaim's free room and creates only
/// the NodeClaims that hold some of them; it leaves the pending pods' NodeClaims, Events and
/// the NodePools' limit reports to the pending pass, which sees what the kube-scheduler
/// turned away.
async fn provision<C>(
    provisioner: &Provisioner<C>,
    catalog: &[InstanceType],
    planned: &[Planned],
    scale_outs: &[ScaleOut],
    created: &mut Created,
) {
    let state = &provisioner.state;
    let ahead_pass = planned.iter().any(|p| matches!(p, Planned::Ahead(_)));
    let mut shapes = Vec::new();
    let mut shaped = Vec::new();
    for entry in planned {
        match placement_shape(entry.pod(), state.as_ref()) {
            Ok(shape) => {
                shapes.push(shape);
                shaped.push(entry);
            }
            Err(reason) => {
                if let Planned::Pending(pod) = entry {
                    publish(
                        provisioner,
                        pod.as_ref(),
                        "FailedProvisioning",
                        reason.to_string(),
                    )
                    .await
                }
            }
        }
    }
    let mut claims = state.node_claims.state();
    claims.extend(created.values().map(|(_, claim)| claim.clone()));
    // NodeClaims in flight (and just initialized) take pending pods; every other Node only
    // counts for topology, since the kube-scheduler already found no room there. Pods planned
    // ahead were turned away nowhere: every live NodeClaim's free room is theirs.
    let now = Timestamp::now();
    let started = Instant::now();
    let (node_pools, plan) = plan(
        state,
        catalog,
        &claims,
        BoundPods {
            by_node: &state.pods_by_node(),
            namespace_labels: &state.namespace_labels(),
        },
        |c| {
            if ahead_pass {
                c.metadata.deletion_timestamp.is_none()
            } else {
                takes_pods(c, now)
            }
        },
        &BTreeSet::new(),
        &shapes,
    );
    provisioner
        .metrics
        .scheduling_duration
        .observe(started.elapsed().as_secs_f64());
    let pending = shaped
        .iter()
        .filter(|p| matches!(p, Planned::Pending(_)))
        .count();
    provisioner.metrics.pending_pods.set(pending as i64);
    info!(
        pods = shapes.len(),
        ahead = shapes.len() - pending,
        new_claims = plan.new_claims.len(),
        onto_existing = plan.on_existing.len(),
        unplaced = plan.unplaced.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "planned a batch"
    );
    let api: Api<NodeClaim> = Api::all(provisioner.client.clone());
    for claim in &plan.new_claims {
        let ahead: Vec<&AheadPod> = claim
            .pods
            .iter()
            .filter_map(|&pod| match shaped[pod] {
                Planned::Ahead(ahead) => Some(ahead),
                Planned::Pending(_) => None,
            })
            .collect();
        // Pending pods alone are the pending pass's: it batches them.
        if ahead_pass && ahead.is_empty() {
            continue;
        }
        let node_pool = &node_pools[claim.pool];
        let class = state.node_class(&node_pool.spec.template.spec.node_class_ref.name);
        let object = node_claim(
            node_pool,
            class.as_deref(),
            claim,
            catalog,
            &provisioner.cluster,
        );
        match api.create(&PostParams::default(), &object).await {
            Ok(new) => {
                info!(nodeclaim = %new.name_any(), nodepool = %node_pool.name_any(), pods = claim.pods.len(), "created NodeClaim");
                let unpriced = unpriced_candidates(claim, catalog);
                if !unpriced.is_empty() {
                    crate::events::publish(
                        &provisioner.recorder,
                        &new,
                        EventType::Normal,
                        "UnknownPrice",
                        format!(
                            "no price is known for {}: offered after every priced candidate",
                            unpriced.join(", ")
                        ),
                        "Provisioning",
                    )
                    .await;
                }
                let pool_labels = PoolLabels {
                    nodepool: node_pool.name_any(),
                };
                provisioner
                    .metrics
                    .nodeclaims_created
                    .get_or_create(&pool_labels)
                    .inc();
                if !ahead.is_empty() {
                    provisioner
                        .metrics
                        .nodeclaims_created_ahead
                        .get_or_create(&pool_labels)
                        .inc();
                    announce_ahead(provisioner, &new, &ahead, scale_outs).await;
                }
                created.insert(new.name_any(), (Instant::now(), Arc::new(new)));
            }
            Err(error) => {
                warn!(%error, nodepool = %node_pool.name_any(), "creating a NodeClaim failed")
            }
        }
    }
    if ahead_pass {
        return;
    }
    for (pod, unplaced) in &plan.unplaced {
        publish(
            provisioner,
            shaped[*pod].pod().as_ref(),
            "FailedProvisioning",
            unplaced.to_string(),
        )
        .await;
    }
    let mut limits: BTreeMap<String, String> = BTreeMap::new();
    for (pool, notes) in limit_notes(plan.unplaced.iter().map(|(_, u)| u)) {
        if let Some(node_pool) = node_pools.iter().find(|p| p.name_any() == pool) {
            for note in &notes {
                publish(
                    provisioner,
                    node_pool.as_ref(),
                    "LimitReached",
                    note.clone(),
                )
                .await;
            }
        }
        limits.insert(pool, notes.join("; "));
    }
    provisioner.pool_reports.send_if_modified(|reports| {
        let before = reports.clone();
        for (name, report) in reports.iter_mut() {
            report.limit = limits.remove(name);
        }
        for (name, limit) in limits {
            reports.entry(name).or_default().limit = Some(limit);
        }
        *reports != before
    });
}

/// A Normal Event on each scaling object `ahead` holds pods for: the NodeClaim launched for
/// them before they were pending.
async fn announce_ahead<C>(
    provisioner: &Provisioner<C>,
    claim: &NodeClaim,
    ahead: &[&AheadPod],
    scale_outs: &[ScaleOut],
) {
    let mut pods_of: BTreeMap<usize, usize> = BTreeMap::new();
    for pod in ahead {
        *pods_of.entry(pod.scale_out).or_default() += 1;
    }
    for (scale_out, pods) in pods_of {
        crate::events::publish_regarding(
            &provisioner.recorder,
            scale_outs[scale_out].regarding.clone(),
            EventType::Normal,
            "LaunchedAhead",
            format!(
                "NodeClaim {} launched for {pods} of its pods before they were pending",
                claim.name_any()
            ),
            "Provisioning",
        )
        .await;
    }
}

async fn publish<C, K: Resource<DynamicType = ()>>(
    provisioner: &Provisioner<C>,
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
