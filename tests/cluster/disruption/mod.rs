//! Giving nodes back, against the real cluster and moto: an empty node is removed within its
//! pool's budget, and every removal drains the node through the Eviction API first, so a
//! PodDisruptionBudget holds it until it allows the eviction or the termination grace period
//! runs out.

mod consolidation;
mod drain;
mod emptiness;
mod interruption;
mod orphans;
mod protection;
mod replacement;
mod seed;
pub mod seed_jobs;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::NodePool;

use crate::invariants::assert_instances_match_claims;
use crate::provisioning::fixture::{delete_pool_and_class, node_class_and_pool};
use crate::support::{
    ChildProcess, TestEnv, TestNamespace, Windlass, install_crds, start_registrar,
    start_windlass_with_args_and_env, unique, wait_until,
};

/// An on-demand NodePool of its own, and Windlass with a node registrar watching a namespace
/// of its own: what every test here starts from.
pub struct PoolRun {
    pub env: TestEnv,
    pub namespace: TestNamespace,
    /// The NodePool's and EC2NodeClass's name.
    pub name: String,
    pub classes: Api<EC2NodeClass>,
    pub pools: Api<NodePool>,
    pub claims: Api<NodeClaim>,
    pub windlass: Windlass,
    _registrar: ChildProcess,
}

impl PoolRun {
    /// Starts from `spec` merged into the pool's spec (its disruption settings, say).
    pub async fn start(prefix: &str, spec: serde_json::Value) -> Self {
        Self::start_with(prefix, spec, &[]).await
    }

    /// Likewise, with `extra` arguments to `windlass run`.
    pub async fn start_with(prefix: &str, spec: serde_json::Value, extra: &[&str]) -> Self {
        Self::start_with_env(prefix, spec, extra, &[]).await
    }

    /// Likewise, with environment variables of its own for `windlass run`.
    pub async fn start_with_env(
        prefix: &str,
        spec: serde_json::Value,
        extra: &[&str],
        windlass_env: &[(&str, &str)],
    ) -> Self {
        let env = TestEnv::connect().await;
        install_crds(&env.client).await;
        let namespace = TestNamespace::create(&env.client, prefix).await;
        let name = unique(prefix);
        let (classes, pools) = node_class_and_pool(
            &env,
            &name,
            json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
            json!({}),
        )
        .await;
        patch_pool(&pools, &name, spec).await;
        let windlass = start_windlass_with_args_and_env(
            &namespace.name,
            &unique("cluster"),
            extra,
            windlass_env,
        );
        windlass.catalog_read().await;
        let registrar = start_registrar(&windlass.cluster, 1);
        let claims = Api::all(env.client.clone());
        Self {
            env,
            namespace,
            name,
            classes,
            pools,
            claims,
            windlass,
            _registrar: registrar,
        }
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Checks that the cluster's live instances and NodeClaims match one to one, stops
    /// Windlass, then deletes the pool, its class and the namespace.
    pub async fn finish(self) {
        assert_instances_match_claims(&self.env, &self.windlass.cluster).await;
        drop(self.windlass);
        delete_pool_and_class(&self.pools, &self.classes, &self.name).await;
        self.namespace.delete().await;
    }
}

/// Deployment `worker` of `replicas` pods of 1 vCPU / 3 GiB that only `pool` can take, one per
/// node: evicted pods come back, so a drained node's work moves to another.
pub async fn worker_deployment(
    env: &TestEnv,
    namespace: &str,
    pool: &str,
    replicas: i32,
) -> Api<Deployment> {
    let anti_affinity = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "worker"}}, "topologyKey": "kubernetes.io/hostname"}
    ]}});
    deployment(env, namespace, pool, "worker", replicas, "1", anti_affinity).await
}

/// Deployment `name` of `replicas` pods of `cpu` / 3 GiB that only `pool` can take, with
/// `affinity`.
pub async fn deployment(
    env: &TestEnv,
    namespace: &str,
    pool: &str,
    name: &str,
    replicas: i32,
    cpu: &str,
    affinity: serde_json::Value,
) -> Api<Deployment> {
    let size = (cpu, "3Gi");
    deployment_sized(env, namespace, pool, name, replicas, size, affinity).await
}

