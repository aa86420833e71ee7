//! What the scheduling simulation needs from a pod, read once from its spec: requests, node
//! requirements (nodeSelector with each required node-affinity term), tolerations, topology
//! spread, pod (anti-)affinity and host ports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::requirements::{Requirement, Requirements};
use super::resources::{self, Resources};
use crate::apis::labels::{HOSTNAME_LABEL, ZONE_LABEL};
use crate::apis::node_pool::RequirementOperator;

/// A constraint of a pod's spec that the simulation cannot honour, so it plans nothing for it
/// rather than plan it wrongly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodShapeError {
    #[error("topology key {0:?} is not supported")]
    TopologyKey(String),
    #[error("node affinity operator {0:?} is not known")]
    Operator(String),
    #[error(
        "it requests {0}, which no instance type brings (a launched node has {requestable})",
        requestable = resources::requestable()
    )]
    UncountedResource(String),
    #[error(transparent)]
    Volume(#[from] super::volumes::VolumeError),
    /// Its node selector and affinity, and its volumes' topology, admit no node together.
    #[error(
        "its volumes can be reached only where its node affinity does not allow ({key} {wanted})"
    )]
    VolumeTopology { key: String, wanted: String },
}

/// A taint of the node or NodePool that the pod does not tolerate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("taint {key}={value}:{effect} is not tolerated")]
pub struct Untolerated {
    pub key: String,
    pub value: String,
    pub effect: String,
}

/// The topology domains the simulation understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopologyKey {
    Zone,
    Hostname,
}

impl TopologyKey {
    fn parse(key: &str) -> Result<Self, PodShapeError> {
        match key {
            ZONE_LABEL => Ok(Self::Zone),
            HOSTNAME_LABEL => Ok(Self::Hostname),
            other => Err(PodShapeError::TopologyKey(other.to_owned())),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TermKind {
    /// Topology spread with this maxSkew (whenUnsatisfiable: DoNotSchedule), counting pods only
    /// on nodes the pod's node selector and affinity allow (`nodeAffinityPolicy: Honor`, the
    /// default).
    Spread(i32),
    /// The same with `nodeAffinityPolicy: Ignore`: pods on every node count.
    SpreadOverAllNodes(i32),
    Affinity,
    AntiAffinity,
}

/// One scheduling term that counts pods: its kind, domain, namespace and selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term {
    pub kind: TermKind,
    pub key: TopologyKey,
    pub namespace: String,
    pub selector: Selector,
}

/// A label selector: matchLabels and matchExpressions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<(String, String, Vec<String>)>,
}

impl Selector {
    /// Matches pods carrying all of these labels.
    pub fn with_labels(labels: BTreeMap<String, String>) -> Self {
        Self {
            labels,
            expressions: Vec::new(),
        }
    }

