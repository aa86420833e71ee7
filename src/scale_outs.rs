//! Where the two halves meet: the scaling side writes down each ScaledObject or ScaledJob that
//! is scaling out, and the pods it makes; disruption holds consolidation off the NodePools
//! those pods run in meanwhile, so a node is not consolidated away while the queue's work is
//! arriving on it. A scale-out lasts from each raise for twice the object's polling interval
//! (at least a minute), so a queue that keeps growing keeps its pools held; a ScaledObject
//! scaling in, or going, ends it at once. Pods not bound yet hold nothing: the pool they will
//! land in is not known until they are.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

/// The shortest a scale-out lasts.
const LEAST_HOLD: SignedDuration = SignedDuration::from_mins(1);

/// One object scaling out.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleOut {
    /// `ScaledObject/namespace/name`, as Events name it.
    pub object: String,
    pub namespace: String,
    /// The labels its pods carry (its target's pod template's).
    pub pod_labels: BTreeMap<String, String>,
    pub until: Timestamp,
}

impl ScaleOut {
    /// Whether `pod` is one of this object's.
    pub fn owns(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        pod.metadata.namespace.as_deref() == Some(self.namespace.as_str())
            && !self.pod_labels.is_empty()
            && self
                .pod_labels
                .iter()
                .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
    }
}

#[derive(Debug, Default)]
pub struct ScaleOuts(Mutex<HashMap<(String, String, String), ScaleOut>>);

impl ScaleOuts {
    /// `kind` `namespace/name` raised its replicas (or created Jobs) at `now`; it polls every
    /// `polling_interval`.
    pub fn raised(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        pod_labels: BTreeMap<String, String>,
        polling_interval: SignedDuration,
        now: Timestamp,
    ) {
        let hold = (polling_interval * 2).max(LEAST_HOLD);
        let scale_out = ScaleOut {
            object: format!("{kind}/{namespace}/{name}"),
            namespace: namespace.to_owned(),
            pod_labels,
            until: now + hold,
        };
        self.0
            .lock()
            .expect("scale-outs lock")
            .insert(key(kind, namespace, name), scale_out);
    }

    /// `kind` `namespace/name` scaled in, or went: it is not scaling out.
    pub fn ended(&self, kind: &str, namespace: &str, name: &str) {
        self.0
            .lock()
            .expect("scale-outs lock")
            .remove(&key(kind, namespace, name));
    }

    /// The objects scaling out at `now`.
    pub fn active(&self, now: Timestamp) -> Vec<ScaleOut> {
        let mut scale_outs = self.0.lock().expect("scale-outs lock");
        scale_outs.retain(|_, s| s.until > now);
        let mut active: Vec<ScaleOut> = scale_outs.values().cloned().collect();
        active.sort_by(|a, b| a.object.cmp(&b.object));
        active
    }
}

fn key(kind: &str, namespace: &str, name: &str) -> (String, String, String) {
    (kind.to_owned(), namespace.to_owned(), name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_owned(), app.to_owned())])
    }

    #[test]
    fn a_scale_out_lasts_two_polls_and_at_least_a_minute_and_ends_on_scale_in() {
        let outs = ScaleOuts::default();
        outs.raised(
            "ScaledObject",
            "ns",
            "a",
            labels("a"),
            SignedDuration::from_secs(5),
            at(0),
        );
        outs.raised(
            "ScaledObject",
            "ns",
            "b",
            labels("b"),
            SignedDuration::from_secs(60),
            at(0),
        );
        assert_eq!(outs.active(at(59)).len(), 2);
        let left = outs.active(at(60));
        assert_eq!(left.len(), 1, "a's minute is up");
        assert_eq!(left[0].object, "ScaledObject/ns/b");
        outs.raised(
            "ScaledObject",
            "ns",
            "a",
            labels("a"),
            SignedDuration::from_secs(5),
            at(70),
        );
        assert_eq!(outs.active(at(100)).len(), 2, "raised again");
        outs.ended("ScaledObject", "ns", "b");
        assert_eq!(outs.active(at(100))[0].object, "ScaledObject/ns/a");
    }

    #[test]
    fn a_scale_out_owns_the_pods_of_its_namespace_with_its_labels() {
        let out = ScaleOut {
            object: "ScaledObject/ns/a".into(),
            namespace: "ns".into(),
            pod_labels: labels("a"),
            until: at(60),
        };
        let pod = |namespace: &str, labels: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": namespace, "labels": labels}}),
            )
            .unwrap()
        };
        assert!(out.owns(&pod("ns", json!({"app": "a", "pod-template-hash": "x"}))));
        assert!(!out.owns(&pod("ns", json!({"app": "b"}))));
        assert!(!out.owns(&pod("other", json!({"app": "a"}))));
        let unlabelled = ScaleOut {
            pod_labels: BTreeMap::new(),
            ..out
        };
        assert!(
            !unlabelled.owns(&pod("ns", json!({"app": "a"}))),
            "no labels, no pods"
        );
    }
}
