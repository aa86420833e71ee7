//! JobSchedule: enqueue a payload on a ScaledJob's queue on a cron schedule. Each tick enqueues
//! at most one message; `lastScheduleTime` in status is what makes that hold across restarts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    /// Five-field cron (minute hour day-of-month month day-of-week) or a macro like `@hourly`.
    #[schemars(
        length(max = 256),
        regex(
            pattern = r"^\s*(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?#L-]+(\s+[0-9A-Za-z*/,?#L-]+){4})\s*$"
        )
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