    fn from(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Self::default();
        };
        Self {
            labels: selector.match_labels.clone().unwrap_or_default(),
            expressions: selector
                .match_expressions
                .iter()
                .flatten()
                .map(|e| {
                    (
                        e.key.clone(),
                        e.operator.clone(),
                        e.values.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, operator, values)| {
                let value = labels.get(key);
                match operator.as_str() {
                    "In" => value.is_some_and(|v| values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PodShape {
    /// `namespace/name`.
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub requests: Resources,
    /// Alternatives (one per required node-affinity term, each narrowed to where the pod's
    /// volumes can be reached); a node must satisfy one.
    pub requirements: Vec<Requirements>,
    /// The pod's own node selector and affinity, where its volumes narrowed `requirements`:
    /// as in the kube-scheduler, a zone spread counts the nodes these allow, not its volumes'.
    pub node_affinity: Option<Vec<Requirements>>,
    pub tolerations: Vec<Toleration>,
    pub terms: Vec<Term>,
    /// (protocol, port) pairs the pod takes on its node.
    pub host_ports: Vec<(String, i32)>,
}

impl PodShape {
    /// Reads a pod to place; a constraint the simulation cannot honour, or a resource no
    /// instance type brings, is an error naming it.
    pub fn from_pod(pod: &Pod) -> Result<Self, PodShapeError> {
        let spec = pod.spec.as_ref();
        if let Some(name) = spec.and_then(resources::uncounted_request) {
            return Err(PodShapeError::UncountedResource(name));
        }
        Self::on_node(pod)
    }

    /// Reads a pod that has its node, for the topology it counts in there: whatever it
    /// requests, its node has room for it.
    pub fn on_node(pod: &Pod) -> Result<Self, PodShapeError> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{namespace}/{}",
            pod.metadata.name.clone().unwrap_or_default()
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let mut selector_requirements = Requirements::default();
        for (key, value) in spec.node_selector.iter().flatten() {
            selector_requirements.add(key, Requirement::one_of([value.clone()]));
        }
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_terms = affinity
            .node_affinity
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        let mut requirements = Vec::new();
        for term in &node_terms {
            let mut alternative = selector_requirements.clone();
            for expression in term.match_expressions.iter().flatten() {
                let operator = parse_operator(&expression.operator)
                    .ok_or_else(|| PodShapeError::Operator(expression.operator.clone()))?;
                alternative.add(
                    &expression.key,
                    Requirement::new(operator, expression.values.as_deref().unwrap_or_default()),
                );
            }
            requirements.push(alternative);
        }
        if requirements.is_empty() {
            requirements.push(selector_requirements);
        }

        let mut terms = Vec::new();
        for spread in spec.topology_spread_constraints.iter().flatten() {
            if spread.when_unsatisfiable != "DoNotSchedule" {
                continue;
            }
            let kind = match spread.node_affinity_policy.as_deref() {
                Some("Ignore") => TermKind::SpreadOverAllNodes(spread.max_skew),
                _ => TermKind::Spread(spread.max_skew),
            };
            terms.push(Term {
                kind,
                key: TopologyKey::parse(&spread.topology_key)?,
                namespace: namespace.clone(),
                selector: Selector::from(spread.label_selector.as_ref()),
            });
        }
        let affinity_terms = [
            (
                affinity
                    .pod_affinity
                    .and_then(|a| a.required_during_scheduling_ignored_during_execution),
                TermKind::Affinity,
            ),
            (
                affinity
                    .pod_anti_affinity
                    .and_then(|a| a.required_during_scheduling_ignored_during_execution),
                TermKind::AntiAffinity,
            ),
        ];
        for (list, kind) in affinity_terms {
            for term in list.unwrap_or_default() {
                terms.push(affinity_term(term, kind, &namespace)?);
            }
        }
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                p.host_port
                    .map(|port| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
            })
            .collect();
        Ok(Self {
            name,
            namespace,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            requests: Resources::of_pod(&spec),
            requirements,
            node_affinity: None,
            tolerations: spec.tolerations.unwrap_or_default(),
            terms,
            host_ports,
        })
    }

    /// The same pod placed only where its volumes can be reached: each of its own alternatives
    /// with each of `volumes`' (a node must satisfy one). A combination no node can satisfy is
    /// dropped; if none is left, the error names a key on which they conflict.
    pub fn within_volume_topology(
        mut self,
        volumes: &[Requirements],
    ) -> Result<Self, PodShapeError> {
        let combined = super::volumes::and(&self.requirements, volumes);
        let satisfiable = super::volumes::satisfiable(combined).map_err(|key| {
            let wanted = volumes
                .iter()
                .filter_map(|alternative| alternative.get(&key))
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            PodShapeError::VolumeTopology { key, wanted }
        })?;
        self.node_affinity = Some(std::mem::replace(&mut self.requirements, satisfiable));
        Ok(self)
    }

    /// The pod's own node selector and affinity alternatives, without its volumes'.
    pub fn node_affinity(&self) -> &[Requirements] {
        self.node_affinity.as_deref().unwrap_or(&self.requirements)
    }

    /// Whether the pod tolerates every NoSchedule and NoExecute taint.
    pub fn tolerates(&self, taints: &[Taint]) -> Result<(), Untolerated> {
        match taints
            .iter()
            .filter(|t| t.effect != "PreferNoSchedule")
            .find(|taint| !self.tolerations.iter().any(|t| tolerates(t, taint)))
        {
            Some(taint) => Err(Untolerated {
                key: taint.key.clone(),
                value: taint.value.clone().unwrap_or_default(),
                effect: taint.effect.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn affinity_term(
    term: PodAffinityTerm,
    kind: TermKind,
    namespace: &str,
) -> Result<Term, PodShapeError> {
    Ok(Term {
        kind,
        key: TopologyKey::parse(&term.topology_key)?,
        namespace: term
            .namespaces
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| namespace.to_owned()),
        selector: Selector::from(term.label_selector.as_ref()),
    })
}

pub(super) fn parse_operator(operator: &str) -> Option<RequirementOperator> {
    Some(match operator {
        "In" => RequirementOperator::In,
        "NotIn" => RequirementOperator::NotIn,
        "Exists" => RequirementOperator::Exists,
        "DoesNotExist" => RequirementOperator::DoesNotExist,
        "Gt" => RequirementOperator::Gt,
        "Lt" => RequirementOperator::Lt,
        _ => return None,
    })
}

/// Kubernetes' toleration rule.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_matches = toleration
        .effect
        .as_deref()
        .is_none_or(|effect| effect.is_empty() || effect == taint.effect);
    let key_matches = match toleration.key.as_deref() {
        None | Some("") => toleration.operator.as_deref() == Some("Exists"),
        Some(key) => key == taint.key,
    };
    let value_matches = match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    };
    effect_matches && key_matches && value_matches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(json: serde_json::Value) -> Result<PodShape, PodShapeError> {
        PodShape::from_pod(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn reads_every_constraint() {
        let pod = shape(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]},
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}
                    ]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}
                    ]}
                },
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}},
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
                ],
                "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}],
                                "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        assert_eq!(pod.requirements.len(), 2);
        assert!(pod.requirements[1].allows("topology.kubernetes.io/zone", "b"));
        assert!(!pod.requirements[1].allows("kubernetes.io/arch", "amd64"));
        assert_eq!(pod.terms.len(), 2);
        assert!(pod.terms[1].selector.matches(&pod.labels));
        assert_eq!(pod.host_ports, [("TCP".to_owned(), 8080)]);
        assert_eq!(pod.requests.cpu, 1000);
    }

