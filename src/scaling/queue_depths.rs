//! Queue readings shared by every object that polls the same queue with the same credentials.
//! Polls are put on one clock per polling interval and queue ([`PollClock`]), so objects polling
//! a queue at the same interval poll on the same ticks however far apart they started; a poll
//! then joins the request of its own tick (in flight or answered) and otherwise sends its own.
//! One GetQueueAttributes per queue per tick, and no poll ever acts on a request sent before its
//! tick, however slow the queue or the poll. Different queues tick at different offsets within
//! the interval, so a thousand objects on a hundred queues do not all wake at the same instant.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

/// How long an answered reading is kept for polls of its tick that come late (a slow
/// Kubernetes API before the poll's read); a poll later than this asks again.
const KEEP_ANSWERED: Duration = Duration::from_secs(60);

/// Which queue, as whom: readings are shared only between identical keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueKey {
    pub queue_url: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// Names the credentials (e.g. an access key id or a role ARN), never a secret.
    pub identity: String,
}

/// The message counts SQS reports for a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueAttributes {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// A request's outcome, and when the request was sent.
struct SharedReading {
    sent: Instant,
    outcome: Shared<BoxFuture<'static, Result<QueueAttributes, String>>>,
}

#[derive(Clone)]
pub struct QueueDepths {
    readings: Arc<Mutex<HashMap<QueueKey, SharedReading>>>,
    /// Every [`PollClock`] ticks on multiples of its interval from here.
    epoch: Instant,
}

