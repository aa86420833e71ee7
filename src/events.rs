//! Kubernetes Events, as every controller publishes them: notes cut to what the Events API
//! accepts, and a failure to publish logged rather than failing the reconcile.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// Publishes an Event about `object`; `action` names what the controller was doing.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note_within_limit(note)),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
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
