//! What the scheduling simulation needs from a pod, read once from its spec: requests, node
//! requirements (nodeSelector with each required node-affinity term), tolerations, topology
//! spread, pod (anti-)affinity, host ports, and the preferences (preferred affinities and
//! ScheduleAnyway spreads) it holds for as long as they can be met.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, Pod, PodAffinityTerm, Taint, Toleration, WeightedPodAffinityTerm,
};
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
    Spread(Spread),
    Affinity,
    AntiAffinity,
}

/// A topology spread constraint's rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spread {
    pub max_skew: i32,
    /// Below this many eligible domains the global minimum counts as 0, so each domain takes
    /// at most `max_skew` matching pods.
    pub min_domains: i32,
    /// Count pods only on nodes the pod's node selector and affinity allow
    /// (`nodeAffinityPolicy: Honor`, the default); `false` for `Ignore`.
    pub honor_node_affinity: bool,
}

impl Spread {
    pub fn max_skew(max_skew: i32) -> Self {
        Self {
            max_skew,
            min_domains: 1,
            honor_node_affinity: true,
        }
    }
}

/// The namespaces whose pods a term counts: those it lists, and with a `namespaceSelector`
/// every namespace whose labels match it (an empty selector matches all).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespaces {
    pub names: BTreeSet<String>,
    pub selector: Option<Selector>,
}

impl Namespaces {
    /// Only the owning pod's namespace: a term that names none and selects none.
    pub fn only(namespace: &str) -> Self {
        Self {
            names: BTreeSet::from([namespace.to_owned()]),
            selector: None,
        }
    }

    /// Whether pods in `namespace` count, given the labels of every namespace. A namespace
    /// not in `namespace_labels` has only the label the API server gives every namespace.
    pub fn includes(&self, namespace: &str, namespace_labels: &NamespaceLabels) -> bool {
        self.names.contains(namespace)
            || self.selector.as_ref().is_some_and(|selector| {
                match namespace_labels.get(namespace) {
                    Some(labels) => selector.matches(labels),
                    None => selector.matches(&BTreeMap::from([(
                        NAMESPACE_NAME_LABEL.to_owned(),
                        namespace.to_owned(),
                    )])),
                }
            })
    }
}

/// The label the API server sets on every namespace, to its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Each namespace's labels, for pod affinity's `namespaceSelector`.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// One scheduling term that counts pods: its kind, domain, namespaces and selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Term {
    pub kind: TermKind,
    pub key: TopologyKey,
    pub namespaces: Namespaces,
    pub selector: Selector,
}

/// A soft constraint, respected while the pod can be placed with it and given up otherwise,
/// in Karpenter's order: preferred pod affinity, preferred pod anti-affinity, preferred node
/// affinity (each heaviest first), then ScheduleAnyway spreads.
#[derive(Clone, Debug, PartialEq)]
pub enum Preference {
    /// A preferred node-affinity term. Only the first one still held applies, narrowing every
    /// required alternative, as Karpenter treats the heaviest preference as a requirement.
    Node(Requirements),
    /// A preferred pod (anti-)affinity term or a ScheduleAnyway spread: it constrains its own
    /// pod only while that pod holds the preference, and never keeps another pod away.
    Term(Term),
}

/// A label selector: matchLabels and matchExpressions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<(String, String, Vec<String>)>,
    /// A term with no selector at all matches no pod, as the kube-scheduler reads it.
    matches_nothing: bool,
}

impl Selector {
    /// Matches pods carrying all of these labels.
    pub fn with_labels(labels: BTreeMap<String, String>) -> Self {
        Self {
            labels,
            ..Self::default()
        }
    }