impl Default for QueueDepths {
    fn default() -> Self {
        Self {
            readings: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

fn worth_keeping(reading: &SharedReading, now: Instant) -> bool {
    reading.outcome.peek().is_none() || now.duration_since(reading.sent) < KEEP_ANSWERED
}

impl QueueDepths {
    /// The queue's attributes for a poll of the tick `tick`: the request for `key` sent at or
    /// after that tick (in flight or answered), or else a new request made with `fetch`.
    pub async fn get<F, Fut>(
        &self,
        key: QueueKey,
        tick: Instant,
        fetch: F,
    ) -> Result<QueueAttributes, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<QueueAttributes, String>> + Send + 'static,
    {
        let reading = {
            let mut readings = self.readings.lock().expect("queue readings lock");
            let now = Instant::now();
            readings.retain(|_, reading| worth_keeping(reading, now));
            match readings.get(&key) {
                Some(reading) if reading.sent >= tick => reading.outcome.clone(),
                _ => {
                    let outcome = fetch().boxed().shared();
                    readings.insert(
                        key,
                        SharedReading {
                            sent: now,
                            outcome: outcome.clone(),
                        },
                    );
                    outcome
                }
            }
        };
        reading.await
    }

    /// The clock an object polling every `interval` ticks on, until it knows its source.
    pub fn poll_clock(&self, interval: Duration) -> PollClock {
        PollClock {
            epoch: self.epoch,
            interval,
            phase: Duration::ZERO,
            last: None,
        }
    }
}

/// When an object polls: at once when its loop starts, then on the ticks shared by every object
/// that polls the same source at the same interval, at least one interval after its previous
/// poll (a poll that overran a tick waits for the next one rather than following at once).
pub struct PollClock {
    epoch: Instant,
    interval: Duration,
    /// Where within the interval this source's ticks fall.
    phase: Duration,
    last: Option<Instant>,
}

impl PollClock {
    /// Ticks from now on at the offset within the interval that belongs to `source` (a queue
    /// URL): the same for every object polling it, spread evenly over the interval across
    /// sources.
    pub fn follow(&mut self, source: &str) {
        let mut hasher = DefaultHasher::new();
        source.hash(&mut hasher);
        let interval = self.interval.as_nanos().max(1);
        let offset = u128::from(hasher.finish()) % interval;
        self.phase = Duration::from_nanos(u64::try_from(offset).unwrap_or(0));
    }

    /// Waits for the next tick and returns it: the moment a shared reading must be sent at or
    /// after for this poll to take it.
    pub async fn tick(&mut self) -> Instant {
        let now = Instant::now();
        let due = match self.last {
            None => now,
            Some(last) => self.tick_at_or_after((last + self.interval).max(now)),
        };
        tokio::time::sleep_until(due).await;
        self.last = Some(due);
        due
    }

    fn tick_at_or_after(&self, at: Instant) -> Instant {
        let interval = self.interval.as_nanos().max(1);
        let start = self.epoch + self.phase;
        let ticks = at
            .saturating_duration_since(start)
            .as_nanos()
            .div_ceil(interval);
        let offset = u64::try_from(ticks * interval).unwrap_or(u64::MAX);
        start + Duration::from_nanos(offset)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn key(queue: &str, identity: &str) -> QueueKey {
        QueueKey {
            queue_url: queue.into(),
            region: None,
            endpoint: None,
            identity: identity.into(),
        }
    }

    /// A poll of `tick` whose request takes `latency` and is counted in `calls`.
    async fn read_taking(
        depths: &QueueDepths,
        key: QueueKey,
        tick: Instant,
        calls: &Arc<AtomicU32>,
        latency: Duration,
    ) -> Result<QueueAttributes, String> {
        let calls = calls.clone();
        depths
            .get(key, tick, move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(latency).await;
                Ok(QueueAttributes {
                    visible: 7,
                    in_flight: 1,
                    delayed: 0,
                })
            })
            .await
    }

    async fn read(
        depths: &QueueDepths,
        key: QueueKey,
        tick: Instant,
        calls: &Arc<AtomicU32>,
    ) -> Result<QueueAttributes, String> {
        read_taking(depths, key, tick, calls, Duration::from_millis(10)).await
    }

    #[tokio::test(start_paused = true)]
    async fn polls_of_one_tick_share_one_request() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        let tick = Instant::now();
        let (a, b) = tokio::join!(
            read(&depths, key("q", "role-a"), tick, &calls),
            read(&depths, key("q", "role-a"), tick, &calls)
        );
        assert_eq!(a.unwrap().visible, 7);
        assert_eq!(b.unwrap().visible, 7);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1500)).await;
        read(&depths, key("q", "role-a"), tick, &calls)
            .await
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a poll of the same tick that reaches its read late takes the same reading"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_of_the_same_tick_waits_for_its_slow_request() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        let tick = Instant::now();
        let slow = read_taking(
            &depths,
            key("q", "role-a"),
            tick,
            &calls,
            Duration::from_secs(2),
        );
        let late = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            read(&depths, key("q", "role-a"), tick, &calls).await
        };
        let (slow, late) = tokio::join!(slow, late);
        assert_eq!(slow.unwrap(), late.unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_still_in_flight_is_not_taken_by_the_next_tick() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        let first = Instant::now();
        let slow = read_taking(
            &depths,
            key("q", "role-a"),
            first,
            &calls,
            Duration::from_secs(3),
        );
        let next = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            read(
                &depths,
                key("q", "role-a"),
                first + Duration::from_secs(2),
                &calls,
            )
            .await
        };
        let (slow, next) = tokio::join!(slow, next);
        slow.unwrap();
        next.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_one_interval_apart_each_send_their_own_request() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        for poll in 1..=5 {
            read(&depths, key("q", "role-a"), Instant::now(), &calls)
                .await
                .unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), poll, "poll {poll}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_not_taken_by_the_next_interval() {
        // Answered 800 ms after it was sent, the reading is only 200 ms old at the next tick.
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        read_taking(
            &depths,
            key("q", "role-a"),
            Instant::now(),
            &calls,
            Duration::from_millis(800),
        )
        .await
        .unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
        read(&depths, key("q", "role-a"), Instant::now(), &calls)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn different_credentials_or_queues_do_not_share() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        let tick = Instant::now();
        read(&depths, key("q", "role-a"), tick, &calls)
            .await
            .unwrap();
        read(&depths, key("q", "role-b"), tick, &calls)
            .await
            .unwrap();
        read(&depths, key("other", "role-a"), tick, &calls)
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn objects_started_apart_poll_on_the_same_ticks() {
        let depths = QueueDepths::default();
        let start = Instant::now();
        let interval = Duration::from_secs(2);
        tokio::time::advance(Duration::from_millis(300)).await;
        let mut first = depths.poll_clock(interval);
        first.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(300), "polls at once");
        tokio::time::advance(Duration::from_millis(1150)).await;
        let mut second = depths.poll_clock(interval);
        second.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1450));
        first.tick().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(4),
            "a whole interval later"
        );
        second.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(4), "the same tick");
        first.tick().await;
        second.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn objects_following_one_queue_share_its_ticks_at_its_offset() {
        let depths = QueueDepths::default();
        let epoch = Instant::now();
        let interval = Duration::from_secs(1);
        let mut first = depths.poll_clock(interval);
        first.tick().await;
        first.follow("https://sqs/q-1");
        tokio::time::advance(Duration::from_millis(2300)).await;
        let mut second = depths.poll_clock(interval);
        second.tick().await;
        second.follow("https://sqs/q-1");
        assert_eq!(first.phase, second.phase);
        // The first clock's next tick is the first at its offset after 2.3 s; the second's
        // comes a whole interval after its first poll, on a tick the first clock has too.
        let early = first.tick().await;
        let whole_seconds = if first.phase >= Duration::from_millis(300) {
            2
        } else {
            3
        };
        assert_eq!(
            early.duration_since(epoch),
            Duration::from_secs(whole_seconds) + first.phase
        );
        let (a, b) = tokio::join!(first.tick(), second.tick());
        assert_eq!(a, b, "the same tick");
        assert_eq!(a - early, interval);
    }

    #[test]
    fn a_hundred_queues_spread_over_the_interval() {
        let depths = QueueDepths::default();
        let interval = Duration::from_secs(1);
        let mut per_10ms = HashMap::<u128, u32>::new();
        for queue in 0..100 {
            let mut clock = depths.poll_clock(interval);
            clock.follow(&format!(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/q-{queue}"
            ));
            assert!(clock.phase < interval);
            *per_10ms.entry(clock.phase.as_millis() / 10).or_default() += 1;
        }
        // Evenly spread, 100 queues over 100 slots fill about 63 of them.
        assert!(per_10ms.len() >= 40, "{} slots of 100 used", per_10ms.len());
        assert!(per_10ms.values().all(|&n| n <= 6), "{per_10ms:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_overran_its_tick_waits_for_the_next_one() {
        let depths = QueueDepths::default();
        let start = Instant::now();
        let mut clock = depths.poll_clock(Duration::from_secs(1));
        clock.tick().await;
        tokio::time::advance(Duration::from_millis(1200)).await;
        clock.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
