//! What consolidation decides with, without I/O: which pods it may move, what a node costs,
//! which replacement types are cheaper. A decision is taken only after it has held for 15 s, so a node is not
//! removed on a view a moment old, and a cluster found consolidated is not simulated again
//! until something in it changes.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::apis::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::scheduling::NewClaim;
use crate::scheduling::instance_types::{InstanceType, SPOT, unmet_min_values};
use crate::scheduling::requirements::Requirement;

/// How long a consolidation decision must hold before it is acted on.
pub const VALIDATION: SignedDuration = SignedDuration::from_secs(15);

/// Whether consolidation may evict the pod for a cheaper cluster: only a pod its controller
/// brings back. A pod no controller owns would be gone for good. (A ScaledJob's pods keep
/// their node from every voluntary disruption.)
pub fn movable(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true))
}

/// The hourly price the node's instance is bought at: its type's offering in its zone and
/// capacity type, from its labels. `None` when the catalog has no price for it.
pub fn node_price(node: &Node, catalog: &[InstanceType]) -> Option<f64> {
    let labels = node.labels();
    let instance_type = catalog
        .iter()
        .find(|it| Some(&it.name) == labels.get(INSTANCE_TYPE_LABEL))?;
    instance_type
        .offerings
        .iter()
        .find(|o| {
            Some(&o.zone) == labels.get(ZONE_LABEL)
                && Some(&o.capacity_type) == labels.get(CAPACITY_TYPE_LABEL)
        })?
        .price
}

/// Whether the node is a spot instance, by its capacity-type label.
pub fn is_spot(node: &Node) -> bool {
    node.labels().get(CAPACITY_TYPE_LABEL).map(String::as_str) == Some(SPOT)
}

/// The planned replacement narrowed to the instance types cheaper than `current` and not named
/// in `excluded`, and the price of the cheapest of them; `None` when none is left, none has a
/// price, or too few are left for a `minValues` (as in Karpenter, no replacement then).
pub fn cheaper(
    claim: &NewClaim,
    catalog: &[InstanceType],
    current: f64,
    excluded: &[&str],
) -> Option<(NewClaim, f64)> {
    let price = |index: usize| {
        catalog[index]
            .cheapest_offering(&claim.requirements)
            .and_then(|o| o.price)
    };
    let instance_types: Vec<usize> = claim
        .instance_types
        .iter()
        .copied()
        .filter(|&i| !excluded.contains(&catalog[i].name.as_str()))
        .filter(|&i| price(i).is_some_and(|p| p < current))
        .collect();
    if unmet_min_values(&claim.requirements, &instance_types, catalog).is_some() {
        return None;
    }
    let cheapest = instance_types
        .iter()
        .filter_map(|&i| price(i))
        .min_by(f64::total_cmp)?;
    Some((
        NewClaim {
            instance_types,
            ..claim.clone()
        },
        cheapest,
    ))
}

/// The fewest cheaper spot types a single spot node's replacement must be offered, and the
/// most it is (Karpenter's `MinInstanceTypesForSpotToSpotConsolidation`). A spot launch picks by
/// availability as well as price, so offered every cheaper type it could land on one only a
/// little cheaper, which would then be replaced in turn; offered only the 15 cheapest, the node
/// it gets is not cheaper than 15 others, and is not replaced again at once.
pub const SPOT_TO_SPOT_TYPES: usize = 15;

/// The nodes a replacement would take over.
#[derive(Clone, Copy, Debug)]
pub struct Replaced<'a> {
    /// Their hourly price together.
    pub price: f64,
    /// Whether every one of them is a spot instance.
    pub all_spot: bool,
    /// Whether it is one node (single-node consolidation).
    pub single: bool,
    /// Instance types the replacement may not have.
    pub excluded: &'a [&'a str],
}

