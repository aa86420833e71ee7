//! Disrupting, without I/O: condition `Disrupting` on a NodeClaim that is being replaced
//! (its replacements launching) or deleted (its node draining), with why.

use jiff::Timestamp;

use super::set_condition;
use crate::apis::labels::{DISRUPTION_ANNOTATION, REPLACED_BY_ANNOTATION};
use crate::apis::node_claim::{CONDITION_DISRUPTING, NodeClaim, NodeClaimStatus};

/// Sets `Disrupting` while the claim is being replaced or deleted; removes it otherwise.
pub fn mark(status: &mut NodeClaimStatus, claim: &NodeClaim, now: Timestamp) {
    let annotations = claim.metadata.annotations.as_ref();
    let method = annotations.and_then(|a| a.get(DISRUPTION_ANNOTATION));
    let reason = match method.map(String::as_str) {
        Some("drifted") => "Drifted",
        Some("expired") => "Expired",
        Some("underutilized") => "Underutilized",
        _ => "Deleted",
    };
    let message = if claim.metadata.deletion_timestamp.is_some() {
        "its node is being drained, then its instance terminated".to_owned()
    } else if method.is_some() {
        let replacements = annotations
            .and_then(|a| a.get(REPLACED_BY_ANNOTATION))
            .map_or("", String::as_str);
        if replacements.is_empty() {
            "cordoned: it goes once the ScaledJob Jobs running there are done".to_owned()
        } else {
            format!("replacements {replacements} are launching; it goes once they are Initialized")
        }
    } else {
        status
            .conditions
            .retain(|c| c.type_ != CONDITION_DISRUPTING);
        return;
    };
    set_condition(
        status,
        claim,
        CONDITION_DISRUPTING,
        true,
        reason,
        message,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(metadata: serde_json::Value) -> NodeClaim {
        crate::apis::testing::node_claim(json!({ "metadata": metadata }))
    }

    #[test]
    fn a_replacement_then_its_drain_are_disrupting_and_say_why() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut status = NodeClaimStatus::default();
        mark(&mut status, &claim(json!({})), now);
        assert!(status.conditions.is_empty());
        let replacing = claim(json!({"annotations": {
            DISRUPTION_ANNOTATION: "drifted", REPLACED_BY_ANNOTATION: "c-new"}}));
        mark(&mut status, &replacing, now);
        assert_eq!(status.conditions[0].type_, CONDITION_DISRUPTING);
        assert_eq!(status.conditions[0].reason, "Drifted");
        assert!(status.conditions[0].message.contains("c-new"));
        let cordoned = claim(json!({"annotations": {
            DISRUPTION_ANNOTATION: "underutilized", REPLACED_BY_ANNOTATION: ""}}));
        mark(&mut status, &cordoned, now);
        assert_eq!(status.conditions[0].reason, "Underutilized");
        assert!(status.conditions[0].message.contains("ScaledJob"));
        let deleting = claim(json!({"deletionTimestamp": "2027-01-15T08:00:00Z"}));
        mark(&mut status, &deleting, now);
        assert_eq!(status.conditions[0].reason, "Deleted");
        assert!(status.conditions[0].message.contains("drained"));
    }
}
