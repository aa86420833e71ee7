//! Offerings that just failed for lack of capacity. An insufficient-capacity error from
//! CreateFleet marks its (capacity type, instance type, zone) unavailable for three minutes, so
//! the next launch takes the next offering, and spot falls back to on-demand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an offering stays unavailable after an insufficient-capacity error, as Karpenter.
pub const UNAVAILABLE_FOR: Duration = Duration::from_secs(180);

/// The EC2 error codes that mean "no capacity for this offering right now".
pub fn is_insufficient_capacity(code: &str) -> bool {
    matches!(
        code,
        "InsufficientInstanceCapacity"
            | "MaxSpotInstanceCountExceeded"
            | "UnfulfillableCapacity"
            | "InsufficientFreeAddressesInSubnet"
    )
}

#[derive(Debug, Default)]
pub struct UnavailableOfferings {
    until: HashMap<(String, String, String), Instant>,
}

impl UnavailableOfferings {
    pub fn mark(&mut self, capacity_type: &str, instance_type: &str, zone: &str, now: Instant) {
        let key = (
            capacity_type.to_owned(),
            instance_type.to_owned(),
            zone.to_owned(),
        );
        self.until.insert(key, now + UNAVAILABLE_FOR);
        self.until.retain(|_, until| *until > now);
    }

    pub fn is_unavailable(
        &self,
        capacity_type: &str,
        instance_type: &str,
        zone: &str,
        now: Instant,
    ) -> bool {
        let key = (
            capacity_type.to_owned(),
            instance_type.to_owned(),
            zone.to_owned(),
        );
        self.until.get(&key).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offering_is_unavailable_for_three_minutes() {
        let now = Instant::now();
        let mut unavailable = UnavailableOfferings::default();
        unavailable.mark("spot", "m5.large", "us-east-1a", now);
        assert!(unavailable.is_unavailable(
            "spot",
            "m5.large",
            "us-east-1a",
            now + Duration::from_secs(179)
        ));
        assert!(!unavailable.is_unavailable(
            "spot",
            "m5.large",
            "us-east-1a",
            now + Duration::from_secs(180)
        ));
        assert!(!unavailable.is_unavailable("on-demand", "m5.large", "us-east-1a", now));
        assert!(!unavailable.is_unavailable("spot", "m5.large", "us-east-1b", now));
        assert!(is_insufficient_capacity("InsufficientInstanceCapacity"));
        assert!(!is_insufficient_capacity("InvalidParameterValue"));
    }
}
