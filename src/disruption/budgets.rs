//! How many of a NodePool's nodes may be disrupted now, as Karpenter's budgets say, without
//! I/O: each budget active now that covers the reason allows `nodes` (a count, or a percentage
//! of the pool's nodes rounded up, as a PodDisruptionBudget's maxUnavailable); the smallest
//! wins. A budget with a schedule is active from each cron tick (UTC) for its duration.

use std::collections::BTreeMap;

use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::{Budget, DisruptionReason, NodePool};
use crate::jobs::schedule::Schedule;
use jiff::{SignedDuration, Timestamp};

/// A budget the API server let through that Windlass cannot read; it allows nothing, as
/// Karpenter fails closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("budget schedule {schedule:?}: {message}")]
    Schedule { schedule: String, message: String },
    #[error("budget duration {0:?} is not a duration like 8h or 1h30m")]
    Duration(String),
    #[error("budget nodes {0:?} is not a count or a percentage")]
    Nodes(String),
}

/// For the NodePool's status: per reason, how many more of the pool's `claims` may be
/// disrupted at `now`, those being deleted or replaced already taken out; none for a budget
/// that cannot be read.
pub fn allowed_disruptions(
    pool: &NodePool,
    claims: &[NodeClaim],
    now: Timestamp,
) -> BTreeMap<String, i64> {
    let disrupting = claims.iter().filter(|c| c.is_disrupting()).count();
    [
        ("Empty", DisruptionReason::Empty),
        ("Drifted", DisruptionReason::Drifted),
        ("Underutilized", DisruptionReason::Underutilized),
    ]
    .into_iter()
    .map(|(name, reason)| {
        let room = room(
            &pool.spec.disruption.budgets,
            claims.len(),
            disrupting,
            reason,
            now,
        );
        (name.to_owned(), room.unwrap_or(0) as i64)
    })
    .collect()
}

/// How many more nodes of a pool of `nodes`, `disrupting` of them being deleted or replaced
/// already, may be disrupted for `reason` at `now`.
pub fn room(
    budgets: &[Budget],
    nodes: usize,
    disrupting: usize,
    reason: DisruptionReason,
    now: Timestamp,
) -> Result<usize, BudgetError> {
    // A count larger than the pool allows no more than the pool.
    Ok(allowed(budgets, nodes, reason, now)?
        .unwrap_or(nodes)
        .min(nodes)
        .saturating_sub(disrupting))
}

/// How many nodes of a pool of `nodes` may be disrupted for `reason` at `now`; `None` when no
/// budget limits it.
pub fn allowed(
    budgets: &[Budget],
    nodes: usize,
    reason: DisruptionReason,
    now: Timestamp,
) -> Result<Option<usize>, BudgetError> {
    let mut allowed: Option<usize> = None;
    for budget in budgets {
        if !budget.reasons.is_empty() && !budget.reasons.contains(&reason) {
            continue;
        }
        if !is_active(budget, now)? {
            continue;
        }
        let this = scaled(&budget.nodes, nodes)?;
        allowed = Some(allowed.map_or(this, |a| a.min(this)));
    }
    Ok(allowed)
}

fn is_active(budget: &Budget, now: Timestamp) -> Result<bool, BudgetError> {
    let (Some(schedule), Some(duration)) = (&budget.schedule, &budget.duration) else {
        return Ok(true);
    };
    let parsed = Schedule::parse(schedule, "UTC").map_err(|e| BudgetError::Schedule {
        schedule: schedule.clone(),
        message: e.message,
    })?;
    let duration: SignedDuration = duration
        .parse()
        .map_err(|_| BudgetError::Duration(duration.clone()))?;
    // Active if a tick fell within the last `duration`.
    Ok(parsed
        .next_after(now - duration)
        .is_some_and(|tick| tick <= now))
}

