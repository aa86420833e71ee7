//! The provisioner: pods the kube-scheduler marked Unschedulable are batched, the scheduling
//! simulation plans them onto NodeClaims already in flight or onto new ones, and the new ones
//! are created. Pods planned onto a NodeClaim are nominated to it and left out of later
//! batches while it exists, so nothing is provisioned twice. Launching the NodeClaims is the
//! NodeClaim controller's work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
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
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_claim::{NodeClaim, NodeClaimSpec, ResourceRequirements};
use crate::apis::node_pool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool, ZONE_LABEL};
use crate::cloud::aws::Aws;
use crate::metrics::{Metrics, PoolLabels};

/// How often the instance catalog is read again from EC2.
const CATALOG_LIFETIME: Duration = Duration::from_secs(300);
/// How long a NodeClaim this process created is remembered while the watch has not yet shown it.
const STORE_LAG: Duration = Duration::from_secs(30);
/// Pods that fit nowhere are planned again this often while nothing else changes.
const RETRY_UNPLACED: Duration = Duration::from_secs(10);

pub struct Provisioner {
    pub client: kube::Client,
    pub metrics: Arc<Metrics>,
    /// Offerings that recently ran out of capacity; planned claims leave them out.
    pub unavailable: Arc<std::sync::Mutex<UnavailableOfferings>>,
    pub recorder: Recorder,
    pub aws: Aws,
    /// Only pods in this namespace are provisioned for; all when `None`.
    pub watch_namespace: Option<String>,
    /// Labels the NodeClaims this install creates, for its NodeClaim controller.
    pub cluster: String,
    pub batch_idle: Duration,
    pub batch_max: Duration,
}

/// NodeClaims this process created, by name, with when; until the store shows them.
type Created = HashMap<String, (Instant, Arc<NodeClaim>)>;

/// The watched objects the provisioner reads.
struct Stores {
    pods: Store<Pod>,
    node_claims: Store<NodeClaim>,
    node_pools: Store<NodePool>,
    node_classes: Store<EC2NodeClass>,
    daemon_sets: Store<DaemonSet>,
}

fn watch<K>(api: Api<K>, config: watcher::Config, shutdown: &CancellationToken) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

/// Runs until `shutdown`.
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let client = &provisioner.client;
    let pods: Api<Pod> = match &provisioner.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let stores = Stores {
        pods: watch(
            pods,
            watcher::Config::default().fields("spec.nodeName="),
            &shutdown,
        ),
        node_claims: watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            &shutdown,
        ),
        node_pools: watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            &shutdown,
        ),
        node_classes: watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            &shutdown,
        ),
        daemon_sets: watch(
            Api::all(client.clone()),
            watcher::Config::default(),
            &shutdown,
        ),
    };
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
        let claims: BTreeSet<String> = stores
            .node_claims
            .state()
            .iter()
            .map(|c| c.name_any())
            .collect();
        // The store lags our own creates: a NodeClaim created moments ago still counts.
        created.retain(|name, (at, _)| !claims.contains(name) && at.elapsed() < STORE_LAG);
        nominated.retain(|_, claim| claims.contains(claim) || created.contains_key(claim));
        let pending: Vec<Arc<Pod>> = stores
            .pods
            .state()
            .into_iter()
            .filter(|pod| is_unschedulable(pod) && !nominated.contains_key(&uid(pod)))
            .collect();
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
        provision(
            &provisioner,
            &stores,
            &types,
            &pending,
            &mut nominated,
            &mut created,
        )
        .await;
    }
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
    stores: &Stores,
    catalog: &[InstanceType],
    pending: &[Arc<Pod>],
    nominated: &mut HashMap<String, String>,
    created: &mut Created,
) {
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
    let daemon_sets: Vec<PodShape> = stores
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
    let mut claims = stores.node_claims.state();
    claims.extend(created.values().map(|(_, claim)| claim.clone()));
    let node_pools: Vec<Arc<NodePool>> = stores
        .node_pools
        .state()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut pools = Vec::new();
    for node_pool in &node_pools {
        let mut input = pool_input(node_pool, catalog, &daemon_sets);
        let class_name = &node_pool.spec.template.spec.node_class_ref.name;
        let class = stores
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
    let in_flight: Vec<Arc<NodeClaim>> = claims
        .iter()
        .filter(|c| {
            c.status.as_ref().is_none_or(|s| s.node_name.is_none())
                && c.metadata.deletion_timestamp.is_none()
        })
        .cloned()
        .collect();
    let existing: Vec<ExistingNode> = in_flight
        .iter()
        .map(|c| in_flight_node(c, catalog))
        .collect();
    // Pods already nominated to an in-flight NodeClaim count for topology there, so a spread
    // or anti-affinity sees them before they are bound.
    let slot_of: HashMap<String, usize> = in_flight
        .iter()
        .enumerate()
        .map(|(index, claim)| (claim.name_any(), index))
        .collect();
    let bound: Vec<BoundPod> = stores
        .pods
        .state()
        .iter()
        .filter_map(|pod| {
            let node = *slot_of.get(nominated.get(&uid(pod))?)?;
            let shape = PodShape::from_pod(pod).ok()?;
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
    for ((pool, limit), count) in limited {
        let note = format!(
            "limit {limit} reached: {count} pod{} left pending",
            if count == 1 { "" } else { "s" }
        );
        publish(provisioner, node_pools[pool].as_ref(), "LimitReached", note).await;
    }
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
