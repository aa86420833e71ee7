//! Multi-node consolidation: several underused nodes of one NodePool at once, all deleted when
//! their pods fit on the other nodes, or replaced by one node cheaper than all of them
//! together. As Karpenter's, the candidates are taken fewest pods first, at most 100 and no
//! more than the pool's budget allows, and a binary search finds the longest run of them that
//! can go; the search stops after a minute with the best it found. A replacement is never of
//! a type one of the nodes it replaces already has: that is single-node consolidation's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::consolidation::{Replaced, replacement};
use super::pass::Pass;
use super::simulation::{Outcome, reschedule};
use super::underutilized::{Action, Candidate, Decision};
use crate::apis::labels::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};
use crate::apis::node_pool::DisruptionReason;
use crate::scheduling::instance_types::InstanceType;
use crate::state::ClusterState;

/// The most nodes one decision takes.
const MAX_CANDIDATES: usize = 100;
/// How long the search may take.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn decide(
    state: &ClusterState,
    catalog: &[InstanceType],
    pass: &Pass,
    candidates: &[Candidate],
    spot_to_spot: bool,
) -> Option<Decision> {
    let mut by_pool: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for candidate in candidates {
        if let Some(pool) = candidate.claim.labels().get(NODEPOOL_LABEL) {
            by_pool.entry(pool).or_default().push(candidate);
        }
    }
    let deadline = Instant::now() + SEARCH_TIMEOUT;
    for (pool, candidates) in by_pool {
        let room = pass
            .pools()
            .find(|p| p.name_any() == pool)
            .map_or(0, |p| pass.room(p, DisruptionReason::Underutilized));
        let most = candidates.len().min(MAX_CANDIDATES).min(room);
        let found = longest(most, deadline, |count| {
            consolidate(state, catalog, pass, &candidates[..count], spot_to_spot)
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The decision for the longest prefix of at least two that `try_prefix` can consolidate, by
/// binary search over the prefix length up to `most`, until `deadline`.
fn longest(
    most: usize,
    deadline: Instant,
    mut try_prefix: impl FnMut(usize) -> Option<Decision>,
) -> Option<Decision> {
    let (mut low, mut high) = (2, most);
    let mut best = None;
    while low <= high && Instant::now() < deadline {
        let middle = (low + high) / 2;
        match try_prefix(middle) {
            Some(decision) => {
                best = Some(decision);
                low = middle + 1;
            }
            None => high = middle - 1,
        }
    }
    best
}

/// Whether the candidates can go together: deleted, or replaced by one cheaper node of a type
/// none of them has (spot nodes by a spot one only with spot-to-spot consolidation on).
fn consolidate(
    state: &ClusterState,
    catalog: &[InstanceType],
    pass: &Pass,
    candidates: &[&Candidate],
    spot_to_spot: bool,
) -> Option<Decision> {
    let claims: Vec<&_> = candidates.iter().map(|c| c.claim.as_ref()).collect();
    let current: Option<f64> = candidates.iter().map(|c| c.price).sum();
    let action = match reschedule(state, catalog, pass, &claims) {
        Outcome::Delete => Action::Delete,
        Outcome::Replace { node_pools, claims }
            if claims.len() == 1 && !claims_run_jobs(pass, candidates) =>
        {
            let types: Vec<&str> = candidates
                .iter()
                .filter_map(|c| pass.node(&c.claim))
                .filter_map(|node| node.labels().get(INSTANCE_TYPE_LABEL))
                .map(String::as_str)
                .collect();
            let replaced = Replaced {
                price: current?,
                all_spot: candidates.iter().all(|c| c.spot),
                single: false,
                excluded: &types,
            };
            let (claim, price) = replacement(&claims[0], catalog, replaced, spot_to_spot)?;
            Action::Replace {
                node_pools,
                claim,
                price,
            }
        }
        Outcome::Replace { .. } | Outcome::Blocked(_) => return None,
    };
    Some(Decision {
        candidates: candidates.iter().map(|c| Arc::clone(&c.claim)).collect(),
        current,
        action,
    })
}

/// Whether a ScaledJob Job runs on one of the candidates: a replacement would idle until it
/// is done.
fn claims_run_jobs(pass: &Pass, candidates: &[&Candidate]) -> bool {
    candidates.iter().any(|c| pass.runs_scaled_jobs(&c.claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::testing::node_claim;
    use serde_json::json;

    fn decision(count: usize) -> Decision {
        Decision {
            candidates: (0..count)
                .map(|i| Arc::new(node_claim(json!({"metadata": {"name": format!("c{i}")}}))))
                .collect(),
            current: None,
            action: Action::Delete,
        }
    }

    #[test]
    fn the_search_finds_the_longest_prefix_that_consolidates() {
        let far = Instant::now() + Duration::from_secs(60);
        for (most, works_up_to, expected) in [
            (10, 7, Some(7)),
            (10, 10, Some(10)),
            (10, 1, None),
            (1, 1, None),
            (5, 2, Some(2)),
        ] {
            let mut tried = Vec::new();
            let found = longest(most, far, |count| {
                tried.push(count);
                (count <= works_up_to).then(|| decision(count))
            });
            assert_eq!(
                found.map(|d| d.candidates.len()),
                expected,
                "most {most}, works up to {works_up_to}"
            );
            assert!(
                tried.iter().all(|&c| (2..=most).contains(&c)),
                "tried {tried:?}"
            );
            assert!(tried.len() <= 4, "a binary search: {tried:?}");
        }
    }

    #[test]
    fn the_search_stops_at_its_deadline_with_the_best_so_far() {
        let mut tried = 0;
        let found = longest(100, Instant::now(), |count| {
            tried += 1;
            Some(decision(count))
        });
        assert!(
            found.is_none() && tried == 0,
            "past the deadline nothing is tried"
        );
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_search_finds_the_longest_run_when_shorter_runs_also_work(most in 0usize..=100, works_up_to in 0usize..=120) {
            let far = Instant::now() + Duration::from_secs(60);
            let mut tried = 0;
            let found = longest(most, far, |count| {
                tried += 1;
                (count <= works_up_to).then(|| decision(count))
            });
            let expected = works_up_to.min(most);
            prop_assert_eq!(found.map(|d| d.candidates.len()), (expected >= 2).then_some(expected));
            prop_assert!(tried <= 8, "{tried} simulations for {most} candidates");
        }
    }
}
