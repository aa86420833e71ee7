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
use tokio_util::sync::CancellationToken;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;

pub struct ClusterState {
    /// Every pod in the watched namespace (all namespaces when none), bound or not.
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub node_claims: Store<NodeClaim>,
    pub node_pools: Store<NodePool>,
    pub node_classes: Store<EC2NodeClass>,
    pub daemon_sets: Store<DaemonSet>,
}

impl ClusterState {
    /// Starts the watches; they run until `shutdown`.
    pub fn watch(
        client: &kube::Client,
        watch_namespace: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Self {
        let pods = match watch_namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        Self {
            pods: watch(pods, shutdown),
            nodes: watch(Api::all(client.clone()), shutdown),
            node_claims: watch(Api::all(client.clone()), shutdown),
            node_pools: watch(Api::all(client.clone()), shutdown),
            node_classes: watch(Api::all(client.clone()), shutdown),
            daemon_sets: watch(Api::all(client.clone()), shutdown),
        }
    }

    /// Waits until every store holds its first full list: planning on a partial view would
    /// provision again for pods whose NodeClaims are not listed yet.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        self.node_claims.wait_until_ready().await?;
        self.node_pools.wait_until_ready().await?;
        self.node_classes.wait_until_ready().await?;
        self.daemon_sets.wait_until_ready().await
    }

    /// The Node whose `spec.providerID` is `provider_id`.
    pub fn node_by_provider_id(&self, provider_id: &str) -> Option<Arc<Node>> {
        self.nodes.state().into_iter().find(|node| {
            node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id)
        })
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

fn watch<K>(api: Api<K>, shutdown: &CancellationToken) -> Store<K>
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