/// The replacement `claim` narrowed to what consolidation may launch for `replaced`, and its
/// price, as Karpenter decides. Spot nodes whose replacement could be spot are replaced only
/// with `spot_to_spot` on, by spot alone, and a single node only when at least
/// [`SPOT_TO_SPOT_TYPES`] spot types are cheaper (offered the cheapest of them, more only as a
/// `minValues` needs). Otherwise (an on-demand node going to spot, say) any cheaper type goes.
pub fn replacement(
    claim: &NewClaim,
    catalog: &[InstanceType],
    replaced: Replaced<'_>,
    spot_to_spot: bool,
) -> Option<(NewClaim, f64)> {
    if !replaced.all_spot || !claim.requirements.allows(CAPACITY_TYPE_LABEL, SPOT) {
        return cheaper(claim, catalog, replaced.price, replaced.excluded);
    }
    if !spot_to_spot {
        return None;
    }
    let mut spot = claim.clone();
    spot.requirements
        .add(CAPACITY_TYPE_LABEL, Requirement::one_of([SPOT]));
    let (mut narrowed, price) = cheaper(&spot, catalog, replaced.price, replaced.excluded)?;
    if !replaced.single {
        return Some((narrowed, price));
    }
    if narrowed.instance_types.len() < SPOT_TO_SPOT_TYPES {
        return None;
    }
    let spot_price = |index: usize| {
        catalog[index]
            .cheapest_offering(&narrowed.requirements)
            .and_then(|o| o.price)
            .unwrap_or(f64::INFINITY)
    };
    narrowed
        .instance_types
        .sort_by(|&a, &b| spot_price(a).total_cmp(&spot_price(b)));
    let kept = (SPOT_TO_SPOT_TYPES..=narrowed.instance_types.len()).find(|&count| {
        unmet_min_values(
            &narrowed.requirements,
            &narrowed.instance_types[..count],
            catalog,
        )
        .is_none()
    })?;
    narrowed.instance_types.truncate(kept);
    Some((narrowed, price))
}

/// How long a cluster found consolidated stays so while nothing in it changes.
pub const RECHECK: SignedDuration = SignedDuration::from_mins(5);

/// What consolidation saw when it last found nothing to do: a fingerprint of the cluster, and
/// when. A simulation per candidate is not cheap, so an unchanged cluster is not simulated
/// again until [`RECHECK`] has passed.
#[derive(Debug, Default)]
pub struct Consolidated(Option<(u64, Timestamp)>);

impl Consolidated {
    pub fn still(&self, fingerprint: u64, now: Timestamp) -> bool {
        matches!(self.0, Some((seen, at)) if seen == fingerprint && now.duration_since(at) < RECHECK)
    }

    pub fn mark(&mut self, fingerprint: u64, now: Timestamp) {
        self.0 = Some((fingerprint, now));
    }
}

/// A fingerprint of what a consolidation decision depends on: the candidates, every
/// NodeClaim and Node (cordoned, draining) and where every pod is, and the NodePools' specs.
pub fn fingerprint(
    candidates: &[String],
    claims: &[Arc<NodeClaim>],
    nodes: &[Arc<Node>],
    pods_by_node: &HashMap<String, Vec<Arc<Pod>>>,
    pools: &[Arc<NodePool>],
) -> u64 {
    let mut hasher = DefaultHasher::new();
    candidates.hash(&mut hasher);
    let mut claims: Vec<(String, bool, Option<String>)> = claims
        .iter()
        .map(|c| {
            (
                c.name_any(),
                c.metadata.deletion_timestamp.is_some(),
                c.status.as_ref().and_then(|s| s.node_name.clone()),
            )
        })
        .collect();
    claims.sort();
    claims.hash(&mut hasher);
    let mut nodes: Vec<(String, bool, usize)> = nodes
        .iter()
        .map(|n| {
            let spec = n.spec.as_ref();
            (
                n.name_any(),
                spec.and_then(|s| s.unschedulable).unwrap_or(false),
                spec.and_then(|s| s.taints.as_ref()).map_or(0, Vec::len),
            )
        })
        .collect();
    nodes.sort();
    nodes.hash(&mut hasher);
    let mut placed: Vec<(&String, Vec<&str>)> = pods_by_node
        .iter()
        .map(|(node, pods)| {
            let mut uids: Vec<&str> = pods
                .iter()
                .filter_map(|p| p.metadata.uid.as_deref())
                .collect();
            uids.sort_unstable();
            (node, uids)
        })
        .collect();
    placed.sort();
    placed.hash(&mut hasher);
    let mut pools: Vec<(String, Option<String>)> = pools
        .iter()
        .map(|p| (p.name_any(), p.metadata.resource_version.clone()))
        .collect();
    pools.sort();
    pools.hash(&mut hasher);
    hasher.finish()
}

