//! Kubernetes Events, as every controller publishes them: notes cut to what the Events API
//! accepts, a repeat of the same Event counted in its series, and a failure to publish logged
//! rather than failing the reconcile.
//!
//! kube-runtime's `Recorder` treats a repeat with another note as the same Event, so a count
//! grows under the first message while the message has changed ("Scaled from 0 to 1", count 2,
//! for a 1 → 2 scale-up). Here the note is part of what makes an Event the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::{Api, Resource};
use serde_json::json;
use tracing::warn;

/// A repeat within this long of the last one extends the Event's series; later, a new Event.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// What makes two Events the same: the object, type, reason, action and note.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    regarding: (String, String, String, String),
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

/// An Event already sent: its name and namespace, how often, and when last.
#[derive(Clone, Debug)]
struct Sent {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

/// Publishes Events for one controller process; cheap to clone, clones share what was sent.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    reporter: Reporter,
    sent: Arc<Mutex<HashMap<EventKey, Sent>>>,
}

impl Recorder {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            sent: Arc::default(),
        }
    }

    async fn send(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) -> Result<(), kube::Error> {
        let type_ = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = EventKey {
            regarding: (
                regarding.kind.clone().unwrap_or_default(),
                regarding.namespace.clone().unwrap_or_default(),
                regarding.name.clone().unwrap_or_default(),
                regarding.uid.clone().unwrap_or_default(),
            ),
            type_,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.clone(),
        };
        let now = Timestamp::now();
        let repeat = {
            let mut sent = self.sent.lock().expect("the Event cache is never poisoned");
            sent.retain(|_, sent| now.duration_since(sent.last) < SERIES_WINDOW);
            sent.get(&key).cloned()
        };
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let sent = match repeat {
            Some(previous) => {
                let count = previous.count + 1;
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                };
                Api::<K8sEvent>::namespaced(self.client.clone(), &previous.namespace)
                    .patch(
                        &previous.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "series": series })),
                    )
                    .await?;
                Sent {
                    count,
                    last: now,
                    ..previous
                }
            }
            None => {
                let name = format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                );
                let event = K8sEvent {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    action: Some(action.to_owned()),
                    reason: Some(reason.to_owned()),
                    note: Some(note),
                    type_: Some(type_.to_owned()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding),
                    reporting_controller: Some(self.reporter.controller.clone()),
                    reporting_instance: Some(
                        self.reporter
                            .instance
                            .clone()
                            .unwrap_or_else(|| self.reporter.controller.clone()),
                    ),
                    ..K8sEvent::default()
                };
                Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
                    .create(&PostParams::default(), &event)
                    .await?;
                Sent {
                    name,
                    namespace,
                    count: 1,
                    last: now,
                }
            }
        };
        self.sent
            .lock()
            .expect("the Event cache is never poisoned")
            .insert(key, sent);
        Ok(())
    }
}

/// Publishes an Event about `object`; `action` names what the controller was doing.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    publish_regarding(
        recorder,
        object.object_ref(&()),
        type_,
        reason,
        note,
        action,
    )
    .await;
}

/// Publishes an Event about the object `regarding` refers to.
pub async fn publish_regarding(
    recorder: &Recorder,
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let note = note_within_limit(note);
    if let Err(error) = recorder.send(regarding, type_, reason, note, action).await {
        warn!(%error, reason, "publishing an Event failed");
    }
}

/// The Events API rejects notes over 1024 bytes; long error texts are cut at a character
/// boundary and marked, so the Event still lands.
fn note_within_limit(mut note: String) -> String {
    const LIMIT: usize = 1024;
    if note.len() <= LIMIT {
        return note;
    }
    let mut end = LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_events_api() {
        assert_eq!(note_within_limit("short".into()), "short");
        let cut = note_within_limit("é".repeat(800));
        assert!(
            cut.len() <= 1024 && cut.ends_with('…'),
            "{} bytes",
            cut.len()
        );
    }
}
