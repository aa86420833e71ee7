//! The simulation's problem, built from the cluster as the stores show it, without I/O: which
//! pods are pending, each NodePool as the simulation sees it, and every NodeClaim in flight as
//! capacity that is free for the pods not yet bound to it. Disruption asks the same question
//! with the nodes it would remove left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::apis::conditions::READY;
use crate::apis::ec2_node_class::{EC2NodeClass, EC2NodeClassSpec};
use crate::apis::labels::{
    ARCH_LABEL, DISRUPTED_TAINT, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL, add_own_keys,
    canonical,
};
use crate::apis::node_claim::{CONDITION_INITIALIZED, NodeClaim};
use crate::apis::node_pool::{NodePool, RequirementOperator};
use crate::aws::kubelet_reservations;
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::pod::{NamespaceLabels, PodShape};
use crate::scheduling::requirements::Requirement;
use crate::scheduling::resources::Resources;
use crate::scheduling::{
    BoundPod, ExistingNode, NodePoolInput, Plan, Problem, pool_input, solve, template_pods,
};
use crate::state::ClusterState;

/// How long after it is initialized a NodeClaim still takes planned pods: the kube-scheduler
/// needs a moment to bind the pods it was made for.
pub const BIND_GRACE: SignedDuration = SignedDuration::from_secs(30);

/// Whether the simulation may plan pods onto the NodeClaim: in flight, or just initialized.
pub fn takes_pods(claim: &NodeClaim, now: Timestamp) -> bool {
    if claim.metadata.deletion_timestamp.is_some() {
        return false;
    }
    initialized_since(claim).is_none_or(|since| now.duration_since(since) < BIND_GRACE)
}

