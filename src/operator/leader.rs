//! Leader election on a coordination.k8s.io Lease: of the replicas of one install, only the one
//! holding the Lease runs the writers (controllers, provisioner, disruption, schedule ticks), so
//! a second replica never creates a Job, a NodeClaim or an instance twice.
//!
//! The holder renews the Lease `duration / 3` before it expires. A renewal that keeps failing
//! for that long means another replica may already hold it, so the holder stops leading at once
//! (the process exits and restarts as a standby), as controller-runtime does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often a standby reads the Lease again.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Where the Lease lives and how long a holder keeps it without renewing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub duration: Duration,
}

impl LeaseConfig {
    fn seconds(&self) -> u64 {
        self.duration.as_secs().max(3)
    }

    /// How long before expiry the holder renews, and how long failed renewals may last.
    fn grace(&self) -> u64 {
        self.seconds() / 3
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot use the leader Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// The Lease, held. `lost` is cancelled when this replica stops holding it.
pub struct Leadership {
    manager: Arc<LeaseManager>,
    renewals: JoinHandle<()>,
    pub lost: CancellationToken,
    config: LeaseConfig,
}

/// This replica's identity in the Lease: the Pod name (HOSTNAME in a Pod) and a random suffix,
/// so a restarted Pod with the same name is a new holder.
fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "windlass".to_owned());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Waits until this replica holds the Lease; `None` if `shutdown` comes first.
pub async fn acquire(
    client: Client,
    config: LeaseConfig,
    shutdown: &CancellationToken,
) -> Result<Option<Leadership>, LeaderError> {
    let lease_error = |source| LeaderError::Lease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    };
    let identity = identity();
    let build = || {
        LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&identity)
            .with_field_manager("windlass-leader-election")
            .with_duration(config.seconds())
            .with_grace(config.grace())
            .build()
    };
    // The first read fails start-up with a clear reason (a missing namespace, say).
    let mut manager = build().await.map_err(lease_error)?;
    info!(lease = %format!("{}/{}", config.namespace, config.name), %identity, "waiting to lead");
    loop {
        // A manager trusts what it read until the holder's Lease would expire; a fresh one
        // every retry period reads it again, so a Lease released on shutdown is taken at once.
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            changed = tokio::time::timeout(RETRY_PERIOD, manager.changed()) => match changed {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(error)) => {
                    warn!(%error, "cannot read the leader Lease; retrying");
                    tokio::time::sleep(RETRY_PERIOD).await;
                }
            },
        }
        match build().await {
            Ok(fresh) => manager = fresh,
            Err(error) => warn!(%error, "cannot read the leader Lease; retrying"),
        }
    }
    info!(lease = %format!("{}/{}", config.namespace, config.name), %identity, "leading");
    let manager = Arc::new(manager);
    let lost = CancellationToken::new();
    let renewals = tokio::spawn(renew(manager.clone(), config.clone(), lost.clone()));
    Ok(Some(Leadership {
        manager,
        renewals,
        lost,
        config,
    }))
}

/// Keeps the Lease renewed until it is lost or renewals fail for longer than the grace.
async fn renew(manager: Arc<LeaseManager>, config: LeaseConfig, lost: CancellationToken) {
    let give_up_after = Duration::from_secs(config.grace());
    let mut failing_since: Option<Instant> = None;
    loop {
        // `changed` returns only on a change or an error; one that runs for a second after a
        // failure has read the Lease again, so the streak of failures is over.
        let attempt = manager.changed();
        let result = match failing_since {
            None => attempt.await,
            Some(_) => match tokio::time::timeout(Duration::from_secs(1), attempt).await {
                Ok(result) => result,
                Err(_) => {
                    failing_since = None;
                    continue;
                }
            },
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                warn!(lease = %config.name, "another replica holds the leader Lease now");
                break;
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= give_up_after {
                    warn!(%error, lease = %config.name, "cannot renew the leader Lease; stopping");
                    break;
                }
                warn!(%error, lease = %config.name, "renewing the leader Lease failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    lost.cancel();
}

impl Leadership {
    /// `namespace/name` of the Lease held.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// Gives the Lease up so a standby takes over now instead of after it expires.
    pub async fn release(self) {
        self.renewals.abort();
        match self.manager.release().await {
            Ok(()) => info!(lease = %self.config.name, "released the leader Lease"),
            Err(error) => {
                warn!(%error, lease = %self.config.name, "cannot release the leader Lease; it expires by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seconds: u64) -> LeaseConfig {
        LeaseConfig {
            name: "windlass".into(),
            namespace: "windlass".into(),
            duration: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn renews_a_third_of_the_duration_before_expiry() {
        assert_eq!((config(15).seconds(), config(15).grace()), (15, 5));
        assert_eq!((config(60).seconds(), config(60).grace()), (60, 20));
    }

    #[test]
    fn a_too_short_duration_still_leaves_time_to_renew() {
        assert_eq!((config(0).seconds(), config(0).grace()), (3, 1));
    }

    #[test]
    fn identities_differ_between_processes_on_one_host() {
        assert_ne!(identity(), identity());
    }
}
