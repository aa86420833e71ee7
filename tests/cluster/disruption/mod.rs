//! Giving nodes back, against the real cluster and moto: an empty node is removed within its
//! pool's budget, and every removal drains the node through the Eviction API first, so a
//! PodDisruptionBudget holds it until it allows the eviction or the termination grace period
//! runs out.

mod drain;
mod emptiness;
mod orphans;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::NodePool;

use crate::provisioning::fixture::{delete_pool_and_class, node_class_and_pool};
use crate::support::{
    ChildProcess, TestEnv, TestNamespace, Windlass, install_crds, start_registrar, start_windlass,
    unique, wait_until,
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
        let windlass = start_windlass(&namespace.name);
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

    /// Stops Windlass, then deletes the pool, its class and the namespace.
    pub async fn finish(self) {
        drop(self.windlass);
        delete_pool_and_class(&self.pools, &self.classes, &self.name).await;
        self.namespace.delete().await;
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