    fn from(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Self {
                matches_nothing: true,
                ..Self::default()
            };
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
            matches_nothing: false,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matches_nothing
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
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
    /// In the order they are given up when the pod cannot be placed with them.
    pub preferences: Vec<Preference>,
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
        let node_affinity = affinity.node_affinity;
        let node_terms = node_affinity
            .clone()
            .and_then(|a| a.required_during_scheduling_ignored_during_execution)
            .map(|r| r.node_selector_terms)
            .unwrap_or_default();
        let mut requirements = Vec::new();
        for term in &node_terms {
            let mut alternative = selector_requirements.clone();
            add_expressions(&mut alternative, term.match_expressions.iter().flatten())?;
            requirements.push(alternative);
        }
        if requirements.is_empty() {
            requirements.push(selector_requirements);
        }

        let mut terms = Vec::new();
        let mut preferred_spreads = Vec::new();
        for spread in spec.topology_spread_constraints.iter().flatten() {
            let preferred = spread.when_unsatisfiable != "DoNotSchedule";
            let key = match TopologyKey::parse(&spread.topology_key) {
                Ok(key) => key,
                // A preference the simulation cannot count is one it cannot be refused for.
                Err(_) if preferred => continue,
                Err(error) => return Err(error),
            };
            let term = Term {
                kind: TermKind::Spread(Spread {
                    max_skew: spread.max_skew,
                    min_domains: spread.min_domains.unwrap_or(1),
                    honor_node_affinity: spread.node_affinity_policy.as_deref() != Some("Ignore"),
                }),
                key,
                namespaces: Namespaces::only(&namespace),
                selector: Selector::from(spread.label_selector.as_ref()),
            };
            if preferred {
                preferred_spreads.push(Preference::Term(term));
            } else {
                terms.push(term);
            }
        }
        let (pod_affinity, pod_anti_affinity) = (
            affinity.pod_affinity.unwrap_or_default(),
            affinity.pod_anti_affinity.unwrap_or_default(),
        );
        let required = [
            (
                pod_affinity.required_during_scheduling_ignored_during_execution,
                TermKind::Affinity,
            ),
            (
                pod_anti_affinity.required_during_scheduling_ignored_during_execution,
                TermKind::AntiAffinity,
            ),
        ];
        for (list, kind) in required {
            for term in list.unwrap_or_default() {
                terms.push(affinity_term(term, kind, &namespace)?);
            }
        }

        let mut preferences = Vec::new();
        let preferred = [
            (
                pod_affinity.preferred_during_scheduling_ignored_during_execution,
                TermKind::Affinity,
            ),
            (
                pod_anti_affinity.preferred_during_scheduling_ignored_during_execution,
                TermKind::AntiAffinity,
            ),
        ];
        for (list, kind) in preferred {
            for weighted in
                heaviest_first(list.unwrap_or_default(), |t: &WeightedPodAffinityTerm| {
                    t.weight
                })
            {
                if let Ok(term) = affinity_term(weighted.pod_affinity_term, kind, &namespace) {
                    preferences.push(Preference::Term(term));
                }
            }
        }
        let preferred_node_terms = heaviest_first(
            node_affinity
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
                .unwrap_or_default(),
            |t| t.weight,
        );
        for term in preferred_node_terms {
            let mut preference = Requirements::default();
            add_expressions(
                &mut preference,
                term.preference.match_expressions.iter().flatten(),
            )?;
            preferences.push(Preference::Node(preference));
        }
        preferences.extend(preferred_spreads);
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
            preferences,
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

/// A pod (anti-)affinity term as the kube-scheduler reads it: the namespaces it lists and
/// those its `namespaceSelector` matches, or else only the pod's own.
fn affinity_term(
    term: PodAffinityTerm,
    kind: TermKind,
    namespace: &str,
) -> Result<Term, PodShapeError> {
    let names: BTreeSet<String> = term.namespaces.unwrap_or_default().into_iter().collect();
    let namespaces = match term.namespace_selector {
        None if names.is_empty() => Namespaces::only(namespace),
        selector => Namespaces {
            names,
            selector: selector.as_ref().map(|s| Selector::from(Some(s))),
        },
    };
    Ok(Term {
        kind,
        key: TopologyKey::parse(&term.topology_key)?,
        namespaces,
        selector: Selector::from(term.label_selector.as_ref()),
    })
}

fn add_expressions<'a>(
    requirements: &mut Requirements,
    expressions: impl Iterator<Item = &'a NodeSelectorRequirement>,
) -> Result<(), PodShapeError> {
    for expression in expressions {
        let operator = parse_operator(&expression.operator)
            .ok_or_else(|| PodShapeError::Operator(expression.operator.clone()))?;
        requirements.add(
            &expression.key,
            Requirement::new(operator, expression.values.as_deref().unwrap_or_default()),
        );
    }
    Ok(())
}

/// Preferred terms in the order Karpenter gives them up: the heaviest first, ties as written.
fn heaviest_first<T>(mut terms: Vec<T>, weight: impl Fn(&T) -> i32) -> Vec<T> {
    terms.sort_by_key(|t| std::cmp::Reverse(weight(t)));
    terms
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
        assert_eq!(
            pod.preferences.len(),
            1,
            "the ScheduleAnyway spread is a preference"
        );
        assert!(pod.terms[1].selector.matches(&pod.labels));
        assert_eq!(pod.host_ports, [("TCP".to_owned(), 8080)]);
        assert_eq!(pod.requests.cpu, 1000);
    }

