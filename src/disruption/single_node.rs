//! Single-node consolidation: the first candidate (fewest pods first) whose pods fit on the
//! other nodes is deleted, or the first that one cheaper node can take over is replaced by it.

use std::sync::Arc;

use super::consolidation::cheaper;
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
) -> Option<Decision> {
    for candidate in candidates {
        let action = match reschedule(state, catalog, pass, &[&candidate.claim]) {
            Outcome::Delete => Action::Delete,
            // A node whose Jobs run on would keep its replacement idle meanwhile.
            Outcome::Replace { node_pools, claims }
                if claims.len() == 1 && !pass.runs_scaled_jobs(&candidate.claim) =>
            {
                let Some((claim, price)) = candidate
                    .price
                    .and_then(|current| cheaper(&claims[0], catalog, current, &[]))
                else {
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
