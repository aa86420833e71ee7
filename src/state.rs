//! The cluster as the node side sees it: pods, Nodes, NodeClaims, NodePools, EC2NodeClasses
//! and DaemonSets, each watched once into a reflector store that the provisioner and the
//! NodeClaim controller read instead of listing.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;

pub struct ClusterState {
    /// Every pod in the cluster, bound or not: a Node's pods count wherever they come from,
    /// or a node shared with another namespace would look empty or roomy.
    pub pods: Store<Pod>,
    /// Pods of this namespace only are provisioned for (all namespaces when `None`).
    provisioned_namespace: Option<String>,
    pub nodes: Store<Node>,
    pub node_claims: Store<NodeClaim>,
    pub node_pools: Store<NodePool>,
    pub node_classes: Store<EC2NodeClass>,
    pub daemon_sets: Store<DaemonSet>,
    /// Becomes true once every store holds its first full list; dropped if a watch ends first.
    ready: watch::Receiver<bool>,
}

/// A watch ended before its store held a full list.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("a cluster watch ended before its first list")]
pub struct NotReady;

impl ClusterState {
    /// Starts the watches; they run until `shutdown`.
    pub fn watch(
        client: &kube::Client,
        watch_namespace: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Self {
        let (ready_tx, ready) = watch::channel(false);
        let state = Self {
            pods: watched(Api::all(client.clone()), shutdown),
            provisioned_namespace: watch_namespace.map(str::to_owned),
            nodes: watched(Api::all(client.clone()), shutdown),
            node_claims: watched(Api::all(client.clone()), shutdown),
            node_pools: watched(Api::all(client.clone()), shutdown),
            node_classes: watched(Api::all(client.clone()), shutdown),
            daemon_sets: watched(Api::all(client.clone()), shutdown),
            ready,
        };
        // A store's own readiness wakes only one of the tasks waiting on it (kube-runtime's
        // DelayedInit keeps a single waker), so one task waits and tells everyone.
        let stores = (
            state.pods.clone(),
            state.nodes.clone(),
            state.node_claims.clone(),
            state.node_pools.clone(),
            state.node_classes.clone(),
            state.daemon_sets.clone(),
        );
        tokio::spawn(async move {
            let (pods, nodes, claims, pools, classes, daemon_sets) = stores;
            let listed = async {
                pods.wait_until_ready().await?;
                nodes.wait_until_ready().await?;
                claims.wait_until_ready().await?;
                pools.wait_until_ready().await?;
                classes.wait_until_ready().await?;
                daemon_sets.wait_until_ready().await
            };
            if listed.await.is_ok() {
                ready_tx.send_replace(true);
            }
        });
        state
    }

    /// Waits until every store holds its first full list: planning on a partial view would
    /// provision again for pods whose NodeClaims are not listed yet. Any number of tasks may
    /// wait at once.
    pub async fn wait_until_ready(&self) -> Result<(), NotReady> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(drop)
            .map_err(|_| NotReady)
    }

    /// Whether this install provisions for `pod`: with `--watch-namespace`, only for its own
    /// namespace's pods, so several installs can share a cluster.
    pub fn provisions_for(&self, pod: &Pod) -> bool {
        self.provisioned_namespace
            .as_deref()
            .is_none_or(|namespace| pod.metadata.namespace.as_deref() == Some(namespace))
    }

    pub fn node_pool(&self, name: &str) -> Option<Arc<NodePool>> {
        self.node_pools
            .state()
            .into_iter()
            .find(|p| p.name_any() == name)
    }

    pub fn node_class(&self, name: &str) -> Option<Arc<EC2NodeClass>> {
        self.node_classes
            .state()
            .into_iter()
            .find(|c| c.name_any() == name)
    }

    /// The Node whose `spec.providerID` is `provider_id`.
    pub fn node_by_provider_id(&self, provider_id: &str) -> Option<Arc<Node>> {
        self.nodes.state().into_iter().find(|node| {
            node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id)
        })
    }

    /// Pods bound to the Node `node` and not finished.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter(|pod| {
                !pod.status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
            })
            .collect()
    }

    /// Pods bound to a Node and not finished, by Node name.
    pub fn pods_by_node(&self) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.state() {
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
                && !finished
            {
                by_node.entry(node).or_default().push(pod);
            }
        }
        by_node
    }
}

fn watched<K>(api: Api<K>, shutdown: &CancellationToken) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    // Managed fields are the bulk of most objects and nothing here reads them.
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear());
    let stream = reflector::reflector(writer, events)
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}