    #[test]
    fn preferences_are_read_in_the_order_karpenter_gives_them_up() {
        let term = |app: &str| serde_json::json!({"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": app}}});
        let zone = |z: &str| serde_json::json!({"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": [z]}]});
        let pod = shape(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "containers": [],
                "topologySpreadConstraints": [
                    {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
                    {"maxSkew": 1, "minDomains": 3, "nodeAffinityPolicy": "Ignore", "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}
                ],
                "affinity": {
                    "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": zone("light")},
                        {"weight": 50, "preference": zone("heavy")}
                    ]},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 10, "podAffinityTerm": term("anti")}
                    ]},
                    "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 5, "podAffinityTerm": term("near-light")},
                        {"weight": 90, "podAffinityTerm": term("near-heavy")}
                    ]}
                }
            }
        }))
        .unwrap();
        assert_eq!(
            pod.terms[0].kind,
            TermKind::Spread(Spread {
                max_skew: 1,
                min_domains: 3,
                honor_node_affinity: false
            })
        );
        assert_eq!(
            pod.terms.len(),
            1,
            "only the DoNotSchedule spread is required"
        );
        let described: Vec<String> = pod
            .preferences
            .iter()
            .map(|preference| match preference {
                Preference::Node(requirements) if requirements.allows(ZONE_LABEL, "heavy") => {
                    "node heavy".to_owned()
                }
                Preference::Node(_) => "node light".to_owned(),
                Preference::Term(term) => format!("{:?} {:?}", term.kind, term.selector),
            })
            .collect();
        assert_eq!(described.len(), 6, "{described:?}");
        assert!(described[0].starts_with("Affinity") && described[0].contains("near-heavy"));
        assert!(described[1].starts_with("Affinity") && described[1].contains("near-light"));
        assert!(described[2].starts_with("AntiAffinity"));
        assert_eq!(described[3..5], ["node heavy", "node light"]);
        assert!(described[5].starts_with("Spread"));
    }

    #[test]
    fn affinity_terms_count_every_listed_and_selected_namespace() {
        let pod = shape(serde_json::json!({
            "metadata": {"name": "p", "namespace": "own"},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "namespaces": ["a", "b"]},
                {"topologyKey": "kubernetes.io/hostname", "namespaceSelector": {}},
                {"topologyKey": "kubernetes.io/hostname", "namespaces": ["a"], "namespaceSelector": {"matchLabels": {"team": "x"}}},
                {"topologyKey": "kubernetes.io/hostname"}
            ]}}}
        }))
        .unwrap();
        let labels = NamespaceLabels::from([
            ("a".to_owned(), BTreeMap::new()),
            ("b".to_owned(), BTreeMap::new()),
            (
                "c".to_owned(),
                BTreeMap::from([("team".to_owned(), "x".to_owned())]),
            ),
            ("own".to_owned(), BTreeMap::new()),
        ]);
        let counted = |term: &Term| -> Vec<&str> {
            ["a", "b", "c", "own"]
                .into_iter()
                .filter(|n| term.namespaces.includes(n, &labels))
                .collect()
        };
        assert_eq!(counted(&pod.terms[0]), ["a", "b"]);
        assert_eq!(
            counted(&pod.terms[1]),
            ["a", "b", "c", "own"],
            "{{}} selects all"
        );
        assert_eq!(counted(&pod.terms[2]), ["a", "c"]);
        assert_eq!(counted(&pod.terms[3]), ["own"]);
        let unlisted = NamespaceLabels::new();
        assert!(
            pod.terms[1].namespaces.includes("new", &unlisted),
            "{{}} selects all"
        );
        let by_name = Namespaces {
            names: BTreeSet::new(),
            selector: Some(Selector::with_labels(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                "new".to_owned(),
            )]))),
        };
        assert!(by_name.includes("new", &unlisted));
        assert!(!by_name.includes("other", &unlisted));
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
