//! A reflector store's objects grouped by namespace and the value of one label, kept by the
//! store's own watch, so a reader finds one group (a ScaledJob's Jobs or pods) without going
//! through every object of the kind.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use super::NotReady;

/// Namespace and label value.
type Group = (String, String);

/// Which objects carry `label`, by namespace and value, by reference into their store.
pub(crate) struct LabelIndex<K: Resource<DynamicType = ()>> {
    label: &'static str,
    grouped: Grouped<K>,
    /// The index being rebuilt while the watch lists again.
    relisting: Option<Grouped<K>>,
    /// True once the store holds its first full list.
    listed: watch::Sender<bool>,
}

/// The groups, and where each object is in them: a label's value can change, or go.
struct Grouped<K: Resource<DynamicType = ()>> {
    groups: HashMap<Group, HashSet<ObjectRef<K>>>,
    group_of: HashMap<ObjectRef<K>, Group>,
}

impl<K: Resource<DynamicType = ()>> Default for Grouped<K> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            group_of: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Grouped<K> {
    fn remove(&mut self, object: &ObjectRef<K>) {
        if let Some(group) = self.group_of.remove(object)
            && let Some(members) = self.groups.get_mut(&group)
        {
            members.remove(object);
            if members.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    fn apply(&mut self, label: &str, object: &K) {
        let reference = ObjectRef::from_obj(object);
        let group = object
            .labels()
            .get(label)
            .map(|value| (object.namespace().unwrap_or_default(), value.clone()));
        if self.group_of.get(&reference) == group.as_ref() {
            return;
        }
        self.remove(&reference);
        if let Some(group) = group {
            self.groups
                .entry(group.clone())
                .or_default()
                .insert(reference.clone());
            self.group_of.insert(reference, group);
        }
    }
}

impl<K: Resource<DynamicType = ()>> LabelIndex<K> {
    pub(crate) fn new(label: &'static str) -> Self {
        Self {
            label,
            grouped: Grouped::default(),
            relisting: None,
            listed: watch::channel(false).0,
        }
    }

    /// Follows one event of the store's watch, after the store has applied it.
    pub(crate) fn apply(&mut self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(object) => self.grouped.apply(self.label, object),
            watcher::Event::Delete(object) => self.grouped.remove(&ObjectRef::from_obj(object)),
            watcher::Event::Init => self.relisting = Some(Grouped::default()),
            watcher::Event::InitApply(object) => {
                if let Some(relisting) = self.relisting.as_mut() {
                    relisting.apply(self.label, object);
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisting.take() {
                    self.grouped = relisted;
                }
                self.listed.send_replace(true);
            }
        }
    }

    fn members(&self, namespace: &str, value: &str) -> Vec<ObjectRef<K>> {
        self.grouped
            .groups
            .get(&(namespace.to_owned(), value.to_owned()))
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// A store with its [`LabelIndex`]: what readers hold.
pub struct ByLabel<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    index: Arc<RwLock<LabelIndex<K>>>,
    listed: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for ByLabel<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            index: self.index.clone(),
            listed: self.listed.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> ByLabel<K> {
    /// `index` must be kept by `store`'s watch.
    pub(crate) fn new(store: Store<K>, index: Arc<RwLock<LabelIndex<K>>>) -> Self {
        let listed = index.read().expect("label index lock").listed.subscribe();
        Self {
            store,
            index,
            listed,
        }
    }

    /// The objects in `namespace` whose label has `value`.
    pub fn get(&self, namespace: &str, value: &str) -> Vec<Arc<K>> {
        let members = self
            .index
            .read()
            .expect("label index lock")
            .members(namespace, value);
        members
            .iter()
            .filter_map(|member| self.store.get(member))
            .collect()
    }

    /// Waits until the store holds its first full list. Any number of tasks may wait at once
    /// (a store's own readiness wakes only one of them).
    pub async fn wait_until_listed(&self) -> Result<(), NotReady> {
        let mut listed = self.listed.clone();
        listed
            .wait_for(|listed| *listed)
            .await
            .map(drop)
            .map_err(|_| NotReady)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::*;

    const LABEL: &str = "windlass.dev/scaled-job";

    fn pod(namespace: &str, name: &str, value: Option<&str>) -> Pod {
        let labels = value.map_or(json!({}), |value| json!({LABEL: value}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels}
        }))
        .unwrap()
    }

    fn members(index: &LabelIndex<Pod>, namespace: &str, value: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .members(namespace, value)
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn groups_follow_label_changes_deletions_and_namespaces() {
        let mut index = LabelIndex::new(LABEL);
        index.apply(&watcher::Event::Apply(pod("a", "p1", Some("worker"))));
        index.apply(&watcher::Event::Apply(pod("a", "p2", Some("worker"))));
        index.apply(&watcher::Event::Apply(pod("b", "p1", Some("worker"))));
        index.apply(&watcher::Event::Apply(pod("a", "p3", None)));
        assert_eq!(members(&index, "a", "worker"), ["p1", "p2"]);
        assert_eq!(members(&index, "b", "worker"), ["p1"]);
        index.apply(&watcher::Event::Apply(pod("a", "p2", Some("other"))));
        assert_eq!(members(&index, "a", "worker"), ["p1"], "relabelled");
        assert_eq!(members(&index, "a", "other"), ["p2"]);
        index.apply(&watcher::Event::Apply(pod("a", "p1", None)));
        assert!(members(&index, "a", "worker").is_empty(), "label removed");
        index.apply(&watcher::Event::Delete(pod("a", "p2", Some("other"))));
        index.apply(&watcher::Event::Delete(pod("b", "p1", Some("worker"))));
        assert!(index.grouped.groups.is_empty(), "no empty group is kept");
        assert!(index.grouped.group_of.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_groups_once_it_is_done_and_marks_the_store_listed() {
        let mut index = LabelIndex::new(LABEL);
        let listed = index.listed.subscribe();
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(pod("a", "p1", Some("worker"))));
        assert!(!*listed.borrow());
        index.apply(&watcher::Event::InitDone);
        assert!(*listed.borrow());
        assert_eq!(members(&index, "a", "worker"), ["p1"]);
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(pod("a", "p2", Some("worker"))));
        assert_eq!(
            members(&index, "a", "worker"),
            ["p1"],
            "the old groups serve until the list is done"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(
            members(&index, "a", "worker"),
            ["p2"],
            "p1 went while the watch was down"
        );
    }
}