/// When the NodeClaim became Initialized, if it is.
pub fn initialized_since(claim: &NodeClaim) -> Option<Timestamp> {
    claim
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_INITIALIZED && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// Unbound, not terminating, and marked Unschedulable by the kube-scheduler.
pub fn is_unschedulable(pod: &Pod) -> bool {
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

pub fn is_daemon_pod(pod: &Pod) -> bool {
    pod.owner_references().iter().any(|o| o.kind == "DaemonSet")
}

/// The NodePools being provisioned for, and each as the simulation sees it: narrowed to its
/// EC2NodeClass's zones and architectures, or not ready with the class's message.
pub fn pool_inputs(
    node_pools: Vec<Arc<NodePool>>,
    classes: &[Arc<EC2NodeClass>],
    daemon_sets: &[Arc<DaemonSet>],
    catalog: &[InstanceType],
) -> (Vec<Arc<NodePool>>, Vec<NodePoolInput>) {
    let daemon_sets: Vec<PodShape> = daemon_sets
        .iter()
        .filter_map(|d| {
            let template = d.spec.as_ref()?.template.clone();
            let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            template_pods("daemon", &d.namespace()?, labels, &template.spec?, 1)
                .ok()?
                .pop()
        })
        .collect();
    let node_pools: Vec<Arc<NodePool>> = node_pools
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let pools =
        node_pools
            .iter()
            .map(|node_pool| {
                let mut input = pool_input(node_pool, catalog, &daemon_sets);
                let class_name = &node_pool.spec.template.spec.node_class_ref.name;
                let class = classes.iter().find(|c| &c.name_any() == class_name);
                if let Some(class) = class {
                    (input.capacity, input.allocatable) =
                        class_resources(&class.spec, &input.instance_types, catalog);
                }
                let status = class.and_then(|c| c.status.as_ref());
                let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
                match (status, ready) {
                    (Some(status), Some(ready)) if ready.status == "True" => {
                        input.requirements.add(
                            ZONE_LABEL,
                            Requirement::one_of(status.subnets.iter().map(|s| s.zone.clone())),
                        );
                        input.requirements.add(
                            ARCH_LABEL,
                            Requirement::one_of(status.amis.iter().flat_map(|a| {
                                a.requirements.iter().flat_map(|r| r.values.clone())
                            })),
                        );
                    }
                    (_, ready) => {
                        let why = match (class, ready) {
                            (None, _) => "does not exist".to_owned(),
                            (Some(_), Some(ready)) if !ready.message.is_empty() => {
                                format!("is not ready: {}", ready.message)
                            }
                            (Some(_), _) => "is not ready yet".to_owned(),
                        };
                        input.not_ready = Some(format!("EC2NodeClass {class_name} {why}"));
                    }
                }
                input
            })
            .collect();
    (node_pools, pools)
}

/// What the kubelet of each of `types` reports as capacity and leaves allocatable under a
/// class's `kubelet` settings and storage, where that differs from the catalog's (EKS's
/// defaults on a 20 GiB root volume).
fn class_resources(
    class: &EC2NodeClassSpec,
    types: &[usize],
    catalog: &[InstanceType],
) -> (HashMap<usize, Resources>, HashMap<usize, Resources>) {
    let reservations = kubelet_reservations(class);
    let mut capacities = HashMap::new();
    let mut allocatables = HashMap::new();
    for &i in types {
        let it = &catalog[i];
        let reserved = reservations.for_shape(&it.shape);
        let capacity = it.shape.capacity_with(&reserved);
        if capacity != it.capacity {
            capacities.insert(i, capacity);
        }
        let allocatable = it.shape.allocatable_with(&reserved);
        if allocatable != it.allocatable {
            allocatables.insert(i, allocatable);
        }
    }
    (capacities, allocatables)
}

/// The cluster as the simulation sees it: every NodePool, capacity the simulation may plan
/// onto, and the pods already on Nodes (for topology).
struct ClusterView {
    pub node_pools: Vec<Arc<NodePool>>,
    pub pools: Vec<NodePoolInput>,
    pub existing: Vec<ExistingNode>,
    pub bound: Vec<BoundPod>,
}

/// Builds the view from the stores and `claims` (the stored ones and any just created).
/// NodeClaims for which `takes` holds are capacity with their free room, unless their Node is
/// cordoned or being drained; every other Node counts for topology only. NodeClaims named in `leaving` (about to be disrupted) are left out
/// altogether: neither capacity nor topology, and no longer counted against their pool's limits.
fn cluster_view(
    state: &ClusterState,
    catalog: &[InstanceType],
    claims: &[Arc<NodeClaim>],
    pods_by_node: &HashMap<String, Vec<Arc<Pod>>>,
    takes: impl Fn(&NodeClaim) -> bool,
    leaving: &BTreeSet<String>,
) -> ClusterView {
    let claims: Vec<&Arc<NodeClaim>> = claims
        .iter()
        .filter(|c| !leaving.contains(&c.name_any()))
        .collect();
    let leaving_nodes: BTreeSet<String> = state
        .node_claims
        .state()
        .iter()
        .filter(|c| leaving.contains(&c.name_any()))
        .filter_map(|c| c.status.as_ref()?.node_name.clone())
        .collect();
    let (node_pools, mut pools) = pool_inputs(
        state.node_pools.state(),
        &state.node_classes.state(),
        &state.daemon_sets.state(),
        catalog,
    );
    for input in &mut pools {
        for claim in claims
            .iter()
            .filter(|c| c.labels().get(NODEPOOL_LABEL) == Some(&input.name))
        {
            input.in_use += claim_capacity(claim, catalog);
            input.nodes_in_use += 1;
        }
    }
    // A cordoned Node, or one being drained, takes nothing whatever its claim's room.
    let closed: BTreeSet<String> = state
        .nodes
        .state()
        .iter()
        .filter(|n| {
            let spec = n.spec.as_ref();
            spec.and_then(|s| s.unschedulable).unwrap_or(false)
                || spec
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == DISRUPTED_TAINT))
        })
        .map(|n| n.name_any())
        .collect();
    let capacity: Vec<&Arc<NodeClaim>> = claims
        .iter()
        .copied()
        .filter(|c| takes(c))
        .filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_none_or(|node| !closed.contains(node))
        })
        .collect();
    let mut existing: Vec<ExistingNode> = capacity
        .iter()
        .map(|claim| {
            let on_node = claim
                .status
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .and_then(|node| pods_by_node.get(node));
            let pool = pools
                .iter()
                .find(|p| claim.labels().get(NODEPOOL_LABEL) == Some(&p.name));
            let no_overrides = HashMap::new();
            in_flight_node(
                claim,
                catalog,
                pool.map_or(&no_overrides, |p| &p.allocatable),
                pool.map(|p| p.daemon_overhead).unwrap_or_default(),
                on_node.map_or(&[][..], Vec::as_slice),
            )
        })
        .collect();
    let mut slot_of_node: HashMap<String, usize> = HashMap::new();
    for (index, claim) in capacity.iter().enumerate() {
        if let Some(node) = claim.status.as_ref().and_then(|s| s.node_name.clone()) {
            slot_of_node.insert(node, index);
        }
    }
    for node in state.nodes.state() {
        let name = node.name_any();
        if slot_of_node.contains_key(&name) || leaving_nodes.contains(&name) {
            continue;
        }
        slot_of_node.insert(name.clone(), existing.len());
        let mut labels = node.labels().clone();
        add_own_keys(&mut labels);
        existing.push(ExistingNode {
            name,
            labels,
            topology_only: true,
            ..ExistingNode::default()
        });
    }
    // Pods on Nodes count for topology there, so a spread or anti-affinity sees them.
    let bound: Vec<BoundPod> = pods_by_node
        .iter()
        .filter_map(|(node, pods)| Some((*slot_of_node.get(node)?, pods)))
        .flat_map(|(slot, pods)| pods.iter().map(move |pod| (slot, pod)))
        .filter_map(|(node, pod)| {
            let shape = PodShape::on_node(pod).ok()?;
            Some(BoundPod {
                node,
                namespace: shape.namespace,
                labels: shape.labels,
                terms: shape.terms,
            })
        })
        .collect();
    ClusterView {
        node_pools,
        pools,
        existing,
        bound,
    }
}