/// Likewise, of pods of `(cpu, memory)`.
pub async fn deployment_sized(
    env: &TestEnv,
    namespace: &str,
    pool: &str,
    name: &str,
    replicas: i32,
    (cpu, memory): (&str, &str),
    affinity: serde_json::Value,
) -> Api<Deployment> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
                    "nodeSelector": {"windlass.dev/nodepool": pool},
                    "affinity": affinity,
                    "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
                }
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    deployments
}

pub fn initialized(claim: &NodeClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Initialized" && c.status == "True")
    })
}

pub async fn pool_claims(claims: &Api<NodeClaim>, pool: &str) -> Vec<NodeClaim> {
    claims
        .list(&ListParams::default().labels(&format!("windlass.dev/nodepool={pool}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Waits until the pool has `count` Initialized NodeClaims, and returns them.
pub async fn initialized_claims(
    claims: &Api<NodeClaim>,
    pool: &str,
    count: usize,
) -> Vec<NodeClaim> {
    wait_until(
        "the NodeClaims to be Initialized",
        Duration::from_secs(120),
        || async {
            let list = pool_claims(claims, pool).await;
            (list.len() == count && list.iter().all(initialized)).then_some(list)
        },
    )
    .await
}

/// Waits until `count` pods of the namespace run.
pub async fn wait_pods_running(pods: &Api<Pod>, count: usize) {
    wait_until("the pods to run", Duration::from_secs(120), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == count).then_some(())
    })
    .await;
}

/// Waits until a pod of `pods` runs on the claim's Node.
pub async fn wait_pod_running_on(pods: &Api<Pod>, claim: &NodeClaim, what: &str) {
    let target = claim.status.as_ref().and_then(|s| s.node_name.clone());
    wait_until(what, Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && p.spec.as_ref().and_then(|s| s.node_name.clone()) == target
            })
            .then_some(())
    })
    .await;
}

/// Watches a pool's NodeClaims for the most that were being disrupted at once, as `disrupting`
/// judges each: a watch sees every update, so a NodeClaim deleted in milliseconds still counts.
pub struct MostAtOnce {
    most: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MostAtOnce {
    pub fn watch(claims: &Api<NodeClaim>, pool: &str, disrupting: fn(&NodeClaim) -> bool) -> Self {
        let most = Arc::new(AtomicUsize::new(0));
        let config = watcher::Config::default().labels(&format!("windlass.dev/nodepool={pool}"));
        let events = watcher(claims.clone(), config);
        let task = tokio::spawn({
            let most = most.clone();
            async move {
                let mut now: BTreeSet<String> = BTreeSet::new();
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => {
                            if disrupting(&claim) {
                                now.insert(claim.name_any());
                            } else {
                                now.remove(&claim.name_any());
                            }
                        }
                        Ok(watcher::Event::Delete(claim)) => {
                            now.remove(&claim.name_any());
                        }
                        _ => {}
                    }
                    most.fetch_max(now.len(), Ordering::SeqCst);
                }
            }
        });
        Self { most, task }
    }

    /// The most seen at once so far; stops watching.
    pub fn stop(self) -> usize {
        self.task.abort();
        self.most.load(Ordering::SeqCst)
    }
}

/// Waits until the pod `name` runs.
pub async fn wait_running(pods: &Api<Pod>, name: &str) {
    wait_until("the pod to run", Duration::from_secs(60), || async {
        let pod = pods.get(name).await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

/// Merges `spec` into the NodePool's spec.
pub async fn patch_pool(pools: &Api<NodePool>, name: &str, spec: serde_json::Value) {
    pools
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .unwrap();
}

/// What a seed test saw and when, printed as it happens in seconds since its start: the
/// pipeline's timeline, read from `--nocapture` output.
pub struct Timeline(Instant);

impl Timeline {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn mark(&self, what: &str) {
        eprintln!("{:>6.1}s {what}", self.0.elapsed().as_secs_f64());
    }
}
