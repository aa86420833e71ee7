//! Node requirements as sets of allowed label values, with Karpenter's operators (In, NotIn,
//! Exists, DoesNotExist, Gt, Lt). A requirement is the set of values a node's label may take,
//! plus whether the label may be absent; intersecting two says what satisfies both.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::apis::labels::canonical;
use crate::apis::node_pool::{NodeSelectorRequirementWithMinValues, RequirementOperator};

/// The label values one key may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// `values` lists what is excluded rather than what is allowed.
    complement: bool,
    values: BTreeSet<String>,
    /// Integer bounds (exclusive), for Gt and Lt; a bounded key's values must be integers.
    greater_than: Option<i64>,
    less_than: Option<i64>,
    /// Whether a node without the label satisfies it.
    absent_allowed: bool,
    /// Karpenter's `minValues`: a NodeClaim keeps candidate types with at least this many
    /// distinct values of the label.
    min_values: Option<usize>,
}

impl Requirement {
    /// Any value, or no label at all.
    pub fn any() -> Self {
        Self {
            complement: true,
            values: BTreeSet::new(),
            greater_than: None,
            less_than: None,
            absent_allowed: true,
            min_values: None,
        }
    }

    pub fn new(operator: RequirementOperator, values: &[String]) -> Self {
        let set = || values.iter().cloned().collect::<BTreeSet<_>>();
        let bound = || values.first().and_then(|v| v.parse::<i64>().ok());
        let base = Self::any();
        match operator {
            RequirementOperator::In => Self {
                complement: false,
                values: set(),
                absent_allowed: false,
                ..base
            },
            RequirementOperator::NotIn => Self {
                values: set(),
                ..base
            },
            RequirementOperator::Exists => Self {
                absent_allowed: false,
                ..base
            },
            RequirementOperator::DoesNotExist => Self {
                complement: false,
                ..base
            },
            RequirementOperator::Gt => Self {
                greater_than: bound(),
                absent_allowed: false,
                ..base
            },
            RequirementOperator::Lt => Self {
                less_than: bound(),
                absent_allowed: false,
                ..base
            },
        }
    }

    /// The same, asking for at least `min_values` distinct values among a NodeClaim's types.
    pub fn with_min_values(self, min_values: Option<usize>) -> Self {
        Self { min_values, ..self }
    }

    pub fn min_values(&self) -> Option<usize> {
        self.min_values
    }