/// The pods already on Nodes, as a plan counts them for topology: by Node, and the labels of
/// every namespace. Read once per provisioning batch or disruption pass, not once per plan:
/// disruption plans once per candidate.
pub struct BoundPods<'a> {
    pub by_node: &'a HashMap<String, Vec<Arc<Pod>>>,
    pub namespace_labels: &'a NamespaceLabels,
}

/// Where `pods` would go in the cluster [`cluster_view`] builds from the same arguments: the
/// one simulation the provisioner and disruption both ask. Returns the pools the plan's new
/// NodeClaims index into, and the plan.
pub fn plan(
    state: &ClusterState,
    catalog: &[InstanceType],
    claims: &[Arc<NodeClaim>],
    bound: BoundPods<'_>,
    takes: impl Fn(&NodeClaim) -> bool,
    leaving: &BTreeSet<String>,
    pods: &[PodShape],
) -> (Vec<Arc<NodePool>>, Plan) {
    let view = cluster_view(state, catalog, claims, bound.by_node, takes, leaving);
    let plan = solve(&Problem {
        catalog,
        pools: &view.pools,
        existing: &view.existing,
        bound: &view.bound,
        pods,
        namespaces: bound.namespace_labels,
    });
    (view.node_pools, plan)
}

/// What a NodeClaim counts against its pool's limits: its launched capacity, or until then
/// the largest its candidate types could bring.
pub fn claim_capacity(claim: &NodeClaim, catalog: &[InstanceType]) -> Resources {
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

pub fn candidates<'a>(
    claim: &'a NodeClaim,
    catalog: &'a [InstanceType],
) -> impl Iterator<Item = &'a InstanceType> {
    candidate_indices(claim, catalog).map(|i| &catalog[i])
}

/// The catalog indices of the claim's candidate types.
fn candidate_indices<'a>(
    claim: &'a NodeClaim,
    catalog: &'a [InstanceType],
) -> impl Iterator<Item = usize> + 'a {
    let names: BTreeSet<&str> = claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == INSTANCE_TYPE_LABEL)
        .flat_map(|r| r.values.iter().map(String::as_str))
        .collect();
    (0..catalog.len()).filter(move |&i| names.contains(catalog[i].name.as_str()))
}