    #[test]
    fn unsupported_topology_keys_are_named() {
        let error = shape(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"}]}
        }))
        .unwrap_err();
        assert_eq!(error, PodShapeError::TopologyKey("rack".into()));
        assert_eq!(error.to_string(), "topology key \"rack\" is not supported");
    }

    #[test]
    fn tolerations_follow_kubernetes_rules() {
        let taint = |key: &str, value: &str, effect: &str| Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        };
        let pod = shape(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "tolerations": [
                {"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists"}
            ]}
        }))
        .unwrap();
        assert!(pod.tolerates(&[taint("gpu", "true", "NoSchedule")]).is_ok());
        assert!(
            pod.tolerates(&[taint("spot", "anything", "NoExecute")])
                .is_ok()
        );
        assert!(
            pod.tolerates(&[taint("other", "x", "PreferNoSchedule")])
                .is_ok()
        );
        let refused = pod
            .tolerates(&[taint("gpu", "false", "NoSchedule")])
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "taint gpu=false:NoSchedule is not tolerated"
        );
    }

    #[test]
    fn a_resource_no_instance_type_brings_is_refused_for_placement_only() {
        let pod = |resources: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {
                    "initContainers": [{"name": "setup", "resources": resources}],
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}]
                }
            }))
            .unwrap()
        };
        let hugepages =
            pod(serde_json::json!({"limits": {"hugepages-2Mi": "64Mi", "memory": "1Gi"}}));
        let refused = PodShape::from_pod(&hugepages).unwrap_err();
        assert_eq!(
            refused,
            PodShapeError::UncountedResource("hugepages-2Mi".into())
        );
        assert_eq!(
            refused.to_string(),
            "it requests hugepages-2Mi, which no instance type brings (a launched node has cpu, \
             memory, ephemeral-storage, nvidia.com/gpu, amd.com/gpu, aws.amazon.com/neuron, \
             aws.amazon.com/neuroncore, vpc.amazonaws.com/efa)"
        );
        assert!(
            PodShape::on_node(&hugepages).is_ok(),
            "a pod already on a node still counts for topology"
        );
        let device = pod(serde_json::json!({"requests": {"example.com/fpga": "1"}}));
        assert_eq!(
            PodShape::from_pod(&device),
            Err(PodShapeError::UncountedResource("example.com/fpga".into()))
        );
        let branch_interface =
            pod(serde_json::json!({"requests": {"vpc.amazonaws.com/pod-eni": "1"}}));
        assert_eq!(
            PodShape::from_pod(&branch_interface)
                .unwrap()
                .requests
                .nvidia_gpu,
            1,
            "the VPC resource controller grants pod-eni once the node joins"
        );
    }
}
