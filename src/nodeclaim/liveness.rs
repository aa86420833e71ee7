//! Liveness: a NodeClaim not launched 5 minutes after it was created, or without a Node 15
//! minutes after launch, is given up (the controller deletes it, and termination removes what
//! it launched). No I/O.

use jiff::{SignedDuration, Timestamp};

use crate::apis::node_claim::{CONDITION_LAUNCHED, NodeClaim, NodeClaimStatus};

const LAUNCH_TIMEOUT: SignedDuration = SignedDuration::from_secs(300);
const REGISTRATION_TIMEOUT: SignedDuration = SignedDuration::from_secs(900);

/// Why the NodeClaim is past its launch or registration deadline, if it is.
pub fn missed_deadline(claim: &NodeClaim, now: Timestamp) -> Option<&'static str> {
    let status = claim.status.clone().unwrap_or_default();
    if status.provider_id.is_none() {
        let created = claim.metadata.creation_timestamp.as_ref()?.0;
        return (now.duration_since(created) > LAUNCH_TIMEOUT)
            .then_some("not launched within 5 minutes");
    }
    if status.node_name.is_none() {
        let launched = condition_time(&status, CONDITION_LAUNCHED)?;
        return (now.duration_since(launched) > REGISTRATION_TIMEOUT)
            .then_some("no Node registered within 15 minutes of launch");
    }
    None
}

fn condition_time(status: &NodeClaimStatus, type_: &str) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(status: serde_json::Value) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
            "status": status
        }))
        .unwrap()
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    #[test]
    fn unlaunched_claims_expire_five_minutes_after_creation() {
        let pending = claim(json!({}));
        assert_eq!(missed_deadline(&pending, at("2026-01-01T00:05:00Z")), None);
        assert_eq!(
            missed_deadline(&pending, at("2026-01-01T00:05:01Z")),
            Some("not launched within 5 minutes")
        );
    }

    #[test]
    fn unregistered_claims_expire_fifteen_minutes_after_launch() {
        let launched = claim(json!({
            "providerID": "aws:///z/i-1",
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                            "lastTransitionTime": "2026-01-01T00:04:00Z"}]
        }));
        assert_eq!(missed_deadline(&launched, at("2026-01-01T00:19:00Z")), None);
        assert_eq!(
            missed_deadline(&launched, at("2026-01-01T00:19:01Z")),
            Some("no Node registered within 15 minutes of launch")
        );
        let registered = claim(json!({
            "providerID": "aws:///z/i-1", "nodeName": "n",
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                            "lastTransitionTime": "2026-01-01T00:04:00Z"}]
        }));
        assert_eq!(
            missed_deadline(&registered, at("2027-01-01T00:00:00Z")),
            None
        );
    }
}
