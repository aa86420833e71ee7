//! Queue readings shared by every object that polls the same queue with the same credentials:
//! at most one GetQueueAttributes per queue per polling interval, and concurrent polls of a
//! queue wait on one request instead of each sending their own.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::time::Instant;

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

type SharedReading = Shared<BoxFuture<'static, Result<QueueAttributes, String>>>;

#[derive(Clone, Default)]
pub struct QueueDepths {
    readings: Arc<Mutex<HashMap<QueueKey, (Instant, SharedReading)>>>,
}

impl QueueDepths {
    /// The queue's attributes, fetched with `fetch` unless a reading no older than `max_age`
    /// (the caller's polling interval) exists or is in flight.
    pub async fn get<F, Fut>(
        &self,
        key: QueueKey,
        max_age: Duration,
        fetch: F,
    ) -> Result<QueueAttributes, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<QueueAttributes, String>> + Send + 'static,
    {
        let reading = {
            let mut readings = self.readings.lock().expect("queue readings lock");
            let now = Instant::now();
            readings.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(3600));
            match readings.get(&key) {
                Some((at, reading)) if now.duration_since(*at) < max_age => reading.clone(),
                _ => {
                    let reading = fetch().boxed().shared();
                    readings.insert(key, (now, reading.clone()));
                    reading
                }
            }
        };
        reading.await
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

    async fn read(
        depths: &QueueDepths,
        key: QueueKey,
        calls: &Arc<AtomicU32>,
    ) -> Result<QueueAttributes, String> {
        let calls = calls.clone();
        depths
            .get(key, Duration::from_secs(30), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(QueueAttributes {
                    visible: 7,
                    in_flight: 1,
                    delayed: 0,
                })
            })
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn one_call_per_queue_per_interval_however_many_pollers() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        let (a, b) = tokio::join!(
            read(&depths, key("q", "role-a"), &calls),
            read(&depths, key("q", "role-a"), &calls)
        );
        assert_eq!(a.unwrap().visible, 7);
        assert_eq!(b.unwrap().visible, 7);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "concurrent polls share one request"
        );
        tokio::time::advance(Duration::from_secs(29)).await;
        read(&depths, key("q", "role-a"), &calls).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a reading younger than the interval is reused"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        read(&depths, key("q", "role-a"), &calls).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the next interval reads again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn different_credentials_or_queues_do_not_share() {
        let depths = QueueDepths::default();
        let calls = Arc::new(AtomicU32::new(0));
        read(&depths, key("q", "role-a"), &calls).await.unwrap();
        read(&depths, key("q", "role-b"), &calls).await.unwrap();
        read(&depths, key("other", "role-a"), &calls).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