    pub fn one_of<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        Self {
            complement: false,
            values: values.into_iter().map(Into::into).collect(),
            absent_allowed: false,
            ..Self::any()
        }
    }

    /// Whether a node whose label has this value satisfies the requirement.
    pub fn allows(&self, value: &str) -> bool {
        if self.greater_than.is_some() || self.less_than.is_some() {
            let Ok(number) = value.parse::<i64>() else {
                return false;
            };
            if self.greater_than.is_some_and(|bound| number <= bound)
                || self.less_than.is_some_and(|bound| number >= bound)
            {
                return false;
            }
        }
        self.complement != self.values.contains(value)
    }

    pub fn allows_absent(&self) -> bool {
        self.absent_allowed
    }

    /// The values satisfying both.
    pub fn intersect(&self, other: &Self) -> Self {
        let greater_than = self.greater_than.max(other.greater_than);
        let less_than = match (self.less_than, other.less_than) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (complement, values) = match (self.complement, other.complement) {
            (false, false) => (false, &self.values & &other.values),
            (true, true) => (true, &self.values | &other.values),
            (false, true) => (false, &self.values - &other.values),
            (true, false) => (false, &other.values - &self.values),
        };
        let mut result = Self {
            complement,
            values,
            greater_than,
            less_than,
            absent_allowed: self.absent_allowed && other.absent_allowed,
            min_values: self.min_values.max(other.min_values),
        };
        if !result.complement {
            let kept: BTreeSet<String> = result
                .values
                .iter()
                .filter(|value| result.allows(value))
                .cloned()
                .collect();
            result.values = kept;
        }
        result
    }

    /// Whether every node that satisfies `self` satisfies `other` too. `false` where that
    /// would take more than a look at both (it only costs the caller an intersection).
    pub fn is_within(&self, other: &Self) -> bool {
        if self.absent_allowed && !other.absent_allowed {
            return false;
        }
        if !self.complement {
            return self.values.iter().all(|value| other.allows(value));
        }
        other.complement
            && other.values.iter().all(|value| !self.allows(value))
            && other
                .greater_than
                .is_none_or(|bound| self.greater_than.is_some_and(|own| own >= bound))
            && other
                .less_than
                .is_none_or(|bound| self.less_than.is_some_and(|own| own <= bound))
    }

    /// Whether no node can satisfy it (not even by lacking the label).
    pub fn is_unsatisfiable(&self) -> bool {
        if self.absent_allowed {
            return false;
        }
        if !self.complement {
            return self.values.is_empty();
        }
        match (self.greater_than, self.less_than) {
            (Some(low), Some(high)) => high.saturating_sub(low) <= 1,
            _ => false,
        }
    }

    /// The same set as node selector requirements: one, or two with Gt and Lt bounds.
    pub fn to_node_selector(&self, key: &str) -> Vec<NodeSelectorRequirementWithMinValues> {
        let min_values = self.min_values.and_then(|m| i32::try_from(m).ok());
        let requirement = |operator, values: Vec<String>| NodeSelectorRequirementWithMinValues {
            key: key.to_owned(),
            min_values: min_values.filter(|_| {
                matches!(
                    operator,
                    RequirementOperator::In | RequirementOperator::Exists
                )
            }),
            operator,
            values,
        };
        let mut out = Vec::new();
        match (self.complement, self.values.is_empty(), self.absent_allowed) {
            (false, true, _) => {
                out.push(requirement(RequirementOperator::DoesNotExist, Vec::new()))
            }
            (false, false, _) => out.push(requirement(
                RequirementOperator::In,
                self.values.iter().cloned().collect(),
            )),
            (true, false, _) => out.push(requirement(
                RequirementOperator::NotIn,
                self.values.iter().cloned().collect(),
            )),
            (true, true, false) if self.greater_than.is_none() && self.less_than.is_none() => {
                out.push(requirement(RequirementOperator::Exists, Vec::new()))
            }
            (true, true, _) => {}
        }
        if self.complement {
            if let Some(bound) = self.greater_than {
                out.push(requirement(
                    RequirementOperator::Gt,
                    vec![bound.to_string()],
                ));
            }
            if let Some(bound) = self.less_than {
                out.push(requirement(
                    RequirementOperator::Lt,
                    vec![bound.to_string()],
                ));
            }
        }
        out
    }

    /// The one value allowed, when there is exactly one and the label must be set.
    pub fn single_value(&self) -> Option<&str> {
        let mut values = self.finite_values()?.iter().filter(|v| self.allows(v));
        match (values.next(), values.next()) {
            (Some(value), None) if !self.absent_allowed => Some(value),
            _ => None,
        }
    }

    /// The allowed values when they are a finite list.
    pub fn finite_values(&self) -> Option<&BTreeSet<String>> {
        (!self.complement).then_some(&self.values)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        match (self.complement, self.values.is_empty()) {
            (false, true) => write!(f, "DoesNotExist")?,
            (false, false) => write!(f, "In [{}]", list(&self.values))?,
            (true, true) if self.absent_allowed => write!(f, "Any")?,
            (true, true) => write!(f, "Exists")?,
            (true, false) => write!(f, "NotIn [{}]", list(&self.values))?,
        }
        if let Some(bound) = self.greater_than {
            write!(f, " >{bound}")?;
        }
        if let Some(bound) = self.less_than {
            write!(f, " <{bound}")?;
        }
        Ok(())
    }
}

