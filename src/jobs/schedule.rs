//! Cron schedules and the missed-tick policy, without I/O: given the clock and what was last
//! enqueued, which tick (if any) is due now and when the next one comes.
//!
//! Policy, as a Kubernetes CronJob with `concurrencyPolicy: Allow`: a tick is due once the clock
//! passes it. Only the most recent tick since the last enqueued one (or since the schedule was
//! created) counts; older missed ticks are dropped, never made up in a burst. A tick more than
//! `startingDeadlineSeconds` (default 60) old is missed, not enqueued. Suspended schedules
//! enqueue nothing; their ticks count as missed.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::{SignedDuration, Timestamp};

/// 2000-01-01T00:00:00Z: where the search for a schedule's first tick starts.
const CYCLE_START: i64 = 946_684_800;

/// How late a tick may still be enqueued when the schedule does not say.
pub const DEFAULT_STARTING_DEADLINE: SignedDuration = SignedDuration::from_secs(60);

/// A parsed cron expression in its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    time_zone: Tz,
}

/// Why a schedule does not parse, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: &'static str,
    pub message: String,
}

impl Schedule {
    /// Parses a five-field cron expression (or a macro such as `@hourly`) and an IANA time zone.
    pub fn parse(cron: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let cron = parser.parse(cron).map_err(|error| ScheduleError {
            field: "cron",
            message: format!("{cron:?} is not a valid five-field cron expression: {error}"),
        })?;
        let time_zone = Tz::from_str(time_zone).map_err(|_| ScheduleError {
            field: "timeZone",
            message: format!("{time_zone:?} is not an IANA time zone"),
        })?;
        Ok(Self { cron, time_zone })
    }

    /// As [`Schedule::parse`], and refusing an expression no date matches: `0 0 30 2 *` parses,
    /// but February has no 30th. What a JobSchedule takes.
    pub fn parse_firing(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let schedule = Self::parse(expression, time_zone)?;
        // Ticks repeat every 400 years (the Gregorian calendar's cycle, a whole number of
        // weeks), so a pattern without a tick in the 400 years from a fixed date has none ever.
        let cycle_start = DateTime::from_timestamp(CYCLE_START, 0)
            .expect("a fixed date")
            .with_timezone(&schedule.time_zone);
        let fires = schedule
            .cron
            .find_next_occurrence(&cycle_start, true)
            .is_ok_and(|tick| tick.year() < cycle_start.year() + 400);
        if !fires {
            return Err(ScheduleError {
                field: "cron",
                message: format!("{expression:?} never fires: no date in {time_zone} matches it"),
            });
        }
        Ok(schedule)
    }

    /// The latest tick at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let local = to_chrono(at)?.with_timezone(&self.time_zone);
        let tick = self.cron.find_previous_occurrence(&local, true).ok()?;
        from_chrono(tick.with_timezone(&Utc))
    }

    /// The first tick strictly after `at`.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        let local = to_chrono(at)?.with_timezone(&self.time_zone);
        let tick = self.cron.find_next_occurrence(&local, false).ok()?;
        from_chrono(tick.with_timezone(&Utc))
    }
}

/// Whole seconds only: croner keeps the sub-second part of its starting point in the ticks it
/// returns, and a tick must be the same instant however late in its second it was looked up.
fn to_chrono(at: Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.as_second(), 0)
}

fn from_chrono(at: DateTime<Utc>) -> Option<Timestamp> {
    Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos().try_into().ok()?).ok()
}

/// What a schedule should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Enqueue this tick.
    Enqueue(Timestamp),
    /// This tick was not enqueued in time (or fell while suspended); skip it.
    Missed(Timestamp),
    /// No tick since the last one enqueued.
    Nothing,
}

/// The tick due at `now`, given the last enqueued (or claimed) tick or, for a schedule that
/// never enqueued, its creation time.
pub fn due(
    schedule: &Schedule,
    now: Timestamp,
    since: Timestamp,
    starting_deadline: SignedDuration,
    suspended: bool,
) -> Due {
    match schedule.latest_at_or_before(now) {
        Some(tick) if tick > since => {
            if suspended || now.duration_since(tick) > starting_deadline {
                Due::Missed(tick)
            } else {
                Due::Enqueue(tick)
            }
        }
        _ => Due::Nothing,
    }
}