fn scaled(value: &str, nodes: usize) -> Result<usize, BudgetError> {
    let bad = || BudgetError::Nodes(value.to_owned());
    match value.strip_suffix('%') {
        Some(percent) => {
            let percent: usize = percent.parse().map_err(|_| bad())?;
            Ok((nodes * percent).div_ceil(100))
        }
        None => value.parse().map_err(|_| bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::labels::DISRUPTION_ANNOTATION;
    use crate::apis::testing::{node_claim, node_pool};

    fn budget(nodes: &str, window: Option<(&str, &str)>, reasons: &[DisruptionReason]) -> Budget {
        Budget {
            nodes: nodes.into(),
            schedule: window.map(|(s, _)| s.into()),
            duration: window.map(|(_, d)| d.into()),
            reasons: reasons.to_vec(),
        }
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    const EMPTY: DisruptionReason = DisruptionReason::Empty;

    #[test]
    fn the_pool_status_shows_what_each_reason_still_allows() {
        let pool = node_pool(serde_json::json!({"spec": {"disruption": {
            "budgets": [{"nodes": "2"}, {"nodes": "0", "reasons": ["Drifted"]}]}}}));
        let claim =
            |metadata: serde_json::Value| node_claim(serde_json::json!({ "metadata": metadata }));
        let claims = [
            claim(serde_json::json!({})),
            claim(serde_json::json!({"annotations": {DISRUPTION_ANNOTATION: "expired"}})),
            claim(serde_json::json!({})),
        ];
        let allowed = allowed_disruptions(&pool, &claims, at("2026-01-01T12:00:00Z"));
        assert_eq!(
            allowed,
            BTreeMap::from([
                ("Drifted".to_owned(), 0),
                ("Empty".to_owned(), 1),
                ("Underutilized".to_owned(), 1)
            ])
        );
    }

    #[test]
    fn percentages_round_up_and_the_smallest_budget_wins() {
        let now = at("2026-01-01T12:00:00Z");
        assert_eq!(
            allowed(&[budget("10%", None, &[])], 10, EMPTY, now),
            Ok(Some(1))
        );
        assert_eq!(
            allowed(&[budget("10%", None, &[])], 11, EMPTY, now),
            Ok(Some(2))
        );
        assert_eq!(
            allowed(&[budget("10%", None, &[])], 0, EMPTY, now),
            Ok(Some(0))
        );
        let two = [budget("50%", None, &[]), budget("3", None, &[])];
        assert_eq!(allowed(&two, 10, EMPTY, now), Ok(Some(3)));
        assert_eq!(allowed(&[], 10, EMPTY, now), Ok(None));
    }

    #[test]
    fn a_budget_limits_only_its_reasons() {
        let now = at("2026-01-01T12:00:00Z");
        let drift_only = [budget("0", None, &[DisruptionReason::Drifted])];
        assert_eq!(allowed(&drift_only, 10, EMPTY, now), Ok(None));
        assert_eq!(
            allowed(&drift_only, 10, DisruptionReason::Drifted, now),
            Ok(Some(0))
        );
    }

    #[test]
    fn a_scheduled_budget_holds_from_each_tick_for_its_duration() {
        // No disruption on weekdays from 09:00 for 8 hours.
        let business_hours = [budget("0", Some(("0 9 * * mon-fri", "8h")), &[])];
        let thursday = |time: &str| at(&format!("2026-01-01T{time}Z"));
        assert_eq!(
            allowed(&business_hours, 5, EMPTY, thursday("08:59:59")),
            Ok(None)
        );
        assert_eq!(
            allowed(&business_hours, 5, EMPTY, thursday("09:00:00")),
            Ok(Some(0))
        );
        assert_eq!(
            allowed(&business_hours, 5, EMPTY, thursday("16:59:59")),
            Ok(Some(0))
        );
        assert_eq!(
            allowed(&business_hours, 5, EMPTY, thursday("17:00:01")),
            Ok(None)
        );
        let saturday = at("2026-01-03T12:00:00Z");
        assert_eq!(allowed(&business_hours, 5, EMPTY, saturday), Ok(None));
        let with_minutes = [budget("1", Some(("@daily", "1h30m")), &[])];
        assert_eq!(
            allowed(&with_minutes, 5, EMPTY, at("2026-01-01T01:29:00Z")),
            Ok(Some(1))
        );
    }

    #[test]
    fn an_unreadable_budget_fails_closed_with_a_reason() {
        let now = at("2026-01-01T12:00:00Z");
        let bad = [budget("1", Some(("0 25 * * *", "1h")), &[])];
        assert!(matches!(
            allowed(&bad, 5, EMPTY, now),
            Err(BudgetError::Schedule { .. })
        ));
        let bad_nodes = [budget("many", None, &[])];
        assert_eq!(
            allowed(&bad_nodes, 5, EMPTY, now),
            Err(BudgetError::Nodes("many".into()))
        );
    }

    use proptest::prelude::*;

    fn any_reason() -> impl Strategy<Value = DisruptionReason> {
        prop_oneof![
            Just(DisruptionReason::Empty),
            Just(DisruptionReason::Drifted),
            Just(DisruptionReason::Underutilized),
        ]
    }

    fn any_budget() -> impl Strategy<Value = Budget> {
        let nodes = prop_oneof![
            (0usize..20).prop_map(|n| n.to_string()),
            (0usize..=100).prop_map(|p| format!("{p}%")),
        ];
        (nodes, proptest::collection::vec(any_reason(), 0..3)).prop_map(|(nodes, reasons)| Budget {
            nodes,
            schedule: None,
            duration: None,
            reasons,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn room_is_the_smallest_covering_budget_less_what_is_disrupting(
            budgets in proptest::collection::vec(any_budget(), 0..4),
            nodes in 0usize..50,
            disrupting_share in 0usize..=100,
            reason in any_reason(),
        ) {
            let now = at("2026-06-01T12:00:00Z");
            let disrupting = nodes * disrupting_share / 100;
            let room = room(&budgets, nodes, disrupting, reason, now).unwrap();
            prop_assert!(room + disrupting <= nodes.max(disrupting), "never more than the pool");
            for budget in budgets.iter().filter(|b| b.reasons.is_empty() || b.reasons.contains(&reason)) {
                let alone = room_of(budget, nodes, disrupting, reason, now);
                prop_assert!(room <= alone, "{budget:?} allows {alone}, all together {room}");
            }
            if budgets.iter().all(|b| !b.reasons.is_empty() && !b.reasons.contains(&reason)) {
                prop_assert_eq!(room, nodes - disrupting, "no budget covers the reason");
            }
        }

        #[test]
        fn a_percentage_rounds_up_and_grows_with_the_pool(percent in 0usize..=100, nodes in 0usize..200) {
            let budget = [budget(&format!("{percent}%"), None, &[])];
            let now = at("2026-06-01T12:00:00Z");
            let these = allowed(&budget, nodes, EMPTY, now).unwrap().unwrap();
            prop_assert!(these * 100 >= nodes * percent && (these == 0 || (these - 1) * 100 < nodes * percent));
            let bigger = allowed(&budget, nodes + 1, EMPTY, now).unwrap().unwrap();
            prop_assert!(bigger >= these);
        }
    }

    fn room_of(
        budget: &Budget,
        nodes: usize,
        disrupting: usize,
        reason: DisruptionReason,
        now: Timestamp,
    ) -> usize {
        room(std::slice::from_ref(budget), nodes, disrupting, reason, now).unwrap()
    }
}
