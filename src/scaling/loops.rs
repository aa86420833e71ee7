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

    pub fn stop_all(&self) {
        for (_, handle) in self.0.lock().expect("loops lock").drain() {
            handle.cancel.cancel();
        }
    }
}
