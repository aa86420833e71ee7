//! JobSchedule: enqueue a payload on a ScaledJob's queue on a cron schedule. Each tick enqueues
//! at most one message; `lastScheduleTime` in status is what makes that hold across restarts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "JobSchedule",
    namespaced,
    shortname = "js",
    category = "windlass",
    status = "JobScheduleStatus",
    derive = "PartialEq",
    doc = "Submits a job to a ScaledJob's queue on a cron schedule.",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "ScaledJob", type_ = "string", json_path = ".spec.scaledJob"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    /// Five-field cron (minute hour day-of-month month day-of-week) or a macro like `@hourly`.
    #[schemars(length(max = 256))]
    #[x_kube(
        validation = cron::shape_rule(),
        validation = cron::field_rule(0),
        validation = cron::field_rule(1),
        validation = cron::field_rule(2),
        validation = cron::field_rule(3),
        validation = cron::field_rule(4),
        validation = cron::ascending_ranges_rule()
    )]
    pub schedule: String,
    /// The IANA time zone the schedule is read in.
    #[serde(default = "default_time_zone")]
    #[schemars(
        length(max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: String,
    /// The ScaledJob in this namespace whose queue receives the payload.
    #[schemars(length(min = 1, max = 253))]
    pub scaled_job: String,
    /// The job's input, delivered as the message body's `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_json")]
    pub payload: Option<serde_json::Value>,
    /// Stop enqueueing. Ticks while suspended count as missed: on resume, the most recent one is
    /// still enqueued if it is within `startingDeadlineSeconds`, as with a CronJob.
    #[serde(default)]
    pub suspend: bool,
    /// A tick missed (controller down) by more than this many seconds is skipped; only the most
    /// recent missed tick within the deadline is enqueued. Unset: 60 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// Any JSON value, kept as given.
fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The tick last enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// A tick claimed for enqueueing whose send is not yet confirmed; after a restart it is
    /// sent again with the same message id, never a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_schedule_time: Option<Time>,
    /// The tick last skipped: late beyond the starting deadline, or while suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_missed_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The id of the message enqueued for the last tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_id: Option<String>,
}

/// The cron syntax that croner (the parser the controller uses) accepts, checked by the API
/// server field by field: values in the field's range (names for months and weekdays), `*`,
/// ranges, steps and lists, `?` `L` `W` in day-of-month, `?` `L` `#` in day-of-week, and
/// croner's macros. A range written with names that runs backwards (`FRI-MON`) passes here and
/// is reported by the controller.
pub mod cron {
    use kube::core::{Message, Rule};

    /// Matches a schedule that is a macro, or tries to be one.
    pub const MACRO_START: &str = r"^\s*@";
    pub const MACRO: &str = r"(?i)^\s*@(yearly|annually|monthly|weekly|daily|hourly)\s*$";
    /// One whitespace-separated field, as croner splits them.
    pub const FIELD: &str = r"\S+";
    /// A numeric range, whose ends croner wants in order.
    pub const NUMERIC_RANGE: &str = r"[0-9]+-[0-9]+";
    const STEP: &str = r"0*[1-9][0-9]{0,3}";

    /// Each field's name, its values as a regex, and what it allows besides the common syntax.
    const FIELDS: [(&str, &str, &str); 5] = [
        ("minute", r"0*([0-9]|[1-5][0-9])", "0-59"),
        ("hour", r"0*([0-9]|1[0-9]|2[0-3])", "0-23"),
        ("day-of-month", r"0*([1-9]|[12][0-9]|3[01])", "1-31, L, nW"),
        (
            "month",
            r"0*([1-9]|1[0-2])|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC",
            "1-12 or JAN-DEC",
        ),
        (
            "day-of-week",
            r"0*[0-7]|SUN|MON|TUE|WED|THU|FRI|SAT",
            "0-7 or SUN-SAT, nL, n#1-5",
        ),
    ];

    /// The regex one field must match, whole.
    pub fn field_syntax(index: usize) -> String {
        let (_, value, _) = FIELDS[index];
        let range = format!("({value})(-({value}))?");
        let stepped = |star: &str| format!("(({star}|{range})/{STEP}|{range})");
        match index {
            2 => {
                let item = format!("({}|L|({value})W)", stepped("[*?]"));
                format!("(?i)^([*?]|{item}(,{item})*)$")
            }
            4 => {
                let item = format!("({}(#[1-5])?|({value})#?L|L)", stepped("[*?]"));
                format!(r"(?i)^\+?([*?]|{item}(,{item})*)$")
            }
            _ => {
                let item = stepped(r"\*");
                format!(r"(?i)^(\*|{item}(,{item})*)$")
            }
        }
    }

    pub fn shape_rule() -> Rule {
        Rule::new(format!(
            "self.matches(r'{MACRO_START}') ? self.matches(r'{MACRO}') : size(self.findAll(r'{FIELD}')) == 5"
        ))
        .message("must be five fields (minute hour day-of-month month day-of-week) or one of @yearly, @annually, @monthly, @weekly, @daily, @hourly")
    }

    pub fn field_rule(index: usize) -> Rule {
        let (name, _, allowed) = FIELDS[index];
        Rule::new(format!(
            "self.matches(r'{MACRO_START}') || size(self.findAll(r'{FIELD}')) != 5 || self.findAll(r'{FIELD}')[{index}].matches(r'{}')",
            field_syntax(index)
        ))
        .message(Message::Message(format!(
            "{name} must be *, or {allowed}, as single values, ranges (a-b), steps (*/n, a/n, a-b/n) or lists of them"
        )))
    }

    pub fn ascending_ranges_rule() -> Rule {
        Rule::new(format!(
            "self.findAll(r'{NUMERIC_RANGE}').all(r, int(r.split('-')[0]) <= int(r.split('-')[1]))"
        ))
        .message("a range must run from low to high, e.g. 10-30, not 30-10")
    }
}
