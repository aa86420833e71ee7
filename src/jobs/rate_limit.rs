//! Request rate limits per caller: a token bucket per key (an authenticated identity, or a
//! remote address before authentication) that refills at a steady rate up to a burst.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept at most; past it, full ones (which hold no state worth keeping) are dropped.
const MAX_BUCKETS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests a caller may make per second, sustained.
    pub per_second: f64,
    /// Requests a caller may make at once after a lull.
    pub burst: u32,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until one is available.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |bucket| {
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                true
            } else {
                false
            }
        })
    }

    /// Whether `key` may make a request now, without taking one: for requests charged only if
    /// they turn out to fail.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |bucket| bucket.tokens >= 1.0)
    }

    fn with_bucket(
        &self,
        key: &str,
        admit: impl FnOnce(&mut Bucket) -> bool,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let capacity = f64::from(self.limit.burst);
        let mut buckets = self
            .buckets
            .lock()
            .expect("rate limiter lock is never poisoned");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let per_second = self.limit.per_second;
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * per_second
                    < capacity
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.refilled).as_secs_f64() * self.limit.per_second)
            .min(capacity);
        bucket.refilled = now;
        if admit(bucket) {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.limit.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_requests_wait_for_the_refill_per_key() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            limiter.take("user:a").unwrap();
        }
        let wait = limiter.take("user:a").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.check("user:a"), Err(Duration::from_millis(500)));
        // Another caller has its own bucket.
        limiter.take("user:b").unwrap();

        tokio::time::advance(Duration::from_millis(500)).await;
        limiter.check("user:a").unwrap();
        limiter.take("user:a").unwrap();
        assert!(limiter.take("user:a").is_err());

        // A long lull refills up to the burst, no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            limiter.take("user:a").unwrap();
        }
        assert!(limiter.take("user:a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn check_takes_nothing() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1,
        });
        for _ in 0..10 {
            limiter.check("addr:127.0.0.1").unwrap();
        }
        limiter.take("addr:127.0.0.1").unwrap();
        assert_eq!(limiter.check("addr:127.0.0.1"), Err(Duration::from_secs(1)));
    }
}
