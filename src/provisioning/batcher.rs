//! Pending-pod batching: a batch closes once the set of pending pods has not changed for the
//! idle window (1 s), or when it has been open for the maximum window (10 s), so a burst of
//! pods is planned together rather than one by one.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Batcher {
    idle: Duration,
    max: Duration,
    opened: Option<Instant>,
    changed: Instant,
    seen: BTreeSet<String>,
}

impl Batcher {
    pub fn new(idle: Duration, max: Duration, now: Instant) -> Self {
        Self {
            idle,
            max,
            opened: None,
            changed: now,
            seen: BTreeSet::new(),
        }
    }

    /// Records the pending pods seen at `now`; true when the batch should be planned now.
    /// Planning resets the batch.
    pub fn observe(&mut self, pending: BTreeSet<String>, now: Instant) -> bool {
        if pending.is_empty() {
            self.opened = None;
            self.seen.clear();
            return false;
        }
        if pending != self.seen {
            self.seen = pending;
            self.changed = now;
        }
        let opened = *self.opened.get_or_insert(now);
        let close =
            now.duration_since(self.changed) >= self.idle || now.duration_since(opened) >= self.max;
        if close {
            self.opened = None;
            self.seen.clear();
        }
        close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_quiet_second_closes_the_batch() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut batcher = Batcher::new(Duration::from_secs(1), Duration::from_secs(10), start);
        assert!(!batcher.observe(pods(&["a"]), at(0)));
        assert!(!batcher.observe(pods(&["a", "b"]), at(600)));
        assert!(!batcher.observe(pods(&["a", "b"]), at(1500)));
        assert!(batcher.observe(pods(&["a", "b"]), at(1600)));
        assert!(!batcher.observe(BTreeSet::new(), at(1700)));
    }

    #[test]
    fn a_steady_stream_is_cut_at_the_maximum() {
        let start = Instant::now();
        let mut batcher = Batcher::new(Duration::from_secs(1), Duration::from_secs(10), start);
        let mut closed_at = None;
        for step in 0..30u64 {
            let now = start + Duration::from_millis(500 * step);
            let names: Vec<String> = (0..=step).map(|n| n.to_string()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            if batcher.observe(pods(&refs), now) {
                closed_at = Some(step);
                break;
            }
        }
        assert_eq!(
            closed_at,
            Some(20),
            "closed at 10 s although pods kept arriving"
        );
    }
}
