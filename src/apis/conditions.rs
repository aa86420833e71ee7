//! Standard status conditions: built with observedGeneration, and keeping lastTransitionTime
//! while the status stays the same, so writing status every pass does not look like a change.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const ACTIVE: &str = "Active";
pub const FALLBACK: &str = "Fallback";
pub const PAUSED: &str = "Paused";

/// The condition as it should be now, given the ones already in status.
pub fn condition(
    existing: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_transition_time_until_the_status_changes() {
        let first = condition(
            &[],
            READY,
            true,
            "Polling",
            "ok",
            Some(1),
            Timestamp::from_second(100).unwrap(),
        );
        let same = condition(
            std::slice::from_ref(&first),
            READY,
            true,
            "Polling",
            "still ok",
            Some(2),
            Timestamp::from_second(200).unwrap(),
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.observed_generation, Some(2));
        let flipped = condition(
            &[same],
            READY,
            false,
            "TriggerError",
            "down",
            Some(2),
            Timestamp::from_second(300).unwrap(),
        );
        assert_eq!(
            flipped.last_transition_time,
            Time(Timestamp::from_second(300).unwrap())
        );
    }
}