/// An in-flight NodeClaim as capacity for the simulation: what its launched type allocates,
/// or until it launched what its smallest candidate would (as its pool's `allocatable` has
/// it), less its pool's DaemonSets and the pods already bound to its Node. The pods it was
/// made for are not taken out: while they wait, they are planned onto it again.
pub fn in_flight_node(
    claim: &NodeClaim,
    catalog: &[InstanceType],
    pool_allocatable: &HashMap<usize, Resources>,
    daemon_overhead: Resources,
    bound: &[Arc<Pod>],
) -> ExistingNode {
    let launched = claim
        .status
        .as_ref()
        .map(|s| &s.allocatable)
        .filter(|a| !a.is_empty());
    let allocatable = match launched {
        Some(allocatable) => Resources::from_list(allocatable),
        None => candidate_indices(claim, catalog)
            .map(|i| {
                pool_allocatable
                    .get(&i)
                    .copied()
                    .unwrap_or(catalog[i].allocatable)
            })
            .reduce(|a, b| a.min(&b))
            .unwrap_or_default(),
    };
    let requested = bound
        .iter()
        .filter(|pod| !is_daemon_pod(pod))
        .filter_map(|pod| pod.spec.as_ref())
        .fold(daemon_overhead, |sum, spec| sum + Resources::of_pod(spec));
    let mut labels: BTreeMap<String, String> = claim.labels().clone();
    for requirement in &claim.spec.requirements {
        if let [value] = requirement.values.as_slice()
            && requirement.operator == RequirementOperator::In
        {
            labels.insert(canonical(&requirement.key).to_owned(), value.clone());
        }
    }
    add_own_keys(&mut labels);
    ExistingNode {
        name: claim.name_any(),
        labels,
        taints: claim.spec.taints.clone(),
        allocatable,
        requested,
        host_ports: Vec::new(),
        topology_only: false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduling::catalog;

    const GIB: i64 = 1 << 30;

    fn claim(status: Value) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "default-abc", "labels": {"windlass.dev/nodepool": "default"}},
            "spec": {
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large", "m5.xlarge"]},
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]}
                ],
                "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"},
                "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}
            },
            "status": status
        }))
        .unwrap()
    }

    fn pod(cpu: &str, owner: Option<&str>) -> Arc<Pod> {
        let owners: Vec<Value> = owner
            .map(|kind| json!({"apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": "u"}))
            .into_iter()
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "ownerReferences": owners},
                "spec": {"nodeName": "node-1", "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu}}}
                ]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn an_in_flight_claim_keeps_room_for_the_pods_it_was_made_for() {
        let catalog = catalog::bundled();
        let m5_large = catalog.iter().find(|it| it.name == "m5.large").unwrap();
        let overhead = Resources {
            cpu: 100,
            memory: GIB / 4,
            pods: 1,
            ..Resources::default()
        };
        let waiting = in_flight_node(&claim(json!({})), &catalog, &HashMap::new(), overhead, &[]);
        assert_eq!(
            waiting.allocatable, m5_large.allocatable,
            "the smallest candidate"
        );
        assert_eq!(
            waiting.requested, overhead,
            "the pods it was made for are not taken out"
        );
        assert_eq!(waiting.labels[ZONE_LABEL], "us-east-1a");

        let bound = [pod("500m", None), pod("250m", Some("DaemonSet"))];
        let running = in_flight_node(
            &claim(json!({"allocatable": {"cpu": "3920m", "memory": "14Gi", "pods": "58"}})),
            &catalog,
            &HashMap::new(),
            overhead,
            &bound,
        );
        assert_eq!(
            running.allocatable.cpu, 3920,
            "what the launched type allocates"
        );
        assert_eq!(
            running.requested.cpu, 600,
            "the bound pod counts; the DaemonSet pod is in the overhead already"
        );
    }

    #[test]
    fn a_claim_counts_its_launched_capacity_or_its_largest_candidate() {
        let catalog = catalog::bundled();
        let m5_xlarge = catalog.iter().find(|it| it.name == "m5.xlarge").unwrap();
        assert_eq!(
            claim_capacity(&claim(json!({})), &catalog),
            m5_xlarge.capacity
        );
        let launched = claim(json!({"capacity": {"cpu": "2", "memory": "8Gi", "pods": "29"}}));
        assert_eq!(claim_capacity(&launched, &catalog).cpu, 2000);
    }

    #[test]
    fn a_claim_takes_pods_until_shortly_after_it_is_initialized() {
        let now = Timestamp::now();
        let initialized = |ago: i64| {
            claim(json!({"conditions": [{
                "type": "Initialized", "status": "True", "reason": "Initialized", "message": "",
                "lastTransitionTime": (now - SignedDuration::from_secs(ago)).to_string()
            }]}))
        };
        assert!(takes_pods(&claim(json!({})), now), "in flight");
        assert!(
            takes_pods(&initialized(10), now),
            "the scheduler is binding its pods"
        );
        assert!(!takes_pods(&initialized(60), now), "topology only");
        let mut deleting = claim(json!({}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert!(!takes_pods(&deleting, now));
    }

    #[test]
    fn only_pods_the_scheduler_marked_unschedulable_are_pending() {
        let pending = |node: Option<&str>, reason: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": {"nodeName": node, "containers": []},
                "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": reason}]}
            }))
            .unwrap()
        };
        assert!(is_unschedulable(&pending(None, "Unschedulable")));
        assert!(!is_unschedulable(&pending(None, "SchedulingGated")));
        assert!(!is_unschedulable(&pending(Some("node-1"), "Unschedulable")));
    }

    #[test]
    fn pools_narrow_to_a_ready_node_class_or_say_why_they_cannot_launch() {
        let catalog = catalog::bundled();
        let pool = |class: &str| -> Arc<NodePool> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool",
                    "metadata": {"name": format!("on-{class}")},
                    "spec": {"template": {"spec": {
                        "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": class},
                        "requirements": []
                    }}}
                }))
                .unwrap(),
            )
        };
        let class = |name: &str, ready: &str, message: &str| -> Arc<EC2NodeClass> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass",
                    "metadata": {"name": name},
                    "spec": {"role": "r", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                             "subnetSelectorTerms": [{"id": "subnet-1"}], "securityGroupSelectorTerms": [{"id": "sg-1"}]},
                    "status": {
                        "conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": message,
                                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                        "subnets": [{"id": "subnet-1", "zone": "us-east-1b"}],
                        "amis": [{"id": "ami-1", "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]
                    }
                }))
                .unwrap(),
            )
        };
        let classes = [
            class("ready", "True", ""),
            class("broken", "False", "no subnet matches"),
        ];
        let (pools, inputs) = pool_inputs(
            vec![pool("ready"), pool("broken"), pool("missing")],
            &classes,
            &[],
            &catalog,
        );
        assert_eq!(pools.len(), 3);
        assert!(inputs[0].not_ready.is_none());
        assert!(inputs[0].requirements.allows(ZONE_LABEL, "us-east-1b"));
        assert!(!inputs[0].requirements.allows(ZONE_LABEL, "us-east-1a"));
        assert!(!inputs[0].requirements.allows(ARCH_LABEL, "amd64"));
        assert_eq!(
            inputs[1].not_ready.as_deref(),
            Some("EC2NodeClass broken is not ready: no subnet matches")
        );
        assert_eq!(
            inputs[2].not_ready.as_deref(),
            Some("EC2NodeClass missing does not exist")
        );
        assert!(inputs[0].allocatable.is_empty(), "no kubelet settings");

        let mut limited = (*class("ready", "True", "")).clone();
        limited.spec.kubelet = Some(serde_json::from_value(json!({"maxPods": 5})).unwrap());
        let (_, inputs) = pool_inputs(vec![pool("ready")], &[Arc::new(limited)], &[], &catalog);
        let m5_large = catalog.iter().position(|it| it.name == "m5.large").unwrap();
        let allocatable = inputs[0].allocatable[&m5_large];
        assert_eq!(allocatable.pods, 5);
        assert_eq!(
            allocatable.memory,
            catalog[m5_large].allocatable.memory + (11 * (29 - 5)) * (1 << 20),
            "kube-reserved memory follows the max pods"
        );
    }
}
