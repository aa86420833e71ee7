//! The cluster as the node side sees it: pods, Nodes, NodeClaims, NodePools, EC2NodeClasses,
//! DaemonSets, and the PersistentVolumeClaims, PersistentVolumes and StorageClasses that say
//! where a pod's volumes can be reached, each watched once into a reflector store that the
//! provisioner and the NodeClaim controller read instead of listing. The ScaledJob loops read
//! their Jobs' pods from the same pod store, through an index by ScaledJob ([`by_label`]).

pub mod by_label;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeSpec, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{DEFAULT_STORAGE_CLASS_ANNOTATIONS, REGISTERED_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::scheduling::pod::NamespaceLabels;
use crate::scheduling::volumes::StorageObjects;
use by_label::{ByLabel, LabelIndex};

/// How many registering Nodes' cues a slow reader may fall behind by before it skips some.
const REGISTERING_BACKLOG: usize = 1024;

pub struct ClusterState {
    /// Every pod in the cluster, bound or not: a Node's pods count wherever they come from,
    /// or a node shared with another namespace would look empty or roomy.
    pub pods: Store<Pod>,
    /// Which pods are bound to each Node, kept by the pod watch.
    pods_by_node_index: Arc<RwLock<PodIndex>>,
    /// Pods of this namespace only are provisioned for (all namespaces when `None`).
    provisioned_namespace: Option<String>,
    pub nodes: Store<Node>,
    /// The providerID of each Node without the registered label, at each of its watch events,
    /// sent once the store holds that version of it.
    registering: broadcast::Sender<String>,
    pub node_claims: Store<NodeClaim>,
    pub node_pools: Store<NodePool>,
    pub node_classes: Store<EC2NodeClass>,
    pub daemon_sets: Store<DaemonSet>,
    /// For pod affinity terms that select namespaces by their labels.
    pub namespaces: Store<Namespace>,
    /// Trimmed to what says where a volume can be reached (see [`trim_claim`] and the others).
    pub persistent_volume_claims: Store<PersistentVolumeClaim>,
    pub persistent_volumes: Store<PersistentVolume>,
    pub storage_classes: Store<StorageClass>,
    /// The pods of each ScaledJob's Jobs, by their `windlass.dev/scaled-job` label.
    pods_by_scaled_job: Arc<RwLock<LabelIndex<Pod>>>,
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
        let by_scaled_job = Arc::new(RwLock::new(LabelIndex::new(
            crate::apis::labels::SCALED_JOB_LABEL,
        )));
        let indexing_by_scaled_job = by_scaled_job.clone();
        let index = Arc::new(RwLock::new(PodIndex::default()));
        let indexing = index.clone();
        let (registering, _) = broadcast::channel(REGISTERING_BACKLOG);
        let announcing = registering.clone();
        let state = Self {
            pods: watched_with(Api::all(client.clone()), shutdown, move |event| {
                indexing.write().expect("pod index lock").apply(event);
                indexing_by_scaled_job
                    .write()
                    .expect("label index lock")
                    .apply(event);
            }),
            pods_by_node_index: index,
            provisioned_namespace: watch_namespace.map(str::to_owned),
            nodes: watched_with(Api::all(client.clone()), shutdown, move |event| {
                if let watcher::Event::Apply(node) | watcher::Event::InitApply(node) = event
                    && !node.labels().contains_key(REGISTERED_LABEL)
                    && let Some(provider_id) =
                        node.spec.as_ref().and_then(|s| s.provider_id.clone())
                {
                    // No one listening yet is no loss: claims also requeue while they wait.
                    let _ = announcing.send(provider_id);
                }
            }),
            registering,
            node_claims: watched(Api::all(client.clone()), shutdown),
            node_pools: watched(Api::all(client.clone()), shutdown),
            node_classes: watched(Api::all(client.clone()), shutdown),
            daemon_sets: watched(Api::all(client.clone()), shutdown),
            namespaces: watched(Api::all(client.clone()), shutdown),
            persistent_volume_claims: watched_trimmed(
                Api::all(client.clone()),
                shutdown,
                trim_claim,
            ),
            persistent_volumes: watched_trimmed(Api::all(client.clone()), shutdown, trim_volume),
            storage_classes: watched_trimmed(Api::all(client.clone()), shutdown, trim_class),
            pods_by_scaled_job: by_scaled_job,
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
            state.namespaces.clone(),
            (
                state.persistent_volume_claims.clone(),
                state.persistent_volumes.clone(),
                state.storage_classes.clone(),
            ),
        );
        tokio::spawn(async move {
            let (pods, nodes, claims, pools, classes, daemon_sets, namespaces, storage) = stores;
            let (volume_claims, volumes, storage_classes) = storage;
            let listed = async {
                pods.wait_until_ready().await?;
                nodes.wait_until_ready().await?;
                claims.wait_until_ready().await?;
                pools.wait_until_ready().await?;
                classes.wait_until_ready().await?;
                daemon_sets.wait_until_ready().await?;
                namespaces.wait_until_ready().await?;
                volume_claims.wait_until_ready().await?;
                volumes.wait_until_ready().await?;
                storage_classes.wait_until_ready().await
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

    /// The pod store, read by ScaledJob: `get(namespace, name)` is the pods its Jobs made.
    pub fn scaled_job_pods(&self) -> ByLabel<Pod> {
        ByLabel::new(self.pods.clone(), self.pods_by_scaled_job.clone())
    }

    /// Whether this install provisions for `pod`: with `--watch-namespace`, only for its own
    /// namespace's pods, so several installs can share a cluster.
    pub fn provisions_for(&self, pod: &Pod) -> bool {
        self.provisioned_namespace
            .as_deref()
            .is_none_or(|namespace| pod.metadata.namespace.as_deref() == Some(namespace))
    }

    /// Every namespace's labels.
    pub fn namespace_labels(&self) -> NamespaceLabels {
        self.namespaces
            .state()
            .iter()
            .map(|namespace| (namespace.name_any(), namespace.labels().clone()))
            .collect()
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

    /// The providerIDs of Nodes not yet registered, as they appear or change; the store holds
    /// each such Node by the time its providerID comes. Events missed by a slow reader are
    /// skipped: a claim waiting for its Node looks again on its own.
    pub fn registering_nodes(&self) -> impl Stream<Item = String> + Send + 'static {
        futures::stream::unfold(self.registering.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(provider_id) => return Some((provider_id, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// The Node whose `spec.providerID` is `provider_id`.
    pub fn node_by_provider_id(&self, provider_id: &str) -> Option<Arc<Node>> {
        self.nodes.state().into_iter().find(|node| {
            node.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id)
        })
    }

    /// Pods bound to the Node `node` and not finished.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let index = self.pods_by_node_index.read().expect("pod index lock");
        index
            .bound
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|pod| self.pods.get(pod))
            .filter(|pod| !is_finished(pod))
            .collect()
    }

    /// Pods bound to a Node and not finished, by Node name.
    pub fn pods_by_node(&self) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.state() {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone())
                && !is_finished(&pod)
            {
                by_node.entry(node).or_default().push(pod);
            }
        }
        by_node
    }
}

impl StorageObjects for ClusterState {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.persistent_volume_claims
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.persistent_volumes.get(&ObjectRef::new(name))
    }

    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.storage_classes.state()
    }
}

/// A claim keeps what says where its volume is: the volume it is bound to, its class, and
/// whether it is going away.
fn trim_claim(claim: &mut PersistentVolumeClaim) {
    trim_metadata(&mut claim.metadata);
    claim.status = None;
    let spec = claim.spec.take().unwrap_or_default();
    claim.spec = Some(PersistentVolumeClaimSpec {
        volume_name: spec.volume_name,
        storage_class_name: spec.storage_class_name,
        ..PersistentVolumeClaimSpec::default()
    });
}

/// A volume keeps its node affinity only.
fn trim_volume(volume: &mut PersistentVolume) {
    trim_metadata(&mut volume.metadata);
    volume.status = None;
    let spec = volume.spec.take().unwrap_or_default();
    volume.spec = Some(PersistentVolumeSpec {
        node_affinity: spec.node_affinity,
        ..PersistentVolumeSpec::default()
    });
}

/// A class keeps its binding mode, allowed topologies and whether it is the default.
fn trim_class(class: &mut StorageClass) {
    let annotations = class.metadata.annotations.take().unwrap_or_default();
    trim_metadata(&mut class.metadata);
    let default: std::collections::BTreeMap<String, String> = annotations
        .into_iter()
        .filter(|(key, _)| DEFAULT_STORAGE_CLASS_ANNOTATIONS.contains(&key.as_str()))
        .collect();
    class.metadata.annotations = (!default.is_empty()).then_some(default);
    class.parameters = None;
    class.mount_options = None;
}

fn trim_metadata(metadata: &mut ObjectMeta) {
    metadata.annotations = None;
    metadata.labels = None;
    metadata.managed_fields = None;
    metadata.owner_references = None;
    metadata.finalizers = None;
}

fn is_finished(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
}

/// The pods bound to each Node, by reference into the pod store, so the pods of one Node are
/// found without going through every pod.
#[derive(Default)]
struct PodIndex {
    bound: HashMap<String, HashSet<ObjectRef<Pod>>>,
    /// The index being rebuilt while the watch lists again.
    relisting: Option<HashMap<String, HashSet<ObjectRef<Pod>>>>,
}

impl PodIndex {
    /// A pod's Node never changes once it is bound, so its own `spec.nodeName` says where it
    /// is indexed, when it comes and when it goes.
    fn apply(&mut self, event: &watcher::Event<Pod>) {
        match event {
            watcher::Event::Apply(pod) => insert(&mut self.bound, pod),
            watcher::Event::Delete(pod) => {
                if let Some(node) = node_of(pod)
                    && let Some(pods) = self.bound.get_mut(&node)
                {
                    pods.remove(&ObjectRef::from_obj(pod));
                    if pods.is_empty() {
                        self.bound.remove(&node);
                    }
                }
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(relisting) = self.relisting.as_mut() {
                    insert(relisting, pod);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisting.take() {
                    self.bound = relisted;
                }
            }
        }
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn insert(index: &mut HashMap<String, HashSet<ObjectRef<Pod>>>, pod: &Pod) {
    if let Some(node) = node_of(pod) {
        index
            .entry(node)
            .or_default()
            .insert(ObjectRef::from_obj(pod));
    }
}

/// What a reflector store can hold: a cluster-scoped or namespaced kind with a static type,
/// shared across the watch task and its readers.
pub(crate) trait Watchable:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Watchable for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

fn watched<K: Watchable>(api: Api<K>, shutdown: &CancellationToken) -> Store<K> {
    watched_with(api, shutdown, |_| {})
}

/// A store of `api`'s objects with only what `trim` leaves of each.
fn watched_trimmed<K: Watchable>(
    api: Api<K>,
    shutdown: &CancellationToken,
    trim: fn(&mut K),
) -> Store<K> {
    spawn_store(api, shutdown, trim, |_| {})
}

/// A store of `api`'s objects, with `observe` shown every watch event once the store has it.
pub(crate) fn watched_with<K: Watchable>(
    api: Api<K>,
    shutdown: &CancellationToken,
    observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K> {
    // Managed fields are the bulk of most objects and nothing here reads them.
    spawn_store(
        api,
        shutdown,
        |object| object.managed_fields_mut().clear(),
        observe,
    )
}

fn spawn_store<K: Watchable>(
    api: Api<K>,
    shutdown: &CancellationToken,
    trim: fn(&mut K),
    observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K> {
    watched_selected(api, watcher::Config::default(), shutdown, trim, observe)
}

/// A store of the objects `config` selects from `api`, with only what `trim` leaves of each and
/// `observe` shown every watch event once the store has it.
pub(crate) fn watched_selected<K: Watchable>(
    api: Api<K>,
    config: watcher::Config,
    shutdown: &CancellationToken,
    trim: fn(&mut K),
    mut observe: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K> {
    let (reader, writer) = reflector::store();
    let events = watcher(api, config).default_backoff().modify(trim);
    let stream = reflector::reflector(writer, events)
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(move |event| {
            if let Ok(event) = &event {
                observe(event);
            }
            futures::future::ready(())
        });
    tokio::spawn(stream);
    reader
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [], "nodeName": node}
        }))
        .unwrap()
    }

    fn on(index: &PodIndex, node: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .bound
            .get(node)
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn storage_objects_keep_only_what_says_where_a_volume_is() {
        let mut claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "annotations": {"a": "b"},
                         "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"volumeName": "pv-1", "storageClassName": "gp3", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        trim_claim(&mut claim);
        assert_eq!(
            serde_json::to_value(&claim).unwrap(),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "ns", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {"volumeName": "pv-1", "storageClassName": "gp3"}})
        );
        let affinity = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}]}});
        let mut volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": "pv-1", "labels": {"x": "y"}},
            "spec": {"capacity": {"storage": "1Gi"}, "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
                     "nodeAffinity": affinity}
        }))
        .unwrap();
        trim_volume(&mut volume);
        assert_eq!(
            serde_json::to_value(&volume).unwrap(),
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-1"}, "spec": {"nodeAffinity": affinity}})
        );
        let mut class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "gp3", "annotations": {
                "storageclass.kubernetes.io/is-default-class": "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3"},
            "volumeBindingMode": "WaitForFirstConsumer"
        }))
        .unwrap();
        trim_class(&mut class);
        assert_eq!(
            serde_json::to_value(&class).unwrap(),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                   "provisioner": "ebs.csi.aws.com", "volumeBindingMode": "WaitForFirstConsumer"})
        );
    }

    #[test]
    fn the_pod_index_follows_binding_deletion_and_relisting() {
        let mut index = PodIndex::default();
        index.apply(&watcher::Event::Apply(pod("a", None)));
        assert!(index.bound.is_empty(), "an unbound pod is on no Node");
        index.apply(&watcher::Event::Apply(pod("a", Some("n1"))));
        index.apply(&watcher::Event::Apply(pod("a", Some("n1"))));
        index.apply(&watcher::Event::Apply(pod("b", Some("n1"))));
        assert_eq!(on(&index, "n1"), ["a", "b"]);
        index.apply(&watcher::Event::Delete(pod("a", Some("n1"))));
        assert_eq!(on(&index, "n1"), ["b"]);
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(pod("c", Some("n2"))));
        assert_eq!(
            on(&index, "n1"),
            ["b"],
            "the old index serves until the list is done"
        );
        index.apply(&watcher::Event::InitDone);
        assert!(
            on(&index, "n1").is_empty(),
            "b went while the watch was down"
        );
        assert_eq!(on(&index, "n2"), ["c"]);
    }
}