/// Requirements on several keys; a key not listed allows anything. Karpenter's key for a
/// `windlass.dev/` label is the same key as that label's (`labels::canonical`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements(BTreeMap<String, Requirement>);

impl Requirements {
    pub fn from_node_pool(requirements: &[NodeSelectorRequirementWithMinValues]) -> Self {
        let mut result = Self::default();
        for requirement in requirements {
            let min_values = requirement.min_values.and_then(|m| usize::try_from(m).ok());
            result.add(
                &requirement.key,
                Requirement::new(requirement.operator, &requirement.values)
                    .with_min_values(min_values),
            );
        }
        result
    }

    /// Narrows `key` to also satisfy `requirement`.
    pub fn add(&mut self, key: &str, requirement: Requirement) {
        let key = canonical(key);
        let merged = match self.0.get(key) {
            Some(existing) => existing.intersect(&requirement),
            None => requirement,
        };
        self.0.insert(key.to_owned(), merged);
    }

    pub fn get(&self, key: &str) -> Option<&Requirement> {
        self.0.get(canonical(key))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Requirement)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same without any requirement on `key`.
    pub fn without(mut self, key: &str) -> Self {
        self.0.remove(canonical(key));
        self
    }

    /// As node selector requirements, for a NodeClaim's spec.
    pub fn to_node_selector(&self) -> Vec<NodeSelectorRequirementWithMinValues> {
        self.0
            .iter()
            .flat_map(|(key, requirement)| requirement.to_node_selector(key))
            .collect()
    }

