//! Expiration, without I/O: a NodeClaim older than its `expireAfter` (from the NodePool
//! template when it was made; `Never` turns it off) is replaced. Expiration is not voluntary:
//! budgets and do-not-disrupt do not hold it, only the drain's PodDisruptionBudgets and
//! `terminationGracePeriod` do.

use jiff::{SignedDuration, Timestamp};

use crate::apis::node_claim::NodeClaim;

/// `expireAfter` as a duration; `None` for `Never` (or a value the schema would refuse).
pub fn expire_after(claim: &NodeClaim) -> Option<SignedDuration> {
    let value = claim.spec.expire_after.as_str();
    (value != "Never").then(|| value.parse().ok()).flatten()
}

/// Whether the claim has lived past its `expireAfter` at `now`.
pub fn expired(claim: &NodeClaim, now: Timestamp) -> bool {
    let Some(lifetime) = expire_after(claim) else {
        return false;
    };
    claim
        .metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|created| now.duration_since(created.0) >= lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(expire_after: &str) -> NodeClaim {
        crate::apis::testing::node_claim(json!({
            "metadata": {"creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"expireAfter": expire_after}
        }))
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    #[test]
    fn a_claim_expires_once_it_has_lived_its_expire_after() {
        let claim = claim("1h30m");
        assert!(!expired(&claim, at("2026-12-01T01:29:59Z")));
        assert!(expired(&claim, at("2026-12-01T01:30:00Z")));
    }

    #[test]
    fn never_and_the_default_of_720h() {
        assert!(!expired(&claim("Never"), at("2036-12-01T00:00:00Z")));
        assert!(!expired(&claim("720h"), at("2026-12-30T23:59:59Z")));
        assert!(expired(&claim("720h"), at("2026-12-31T00:00:00Z")));
    }
}
