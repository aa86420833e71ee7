//! One polling loop per object (KEDA's scale loops): started on first sight, handed every newer
//! version of the object, restarted when its spec (generation) changes, stopped on delete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Handle<K> {
    uid: Option<String>,
    generation: Option<i64>,
    latest: watch::Sender<Arc<K>>,
    cancel: CancellationToken,
}

pub struct Loops<K>(Mutex<HashMap<(String, String), Handle<K>>>);

impl<K> Default for Loops<K> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Resource + Send + Sync + 'static> Loops<K> {
    fn key(object: &K) -> (String, String) {
        (object.namespace().unwrap_or_default(), object.name_any())
    }

    /// Hands the running loop the latest object, or starts one with `spawn` when there is none
    /// or the spec changed.
    pub fn ensure(
        &self,
        object: Arc<K>,
        spawn: impl FnOnce(watch::Receiver<Arc<K>>, CancellationToken),
    ) {
        let mut loops = self.0.lock().expect("loops lock");
        let key = Self::key(&object);
        let (uid, generation) = (object.meta().uid.clone(), object.meta().generation);
        if let Some(handle) = loops.get(&key)
            && handle.uid == uid
            && handle.generation == generation
        {
            handle.latest.send_replace(object);
            return;
        }
        if let Some(old) = loops.remove(&key) {
            old.cancel.cancel();
        }
        let cancel = CancellationToken::new();
        let (latest, receiver) = watch::channel(object);
        spawn(receiver, cancel.clone());
        loops.insert(
            key,
            Handle {
                uid,
                generation,
                latest,
                cancel,
            },
        );
    }

    pub fn stop(&self, object: &K) {
        if let Some(handle) = self
            .0
            .lock()
            .expect("loops lock")
            .remove(&Self::key(object))
        {
            handle.cancel.cancel();
        }
    }

    /// Forgets the loop of `object`, which ended on its own because the object is gone; a loop
    /// since started for a newer object of that name stays.
    pub fn ended(&self, object: &K) {
        let mut loops = self.0.lock().expect("loops lock");
        let key = Self::key(object);
        if loops
            .get(&key)
            .is_some_and(|handle| handle.uid == object.meta().uid)
        {
            loops.remove(&key);
        }
    }

    /// Whether a loop runs for the object's namespace and name: false once it was stopped,
    /// true again for a loop restarted on a spec change.
    pub fn runs(&self, object: &K) -> bool {
        self.0
            .lock()
            .expect("loops lock")
            .contains_key(&Self::key(object))
    }

    pub fn stop_all(&self) {
        for (_, handle) in self.0.lock().expect("loops lock").drain() {
            handle.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn object(generation: i64) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some("worker".into()),
                namespace: Some("jobs".into()),
                uid: Some("u-1".into()),
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        })
    }

    #[test]
    fn a_loop_restarted_on_a_spec_change_still_runs_and_a_stopped_one_does_not() {
        let loops = Loops::<ConfigMap>::default();
        let mut cancels = Vec::new();
        loops.ensure(object(1), |_, cancel| cancels.push(cancel));
        assert!(loops.runs(&object(1)));
        loops.ensure(object(2), |_, cancel| cancels.push(cancel));
        assert!(cancels[0].is_cancelled(), "the old spec's loop stops");
        assert!(loops.runs(&object(2)), "the new spec's loop runs");
        loops.stop(&object(2));
        assert!(cancels[1].is_cancelled());
        assert!(!loops.runs(&object(2)));
    }
}