    /// Whether a value for `key` is allowed (an unconstrained key allows everything).
    pub fn allows(&self, key: &str, value: &str) -> bool {
        self.get(key).is_none_or(|r| r.allows(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequirementOperator::*;

    fn req(operator: RequirementOperator, values: &[&str]) -> Requirement {
        Requirement::new(
            operator,
            &values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn operators_allow_what_kubernetes_allows() {
        let cases: [(Requirement, &[&str], &[&str], bool); 6] = [
            (req(In, &["a", "b"]), &["a", "b"], &["c"], false),
            (req(NotIn, &["a"]), &["b"], &["a"], true),
            (req(Exists, &[]), &["a", "z"], &[], false),
            (req(DoesNotExist, &[]), &[], &["a"], true),
            (req(Gt, &["4"]), &["5", "64"], &["4", "1", "x"], false),
            (req(Lt, &["8"]), &["7", "0"], &["8", "9", "x"], false),
        ];
        for (requirement, allowed, refused, absent) in cases {
            for value in allowed {
                assert!(requirement.allows(value), "{requirement} allows {value}");
            }
            for value in refused {
                assert!(!requirement.allows(value), "{requirement} refuses {value}");
            }
            assert_eq!(requirement.allows_absent(), absent, "{requirement}");
        }
    }

    #[test]
    fn intersections_keep_only_common_values() {
        let zone = req(In, &["a", "b"]).intersect(&req(NotIn, &["a"]));
        assert_eq!(zone.finite_values().unwrap().len(), 1);
        assert!(zone.allows("b"));
        assert!(
            req(In, &["a"])
                .intersect(&req(In, &["b"]))
                .is_unsatisfiable()
        );
        assert!(
            req(Gt, &["4"])
                .intersect(&req(Lt, &["5"]))
                .is_unsatisfiable()
        );
        assert!(
            !req(Gt, &["4"])
                .intersect(&req(Lt, &["6"]))
                .is_unsatisfiable()
        );
        assert!(
            req(Exists, &[])
                .intersect(&req(DoesNotExist, &[]))
                .is_unsatisfiable()
        );
        assert!(
            !req(NotIn, &["a"])
                .intersect(&req(DoesNotExist, &[]))
                .is_unsatisfiable()
        );
        let numbers = req(In, &["2", "8", "x"]).intersect(&req(Gt, &["4"]));
        assert_eq!(
            numbers.finite_values().unwrap().iter().collect::<Vec<_>>(),
            ["8"]
        );
    }

    #[test]
    fn requirements_round_trip_through_node_selectors() {
        let originals = [
            req(In, &["a", "b"]),
            req(NotIn, &["a"]),
            req(Exists, &[]),
            req(DoesNotExist, &[]),
            req(Gt, &["4"]),
            req(Gt, &["4"]).intersect(&req(Lt, &["9"])),
        ];
        for original in originals {
            let mut back = Requirements::default();
            for selector in original.to_node_selector("k") {
                back.add("k", Requirement::new(selector.operator, &selector.values));
            }
            assert_eq!(back.get("k"), Some(&original), "{original}");
        }
    }

    #[test]
    fn a_karpenter_key_is_the_same_requirement_as_its_windlass_key() {
        let mut requirements = Requirements::default();
        requirements.add(
            "karpenter.sh/capacity-type",
            req(In, &["spot", "on-demand"]),
        );
        requirements.add(
            crate::apis::labels::CAPACITY_TYPE_LABEL,
            req(NotIn, &["spot"]),
        );
        assert_eq!(requirements.iter().count(), 1);
        assert!(requirements.allows("karpenter.sh/capacity-type", "on-demand"));
        assert!(!requirements.allows(crate::apis::labels::CAPACITY_TYPE_LABEL, "spot"));
        assert_eq!(
            requirements
                .get("karpenter.sh/capacity-type")
                .and_then(Requirement::single_value),
            Some("on-demand")
        );
        assert!(
            requirements
                .without("karpenter.sh/capacity-type")
                .is_empty()
        );
    }

    #[test]
    fn only_a_required_lone_value_is_a_single_value() {
        assert_eq!(req(In, &["a"]).single_value(), Some("a"));
        assert_eq!(req(In, &["a", "b"]).single_value(), None);
        assert_eq!(req(NotIn, &["a"]).single_value(), None);
        assert_eq!(req(Exists, &[]).single_value(), None);
        assert_eq!(
            req(In, &["2", "8"])
                .intersect(&req(Gt, &["4"]))
                .single_value(),
            Some("8")
        );
    }

    #[test]
    fn within_means_every_value_allowed_by_one_is_allowed_by_the_other() {
        let cases = [
            (req(In, &["a"]), req(In, &["a", "b"]), true),
            (req(In, &["a", "c"]), req(In, &["a", "b"]), false),
            (req(In, &["a"]), req(NotIn, &["b"]), true),
            (req(In, &["a"]), req(Exists, &[]), true),
            (req(NotIn, &["a", "b"]), req(NotIn, &["a"]), true),
            (req(NotIn, &["a"]), req(NotIn, &["a", "b"]), false),
            (req(NotIn, &["a"]), req(Exists, &[]), false),
            (req(Exists, &[]), req(Exists, &[]), true),
            (req(DoesNotExist, &[]), req(NotIn, &["a"]), true),
            (req(DoesNotExist, &[]), req(In, &["a"]), false),
            (req(Gt, &["8"]), req(Gt, &["4"]), true),
            (req(Gt, &["4"]), req(Gt, &["8"]), false),
            (req(In, &["2", "6"]), req(Lt, &["7"]), true),
            (req(Lt, &["9"]), req(Lt, &["7"]), false),
        ];
        for (narrow, wide, within) in cases {
            assert_eq!(narrow.is_within(&wide), within, "{narrow} within {wide}");
            if within {
                let both = narrow.intersect(&wide);
                assert_eq!(
                    both.finite_values(),
                    narrow.finite_values(),
                    "{narrow} ∩ {wide}"
                );
                assert_eq!(
                    both.allows_absent(),
                    narrow.allows_absent(),
                    "{narrow} ∩ {wide}"
                );
            }
        }
    }
}