/// The decision waiting out its validation, and since when.
#[derive(Debug, Default)]
pub struct Pending(Option<(String, Timestamp)>);

impl Pending {
    /// Whether the decision `key` (the nodes and what to do with them) has now held for
    /// [`VALIDATION`]; another decision starts over.
    pub fn held(&mut self, key: &str, now: Timestamp) -> bool {
        match &self.0 {
            Some((pending, since)) if pending == key => now.duration_since(*since) >= VALIDATION,
            _ => {
                self.0 = Some((key.to_owned(), now));
                false
            }
        }
    }

    pub fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::catalog;
    use crate::scheduling::requirements::Requirements;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn pod(uid: &str) -> Arc<Pod> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": uid, "uid": uid}})).unwrap())
    }

    #[test]
    fn a_consolidated_cluster_is_looked_at_again_when_it_changes_or_after_five_minutes() {
        let mut consolidated = Consolidated::default();
        assert!(!consolidated.still(1, at(0)));
        consolidated.mark(1, at(0));
        assert!(consolidated.still(1, at(299)));
        assert!(!consolidated.still(2, at(10)), "something changed");
        assert!(!consolidated.still(1, at(300)));
    }

    #[test]
    fn the_fingerprint_follows_pods_candidates_and_cordons() {
        let claims: Vec<Arc<NodeClaim>> = Vec::new();
        let node = |unschedulable: bool| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(
                    json!({"metadata": {"name": "n"}, "spec": {"unschedulable": unschedulable}}),
                )
                .unwrap(),
            )
        };
        let placed = |uids: &[&str]| {
            HashMap::from([(
                "n".to_owned(),
                uids.iter().map(|u| pod(u)).collect::<Vec<_>>(),
            )])
        };
        let base = fingerprint(&[], &claims, &[node(false)], &placed(&["a", "b"]), &[]);
        assert_eq!(
            base,
            fingerprint(&[], &claims, &[node(false)], &placed(&["b", "a"]), &[])
        );
        assert_ne!(
            base,
            fingerprint(&[], &claims, &[node(false)], &placed(&["a"]), &[])
        );
        assert_ne!(
            base,
            fingerprint(&[], &claims, &[node(true)], &placed(&["a", "b"]), &[])
        );
        assert_ne!(
            base,
            fingerprint(
                &["c".into()],
                &claims,
                &[node(false)],
                &placed(&["a", "b"]),
                &[]
            )
        );
    }

    #[test]
    fn a_decision_is_acted_on_once_it_has_held_fifteen_seconds() {
        let mut pending = Pending::default();
        assert!(!pending.held("a", at(0)));
        assert!(!pending.held("a", at(14)));
        assert!(pending.held("a", at(15)));
        assert!(!pending.held("b", at(16)), "another node starts over");
        pending.clear();
        assert!(!pending.held("b", at(40)));
    }

    #[test]
    fn only_pods_a_controller_brings_back_are_moved() {
        let owned: Pod = serde_json::from_value(json!({"metadata": {"name": "p",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r",
                                 "uid": "u", "controller": true}]}}))
        .unwrap();
        assert!(movable(&owned));
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(!movable(&bare));
    }

    fn node(instance_type: &str, zone: &str, capacity_type: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": {
            INSTANCE_TYPE_LABEL: instance_type, ZONE_LABEL: zone, CAPACITY_TYPE_LABEL: capacity_type
        }}}))
        .unwrap()
    }

    #[test]
    fn a_node_is_priced_by_its_type_zone_and_capacity_type() {
        let catalog = catalog::bundled();
        let m5 = catalog.iter().find(|it| it.name == "m5.xlarge").unwrap();
        let on_demand = m5
            .offerings
            .iter()
            .find(|o| o.zone == "us-east-1a" && o.capacity_type == "on-demand")
            .unwrap();
        assert_eq!(
            node_price(&node("m5.xlarge", "us-east-1a", "on-demand"), &catalog),
            on_demand.price
        );
        assert_eq!(
            node_price(&node("x9.nothing", "us-east-1a", "on-demand"), &catalog),
            None
        );
    }

    #[test]
    fn only_types_cheaper_than_the_node_replace_it() {
        let catalog = catalog::bundled();
        let index = |name: &str| catalog.iter().position(|it| it.name == name).unwrap();
        let mut requirements = Requirements::default();
        requirements.add(
            CAPACITY_TYPE_LABEL,
            crate::scheduling::requirements::Requirement::one_of(["on-demand"]),
        );
        let planned = NewClaim {
            pool: 0,
            requirements,
            pods: vec![0],
            requests: Default::default(),
            instance_types: vec![index("m5.large"), index("m5.xlarge"), index("m5.2xlarge")],
        };
        let large = catalog[index("m5.large")].min_price().unwrap();
        let xlarge = catalog[index("m5.xlarge")]
            .cheapest_offering(&planned.requirements)
            .and_then(|o| o.price)
            .unwrap();
        let (narrowed, price) = cheaper(&planned, &catalog, xlarge, &[]).unwrap();
        assert_eq!(narrowed.instance_types, [index("m5.large")]);
        assert!(price <= large + f64::EPSILON && price < xlarge);
        let cheapest = catalog[index("m5.large")]
            .cheapest_offering(&planned.requirements)
            .and_then(|o| o.price)
            .unwrap();
        assert!(
            cheaper(&planned, &catalog, cheapest, &[]).is_none(),
            "nothing is cheaper than the cheapest"
        );
        assert!(
            cheaper(&planned, &catalog, xlarge, &["m5.large"]).is_none(),
            "a type the candidates have is left out"
        );
        let mut two_types = planned.clone();
        two_types.requirements.add(
            INSTANCE_TYPE_LABEL,
            crate::scheduling::requirements::Requirement::new(
                crate::apis::node_pool::RequirementOperator::Exists,
                &[],
            )
            .with_min_values(Some(2)),
        );
        assert!(
            cheaper(&two_types, &catalog, xlarge, &[]).is_none(),
            "one cheaper type cannot keep minValues 2"
        );
        let m5_2xlarge = catalog[index("m5.2xlarge")]
            .cheapest_offering(&planned.requirements)
            .and_then(|o| o.price)
            .unwrap();
        assert_eq!(
            cheaper(&two_types, &catalog, m5_2xlarge, &[])
                .unwrap()
                .0
                .instance_types,
            [index("m5.large"), index("m5.xlarge")]
        );
    }

    /// A planned replacement that may be spot or on-demand, of any of `types`.
    fn spot_or_on_demand(types: Vec<usize>) -> NewClaim {
        let mut requirements = Requirements::default();
        requirements.add(
            CAPACITY_TYPE_LABEL,
            Requirement::one_of([SPOT, "on-demand"]),
        );
        NewClaim {
            pool: 0,
            requirements,
            pods: vec![0],
            requests: Default::default(),
            instance_types: types,
        }
    }

    fn spot_price(catalog: &[InstanceType], index: usize) -> f64 {
        catalog[index]
            .offerings
            .iter()
            .filter(|o| o.capacity_type == SPOT)
            .filter_map(|o| o.price)
            .min_by(f64::total_cmp)
            .unwrap()
    }

    #[test]
    fn a_spot_node_is_replaced_by_spot_only_with_the_gate_on_and_fifteen_cheaper_types() {
        let catalog = catalog::bundled();
        let with_spot: Vec<usize> = (0..catalog.len())
            .filter(|&i| {
                catalog[i]
                    .offerings
                    .iter()
                    .any(|o| o.capacity_type == SPOT && o.price.is_some())
            })
            .collect();
        let mut by_price = with_spot.clone();
        by_price.sort_by(|&a, &b| spot_price(&catalog, a).total_cmp(&spot_price(&catalog, b)));
        let planned = spot_or_on_demand(with_spot);
        // A spot node dearer than the 20 cheapest spot types.
        let current = spot_price(&catalog, by_price[20]);
        let cheaper_types = by_price
            .iter()
            .filter(|&&i| spot_price(&catalog, i) < current)
            .count();
        assert!(cheaper_types >= SPOT_TO_SPOT_TYPES, "{cheaper_types}");
        let spot_node = Replaced {
            price: current,
            all_spot: true,
            single: true,
            excluded: &[],
        };
        assert!(
            replacement(&planned, &catalog, spot_node, false).is_none(),
            "the gate is off"
        );
        let (narrowed, price) = replacement(&planned, &catalog, spot_node, true).unwrap();
        assert_eq!(narrowed.instance_types, by_price[..SPOT_TO_SPOT_TYPES]);
        assert!(narrowed.requirements.allows(CAPACITY_TYPE_LABEL, SPOT));
        assert!(
            !narrowed
                .requirements
                .allows(CAPACITY_TYPE_LABEL, "on-demand"),
            "the replacement is spot"
        );
        assert_eq!(price, spot_price(&catalog, by_price[0]));

        // Fewer than 15 cheaper spot types: no replacement, even with the gate on.
        let few = Replaced {
            price: spot_price(&catalog, by_price[SPOT_TO_SPOT_TYPES - 1]),
            ..spot_node
        };
        assert!(replacement(&planned, &catalog, few, true).is_none());
        // Several spot nodes at once need no such minimum.
        let several = Replaced {
            single: false,
            ..few
        };
        assert!(replacement(&planned, &catalog, several, true).is_some());
        assert!(replacement(&planned, &catalog, several, false).is_none());
    }

    #[test]
    fn an_on_demand_node_is_replaced_by_a_cheaper_spot_one_with_the_gate_off() {
        let catalog = catalog::bundled();
        let index = |name: &str| catalog.iter().position(|it| it.name == name).unwrap();
        let planned = spot_or_on_demand(vec![index("m5.large"), index("m5.xlarge")]);
        let on_demand = catalog[index("m5.xlarge")]
            .offerings
            .iter()
            .find(|o| o.capacity_type == "on-demand")
            .and_then(|o| o.price)
            .unwrap();
        let on_demand_node = Replaced {
            price: on_demand,
            all_spot: false,
            single: true,
            excluded: &[],
        };
        let (narrowed, price) = replacement(&planned, &catalog, on_demand_node, false).unwrap();
        assert!(price < on_demand);
        assert!(narrowed.instance_types.contains(&index("m5.large")));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn a_cheaper_replacement_only_offers_types_cheaper_and_not_excluded(
            picked in proptest::collection::btree_set(0usize..12, 1..8),
            current in 0.01f64..2.0,
            excluded in proptest::collection::btree_set(0usize..12, 0..3),
        ) {
            let catalog = catalog::bundled();
            let planned = NewClaim {
                pool: 0,
                requirements: Requirements::default(),
                pods: vec![0],
                requests: Default::default(),
                instance_types: picked.iter().copied().collect(),
            };
            let excluded: Vec<&str> = excluded.iter().map(|&i| catalog[i].name.as_str()).collect();
            let price = |i: usize| catalog[i].cheapest_offering(&planned.requirements).and_then(|o| o.price);
            match cheaper(&planned, &catalog, current, &excluded) {
                Some((narrowed, cheapest)) => {
                    prop_assert!(!narrowed.instance_types.is_empty());
                    for &i in &narrowed.instance_types {
                        prop_assert!(price(i).is_some_and(|p| p < current && p >= cheapest));
                        prop_assert!(!excluded.contains(&catalog[i].name.as_str()));
                    }
                    prop_assert!(cheapest < current);
                }
                None => {
                    for &i in &picked {
                        prop_assert!(
                            excluded.contains(&catalog[i].name.as_str()) || price(i).is_none_or(|p| p >= current)
                        );
                    }
                }
            }
        }
    }
}
