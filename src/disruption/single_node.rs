//! Single-node consolidation: the first candidate (fewest pods first) whose pods fit on the
//! other nodes is deleted, or the first that one cheaper node can take over is replaced by it
//! (a spot node by a spot one only as `consolidation::replacement` allows).

use std::sync::Arc;

use super::consolidation::{Replaced, replacement};
use super::pass::Pass;
use super::simulation::{Outcome, reschedule};
use super::underutilized::{Action, Candidate, Decision};
use crate::scheduling::instance_types::InstanceType;
use crate::state::ClusterState;

pub fn decide(
    state: &ClusterState,
    catalog: &[InstanceType],
    pass: &Pass,
    candidates: &[Candidate],
    spot_to_spot: bool,
) -> Option<Decision> {
    for candidate in candidates {
        let action = match reschedule(state, catalog, pass, &[&candidate.claim]) {
            Outcome::Delete => Action::Delete,
            // A node whose Jobs run on would keep its replacement idle meanwhile.
            Outcome::Replace { node_pools, claims }
                if claims.len() == 1 && !pass.runs_scaled_jobs(&candidate.claim) =>
            {
                let Some((claim, price)) = candidate.price.and_then(|price| {
                    let replaced = Replaced {
                        price,
                        all_spot: candidate.spot,
                        single: true,
                        excluded: &[],
                    };
                    replacement(&claims[0], catalog, replaced, spot_to_spot)
                }) else {
                    continue;
                };
                Action::Replace {
                    node_pools,
                    claim,
                    price,
                }
            }
            Outcome::Replace { .. } | Outcome::Blocked(_) => continue,
        };
        return Some(Decision {
            candidates: vec![Arc::clone(&candidate.claim)],
            current: candidate.price,
            action,
        });
    }
    None
}
