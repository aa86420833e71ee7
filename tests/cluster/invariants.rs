//! The promises every launch and termination keeps, checked where tests end (issue 19): each
//! live instance tagged for the cluster has exactly one NodeClaim and each launched NodeClaim
//! a live instance, and no NodePool is over its limits at any moment a watch saw.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use windlass::apis::node_claim::NodeClaim;
use windlass::aws::instance_id;
use windlass::scheduling::resources::Resources;

use crate::provisioning::fixture::live_instances;
use crate::support::TestEnv;

/// Waits (30 s at most, as a termination settles) until the live instances tagged for
/// `cluster` and the cluster's NodeClaims that name an instance match one to one; panics
/// naming what does not.
pub async fn assert_instances_match_claims(env: &TestEnv, cluster: &str) {
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/cluster={cluster}");
    let mut last = String::new();
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let instances = live_instances(env, cluster).await;
            let claimed = claims
                .list(&kube::api::ListParams::default().labels(&selector))
                .await
                .expect("NodeClaims list")
                .items;
            match mismatch(&instances, &claimed) {
                None => return,
                Some(problem) => last = problem,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "cluster {cluster}: {last}");
}

/// What breaks the one-to-one match of live instances and NodeClaims, if anything.
fn mismatch(instances: &[String], claims: &[NodeClaim]) -> Option<String> {
    let mut claims_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for claim in claims {
        let provider_id = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
        if let Some(instance) = provider_id.and_then(instance_id) {
            claims_of
                .entry(instance)
                .or_default()
                .push(claim.name_any());
        }
    }
    for instance in instances {
        match claims_of.get(instance.as_str()).map(Vec::len) {
            Some(1) => {}
            Some(_) => {
                return Some(format!(
                    "instance {instance} has NodeClaims {:?}",
                    claims_of[instance.as_str()]
                ));
            }
            None => {
                return Some(format!(
                    "instance {instance} is running without a NodeClaim"
                ));
            }
        }
    }
    claims_of
        .iter()
        .find(|(instance, _)| !instances.iter().any(|live| live == *instance))
        .map(|(instance, names)| {
            format!("NodeClaim {names:?} names instance {instance}, which is not running")
        })
}

/// Watches a NodePool's NodeClaims and keeps the first moment their launched capacity went
/// over the pool's limits.
pub struct LimitWatch {
    over: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LimitWatch {
    /// `cpu` in millicores and `memory` in bytes, as the pool's `spec.limits` says.
    pub fn watch(claims: &Api<NodeClaim>, pool: &str, cpu: i64, memory: i64) -> Self {
        let over = Arc::new(Mutex::new(None));
        let config = watcher::Config::default().labels(&format!("windlass.dev/nodepool={pool}"));
        let events = watcher(claims.clone(), config);
        let task = tokio::spawn({
            let over = over.clone();
            async move {
                let mut capacity: BTreeMap<String, Resources> = BTreeMap::new();
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => {
                            let launched = claim
                                .status
                                .as_ref()
                                .map(|s| Resources::from_list(&s.capacity))
                                .unwrap_or_default();
                            capacity.insert(claim.name_any(), launched);
                        }
                        Ok(watcher::Event::Delete(claim)) => {
                            capacity.remove(&claim.name_any());
                        }
                        _ => continue,
                    }
                    let total = capacity
                        .values()
                        .fold(Resources::default(), |sum, r| sum + *r);
                    if total.cpu > cpu || total.memory > memory {
                        over.lock().unwrap().get_or_insert_with(|| {
                            format!(
                                "{total:?} on {:?} is over cpu={cpu}m memory={memory}",
                                capacity.keys()
                            )
                        });
                    }
                }
            }
        });
        Self { over, task }
    }

    /// Stops watching; panics naming the first moment the pool was over its limits.
    pub fn assert_never_over(self) {
        if let Some(over) = self.over() {
            panic!("the NodePool went over its limits: {over}");
        }
    }

    /// Stops watching; the first moment the pool was over its limits, if it ever was.
    pub fn over(self) -> Option<String> {
        self.task.abort();
        self.over.lock().unwrap().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, instance: Option<&str>) -> NodeClaim {
        let mut claim: NodeClaim = serde_json::from_value(serde_json::json!({
            "apiVersion": "windlass.dev/v1alpha1",
            "kind": "NodeClaim",
            "metadata": {"name": name},
            "spec": {
                "requirements": [],
                "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "x"}
            },
        }))
        .expect("a NodeClaim");
        if let Some(instance) = instance {
            claim.status = Some(
                serde_json::from_value(serde_json::json!({
                    "providerID": format!("aws:///us-east-1a/{instance}")
                }))
                .expect("a status"),
            );
        }
        claim
    }

    #[test]
    fn a_match_and_each_way_it_breaks() {
        let live = ["i-1".to_owned(), "i-2".to_owned()];
        assert_eq!(
            mismatch(
                &live,
                &[
                    claim("a", Some("i-1")),
                    claim("b", Some("i-2")),
                    claim("c", None)
                ]
            ),
            None
        );
        assert!(
            mismatch(&live, &[claim("a", Some("i-1"))])
                .unwrap()
                .contains("i-2 is running without")
        );
        assert!(
            mismatch(
                &live,
                &[
                    claim("a", Some("i-1")),
                    claim("b", Some("i-1")),
                    claim("c", Some("i-2"))
                ]
            )
            .unwrap()
            .contains("has NodeClaims")
        );
        assert!(
            mismatch(
                &live[..1],
                &[claim("a", Some("i-1")), claim("b", Some("i-2"))]
            )
            .unwrap()
            .contains("not running")
        );
    }
}
