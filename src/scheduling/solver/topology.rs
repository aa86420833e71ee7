//! Topology as the kube-scheduler counts it: pod (anti-)affinity and topology spread per
//! distinct term, counted per zone and per slot, with node affinity honoured as
//! PodTopologySpread's `nodeAffinityPolicy` says.

use std::collections::{BTreeSet, HashMap};

use super::{SlotKind, Solver, TopologyViolation, labels_allow};
use crate::apis::labels::ZONE_LABEL;
use crate::scheduling::instance_types::is_well_known;
use crate::scheduling::pod::{Preference, Spread, Term, TermKind, TopologyKey};
use crate::scheduling::requirements::Requirements;

/// Pod-counting state of one distinct term.
pub(super) struct Group {
    pub(super) term: Term,
    /// From a preference (see [`Preference::Term`]).
    pub(super) preferred: bool,
    /// Matching pods per zone and per slot.
    pub(super) zone_counts: HashMap<String, i64>,
    pub(super) slot_counts: Vec<i64>,
    /// Pods that own this (anti-affinity) term, per zone and per slot, for symmetry.
    pub(super) owner_zones: HashMap<String, i64>,
    pub(super) owner_slots: Vec<i64>,
    pub(super) total: i64,
}

impl Solver<'_> {
    /// One group per distinct term, required or preferred; each pod's own terms and the groups
    /// whose selector it matches.
    pub(super) fn index_terms(&mut self) {
        let preferred = self.problem.pods.iter().flat_map(|p| {
            p.preferences
                .iter()
                .filter_map(|preference| match preference {
                    Preference::Term(term) => Some((term, true)),
                    Preference::Node(_) => None,
                })
        });
        let bound = self.problem.bound.iter().flat_map(|b| b.terms.iter());
        let terms = self
            .problem
            .pods
            .iter()
            .flat_map(|p| p.terms.iter().map(|term| (term, false)))
            .chain(preferred)
            .chain(bound.map(|term| (term, false)));
        for (term, preferred) in terms {
            let group_of = if preferred {
                &mut self.preferred_group_of
            } else {
                &mut self.group_of
            };
            if !group_of.contains_key(term) {
                group_of.insert(term.clone(), self.groups.len());
                self.groups.push(Group {
                    term: term.clone(),
                    preferred,
                    zone_counts: HashMap::new(),
                    slot_counts: Vec::new(),
                    owner_zones: HashMap::new(),
                    owner_slots: Vec::new(),
                    total: 0,
                });
            }
        }
        let namespaces = self.problem.namespaces;
        for (index, pod) in self.problem.pods.iter().enumerate() {
            self.owned.push(Vec::new());
            self.hold_preferences(index);
            self.matched.push(
                self.groups
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| {
                        g.term.namespaces.includes(&pod.namespace, namespaces)
                            && g.term.selector.matches(&pod.labels)
                    })
                    .map(|(i, _)| i)
                    .collect(),
            );
        }
    }

    /// Before the pod is placed: the zones its zone spreads count, as Karpenter's domains are
    /// the zones its NodePools (whose taints the pod tolerates) and the nodes offer, and the
    /// matching pods per zone on the nodes its spreads count.
    pub(super) fn prepare_topology(&mut self, pod: usize) {
        self.spread_zones.clear();
        let spreads_zones = self.owned[pod].iter().any(|&g| {
            let term = &self.groups[g].term;
            matches!(term.kind, TermKind::Spread(_)) && term.key == TopologyKey::Zone
        });
        if spreads_zones {
            let shape = &self.problem.pods[pod];
            // As the kube-scheduler counts: by the pod's own affinity, not its volumes' zones.
            let requirements = shape.node_affinity();
            let mut zones = self.node_zones.clone();
            for (pool, pool_zones) in self.problem.pools.iter().zip(&self.pool_zones) {
                if shape.tolerates(&pool.taints).is_ok() {
                    zones.extend(pool_zones.iter().cloned());
                }
            }
            self.spread_zones = zones
                .into_iter()
                .filter(|z| requirements.iter().any(|r| r.allows(ZONE_LABEL, z)))
                .collect();
        }
        self.count_allowed_nodes(pod);
    }

    /// Fills `allowed_zone_counts` for the pod's zone spreads that honour node affinity (the
    /// kube-scheduler's default `nodeAffinityPolicy: Honor`): pods on nodes the pod's node
    /// selector and required affinity (not its preferences) rule out do not count.
    fn count_allowed_nodes(&mut self, pod: usize) {
        self.allowed_zone_counts.clear();
        let requirements = self.problem.pods[pod].node_affinity();
        if requirements.iter().all(Requirements::is_empty) {
            return;
        }
        let honoring: Vec<usize> = self.owned[pod]
            .iter()
            .copied()
            .filter(|&g| {
                let term = &self.groups[g].term;
                matches!(term.kind, TermKind::Spread(s) if s.honor_node_affinity)
                    && term.key == TopologyKey::Zone
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
            .filter(|&(index, _)| self.node_affinity_allows(requirements, index))
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
    fn node_affinity_allows(&self, pod_requirements: &[Requirements], slot: usize) -> bool {
        match self.slots[slot].kind {
            SlotKind::Existing(node) => {
                labels_allow(pod_requirements, &self.problem.existing[node].labels)
            }
            SlotKind::Claim(claim) => {
                let requirements = &self.claims[claim].requirements;
                pod_requirements.iter().any(|alternative| {
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

    /// Checks the pod's topology terms (and others' anti-affinity towards it) on a slot; for a
    /// slot whose zone is still open, the zone it must be narrowed to.
    pub(super) fn topology(
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
                // A new node is always a domain with no matching pod, so the minimum is 0 and
                // minDomains changes nothing.
                (TermKind::Spread(Spread { max_skew, .. }), TopologyKey::Hostname) => {
                    if slot_count(&group.slot_counts) + own > i64::from(max_skew) {
                        return Err(TopologyViolation::HostnameSpread);
                    }
                }
                (
                    TermKind::Spread(Spread {
                        max_skew,
                        min_domains,
                        ..
                    }),
                    TopologyKey::Zone,
                ) => {
                    let counts = self
                        .allowed_zone_counts
                        .get(&g)
                        .unwrap_or(&group.zone_counts);
                    let eligible = &self.spread_zones;
                    // Fewer eligible zones than minDomains: the global minimum is 0, so every
                    // zone takes at most maxSkew matching pods.
                    let min = if (eligible.len() as i64) < i64::from(min_domains) {
                        0
                    } else {
                        eligible
                            .iter()
                            .map(|z| counts.get(z).copied().unwrap_or(0))
                            .min()
                            .unwrap_or(0)
                    };
                    let allowed: BTreeSet<String> = zone_options(&mut options)
                        .into_iter()
                        .filter(|z| {
                            counts.get(z).copied().unwrap_or(0) + own - min <= i64::from(max_skew)
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
        // Only others' required anti-affinity keeps a pod away; a preferred one binds its
        // owner alone.
        for &g in &self.matched[pod] {
            let group = &self.groups[g];
            if group.term.kind != TermKind::AntiAffinity || group.preferred {
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
}