/// The deadline a JobSchedule asks for, or the default.
pub fn starting_deadline(seconds: Option<i64>) -> SignedDuration {
    seconds.map_or(DEFAULT_STARTING_DEADLINE, SignedDuration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *", "UTC").unwrap()
    }

    #[test]
    fn parse_errors_name_the_field() {
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "* * * * MONDAYS",
            "hello",
        ] {
            assert_eq!(
                Schedule::parse(bad, "UTC").unwrap_err().field,
                "cron",
                "{bad:?}"
            );
        }
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            assert!(
                Schedule::parse(never, "UTC").is_ok(),
                "{never:?} is valid cron"
            );
            let error = Schedule::parse_firing(never, "Europe/Berlin").unwrap_err();
            assert_eq!(
                (error.field, error.message.as_str()),
                (
                    "cron",
                    format!("{never:?} never fires: no date in Europe/Berlin matches it").as_str()
                )
            );
        }
        assert!(
            Schedule::parse_firing("0 0 29 2 *", "UTC").is_ok(),
            "every leap year"
        );
        let zone = Schedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(zone.field, "timeZone");
        assert!(Schedule::parse("@hourly", "Europe/Berlin").is_ok());
        assert!(Schedule::parse("*/5 9-17 * * MON-FRI", "America/New_York").is_ok());
    }

    #[test]
    fn ticks_are_read_in_the_time_zone() {
        let nine_in_berlin = Schedule::parse("0 9 * * *", "Europe/Berlin").unwrap();
        // 09:00 CET is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(
            nine_in_berlin.next_after(at("2026-11-23T00:00:00Z")),
            Some(at("2026-11-23T08:00:00Z"))
        );
        assert_eq!(
            nine_in_berlin.next_after(at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn ticks_fall_on_whole_seconds_whenever_they_are_looked_up() {
        let schedule = every_minute();
        for now in ["2026-11-23T10:01:00.4Z", "2026-11-23T10:01:59.999Z"] {
            assert_eq!(
                schedule.latest_at_or_before(at(now)),
                Some(at("2026-11-23T10:01:00Z")),
                "{now}"
            );
            assert_eq!(
                schedule.next_after(at(now)),
                Some(at("2026-11-23T10:02:00Z")),
                "{now}"
            );
        }
    }

    #[test]
    fn a_tick_is_due_once_the_clock_passes_it() {
        let schedule = every_minute();
        let created = at("2026-11-23T10:00:30Z");
        let deadline = DEFAULT_STARTING_DEADLINE;
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:00:59Z"),
                created,
                deadline,
                false
            ),
            Due::Nothing,
            "the tick before creation is not enqueued"
        );
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:01:00Z"),
                created,
                deadline,
                false
            ),
            Due::Enqueue(at("2026-11-23T10:01:00Z"))
        );
        let enqueued = at("2026-11-23T10:01:00Z");
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:01:40Z"),
                enqueued,
                deadline,
                false
            ),
            Due::Nothing,
            "a tick is enqueued once"
        );
    }

    #[test]
    fn after_an_outage_only_the_latest_tick_counts_and_only_within_the_deadline() {
        let schedule = every_minute();
        let enqueued = at("2026-11-23T10:00:00Z");
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:05:20Z"),
                enqueued,
                DEFAULT_STARTING_DEADLINE,
                false
            ),
            Due::Enqueue(at("2026-11-23T10:05:00Z"))
        );
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:05:20Z"),
                enqueued,
                SignedDuration::from_secs(10),
                false
            ),
            Due::Missed(at("2026-11-23T10:05:00Z"))
        );
    }

    #[test]
    fn suspended_schedules_miss_their_ticks() {
        let schedule = every_minute();
        assert_eq!(
            due(
                &schedule,
                at("2026-11-23T10:01:05Z"),
                at("2026-11-23T10:00:00Z"),
                DEFAULT_STARTING_DEADLINE,
                true
            ),
            Due::Missed(at("2026-11-23T10:01:00Z"))
        );
    }

    proptest! {
        /// Stepping the clock forward in any increments enqueues each tick at most once, in
        /// order, and never one older than the deadline.
        #[test]
        fn each_tick_is_enqueued_at_most_once(steps_ms in prop::collection::vec(1i64..400_000, 1..60), deadline in 0i64..120) {
            let schedule = every_minute();
            let deadline = SignedDuration::from_secs(deadline);
            let mut now = at("2026-11-23T10:00:30.250Z");
            let mut since = now;
            let mut enqueued = Vec::new();
            for step in steps_ms {
                now += SignedDuration::from_millis(step);
                if let Due::Enqueue(tick) = due(&schedule, now, since, deadline, false) {
                    prop_assert!(tick <= now && now.duration_since(tick) <= deadline);
                    prop_assert_eq!(tick.as_second() % 60, 0);
                    prop_assert_eq!(tick.subsec_nanosecond(), 0);
                    enqueued.push(tick);
                    since = tick;
                }
            }
            prop_assert!(enqueued.windows(2).all(|pair| pair[0] < pair[1]));
        }
    }

    /// What the CRD's CEL rules on `spec.schedule` decide, evaluated with the same regexes.
    fn schema_accepts(schedule: &str) -> bool {
        use crate::apis::job_schedule::cron;
        use regex::Regex;
        let matches = |pattern: &str, text: &str| Regex::new(pattern).unwrap().is_match(text);
        if matches(cron::MACRO_START, schedule) {
            return matches(cron::MACRO, schedule);
        }
        let fields: Vec<&str> = Regex::new(cron::FIELD)
            .unwrap()
            .find_iter(schedule)
            .map(|m| m.as_str())
            .collect();
        let ascending = Regex::new(cron::NUMERIC_RANGE)
            .unwrap()
            .find_iter(schedule)
            .all(|range| {
                let (low, high) = range.as_str().split_once('-').unwrap();
                low.parse::<u64>().unwrap() <= high.parse::<u64>().unwrap()
            });
        fields.len() == 5
            && fields
                .iter()
                .enumerate()
                .all(|(index, field)| matches(&cron::field_syntax(index), field))
            && ascending
    }

    #[test]
    fn the_schema_accepts_exactly_what_croner_accepts() {
        for schedule in [
            "* * * * *",
            "*/5 9-17 * JAN-MAR MON-FRI",
            "0 0 L * *",
            "0 12 15W * ?",
            "0 0 ? * 5#2",
            "30 4 1,15 * 5L",
            "0 0 * * SAT-SUN",
            "0 0 * * +1-5",
            "0-30/10 0/6 1-31/2 jan-dec/3 sun-sat",
            "@hourly",
            " @Daily ",
            "@annually",
            "61 * * * *",
            "0 24 * * *",
            "0 0 32 * *",
            "0 0 0 * *",
            "0 0 * 13 *",
            "0 0 * * 8",
            "30-10 * * * *",
            "*/0 * * * *",
            "* * * *",
            "* * * * * *",
            "@midnight",
            "@every 5m",
            "0 0 5L * *",
            "0 0 * * 1#6",
            "0 0 * * 1W",
            "0 0 L * L",
            "*,5 * * * *",
            "? * * * *",
            "",
        ] {
            assert_eq!(
                schema_accepts(schedule),
                Schedule::parse(schedule, "UTC").is_ok(),
                "{schedule:?}"
            );
        }
    }

    /// One item of a cron field built from numbers and the special characters, in any field.
    fn cron_item() -> impl Strategy<Value = String> {
        let number = 0u32..66;
        let step = 0u32..70;
        prop_oneof![
            Just("*".to_owned()),
            Just("?".to_owned()),
            Just("L".to_owned()),
            number.clone().prop_map(|n| n.to_string()),
            (number.clone(), number.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
            (number.clone(), step.clone()).prop_map(|(a, s)| format!("{a}/{s}")),
            step.clone().prop_map(|s| format!("*/{s}")),
            (number.clone(), number.clone(), step).prop_map(|(a, b, s)| format!("{a}-{b}/{s}")),
            number.clone().prop_map(|n| format!("{n}W")),
            number.clone().prop_map(|n| format!("{n}L")),
            (number.clone(), 0u32..7).prop_map(|(n, k)| format!("{n}#{k}")),
            (number.clone(), number, 0u32..7).prop_map(|(a, b, k)| format!("{a}-{b}#{k}")),
        ]
    }

    proptest! {
        #[test]
        fn generated_schedules_get_the_same_verdict_from_the_schema_and_croner(
            fields in proptest::collection::vec(
                proptest::collection::vec(cron_item(), 1..3).prop_map(|items| items.join(",")),
                5,
            )
        ) {
            let schedule = fields.join(" ");
            prop_assert_eq!(
                schema_accepts(&schedule),
                Schedule::parse(&schedule, "UTC").is_ok(),
                "{:?}", schedule
            );
        }
    }
}
