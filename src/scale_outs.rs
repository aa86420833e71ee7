//! Where the two halves meet: the scaling side writes down each ScaledObject or ScaledJob that
//! is scaling out, and the pods it makes; disruption holds consolidation off the NodePools
//! those pods run in meanwhile, so a node is not consolidated away while the queue's work is
//! arriving on it. A scale-out lasts from each raise for twice the object's polling interval
//! (at least a minute), so a queue that keeps growing keeps its pools held; a ScaledObject
//! scaling in, or going, ends it at once. Pods not bound yet hold nothing: the pool they will
//! land in is not known until they are.
//!
//! A scale-out also carries its demand, unless its object opts out: how many pods the object
//! wants in all and what they look like. The provisioner plans the ones still to come at once
//! (demand-aware provisioning), without waiting for them to exist and be marked Unschedulable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use tokio::sync::Notify;

use crate::apis::labels::DEMAND_AWARE_ANNOTATION;

/// The shortest a scale-out lasts.
const LEAST_HOLD: SignedDuration = SignedDuration::from_mins(1);

/// One object scaling out.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleOut {
    /// `ScaledObject/namespace/name`, as Events name it.
    pub object: String,
    /// The ScaledObject or ScaledJob, for Events about it.
    pub regarding: ObjectReference,
    pub namespace: String,
    /// The labels its pods carry (its target's pod template's).
    pub pod_labels: BTreeMap<String, String>,
    pub demand: Option<Demand>,
    pub until: Timestamp,
}

/// The pods a scaling object wants: `pods` in all, those it has and those about to be made,
/// each like `template` (its namespace, labels and spec).
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub pods: usize,
    pub template: Pod,
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

impl Demand {
    /// `pods` like `template`, for an object in `namespace` with `annotations`; none when the
    /// object opts out (`windlass.dev/demand-aware: "false"`), or the template has no pod spec
    /// or no labels: without labels, the pods that already exist cannot be told apart, and
    /// they would be wanted again.
    pub fn of(
        annotations: &BTreeMap<String, String>,
        namespace: &str,
        template: &PodTemplateSpec,
        pods: usize,
    ) -> Option<Demand> {
        if annotations.get(DEMAND_AWARE_ANNOTATION).map(String::as_str) == Some("false") {
            return None;
        }
        let mut pod = Pod {
            spec: Some(template.spec.clone()?),
            ..Pod::default()
        };
        pod.metadata.namespace = Some(namespace.to_owned());
        pod.metadata.labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .filter(|labels| !labels.is_empty());
        pod.metadata.labels.as_ref()?;
        Some(Demand {
            pods,
            template: pod,
        })
    }
}

#[derive(Debug, Default)]
pub struct ScaleOuts {
    scale_outs: Mutex<HashMap<(String, String, String), ScaleOut>>,
    /// Woken when a scale-out with a demand is raised: the provisioner plans it at once.
    pub demanded: Notify,
}

impl ScaleOuts {
    /// `regarding` raised its replicas (or created Jobs) at `now`, wanting `demand` if known;
    /// it polls every `polling_interval`.
    pub fn raised(
        &self,
        regarding: ObjectReference,
        pod_labels: BTreeMap<String, String>,
        demand: Option<Demand>,
        polling_interval: SignedDuration,
        now: Timestamp,
    ) {
        let hold = (polling_interval * 2).max(LEAST_HOLD);
        let (kind, namespace, name) = (
            regarding.kind.clone().unwrap_or_default(),
            regarding.namespace.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default(),
        );
        let demanded = demand.is_some();
        let scale_out = ScaleOut {
            object: format!("{kind}/{namespace}/{name}"),
            regarding,
            namespace: namespace.clone(),
            pod_labels,
            demand,
            until: now + hold,
        };
        self.scale_outs
            .lock()
            .expect("scale-outs lock")
            .insert((kind, namespace, name), scale_out);
        if demanded {
            self.demanded.notify_one();
        }
    }

    /// `kind` `namespace/name` scaled in, or went: it is not scaling out.
    pub fn ended(&self, kind: &str, namespace: &str, name: &str) {
        self.scale_outs.lock().expect("scale-outs lock").remove(&(
            kind.to_owned(),
            namespace.to_owned(),
            name.to_owned(),
        ));
    }

    /// The objects scaling out at `now`.
    pub fn active(&self, now: Timestamp) -> Vec<ScaleOut> {
        let mut scale_outs = self.scale_outs.lock().expect("scale-outs lock");
        scale_outs.retain(|_, s| s.until > now);
        let mut active: Vec<ScaleOut> = scale_outs.values().cloned().collect();
        active.sort_by(|a, b| a.object.cmp(&b.object));
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("ScaledObject".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        }
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_owned(), app.to_owned())])
    }

    #[test]
    fn a_scale_out_lasts_two_polls_and_at_least_a_minute_and_ends_on_scale_in() {
        let outs = ScaleOuts::default();
        outs.raised(
            reference("a"),
            labels("a"),
            None,
            SignedDuration::from_secs(5),
            at(0),
        );
        outs.raised(
            reference("b"),
            labels("b"),
            None,
            SignedDuration::from_secs(60),
            at(0),
        );
        assert_eq!(outs.active(at(59)).len(), 2);
        let left = outs.active(at(60));
        assert_eq!(left.len(), 1, "a's minute is up");
        assert_eq!(left[0].object, "ScaledObject/ns/b");
        outs.raised(
            reference("a"),
            labels("a"),
            None,
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
            regarding: reference("a"),
            namespace: "ns".into(),
            pod_labels: labels("a"),
            demand: None,
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

    #[test]
    fn a_demand_comes_from_the_template_unless_the_object_opts_out() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}
        }))
        .unwrap();
        let demand = Demand::of(&BTreeMap::new(), "ns", &template, 3).unwrap();
        assert_eq!(demand.pods, 3);
        assert_eq!(demand.template.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(demand.template.metadata.labels, Some(labels("a")));
        assert_eq!(demand.template.spec, template.spec);
        let opted_out = BTreeMap::from([(DEMAND_AWARE_ANNOTATION.to_owned(), "false".to_owned())]);
        assert!(Demand::of(&opted_out, "ns", &template, 3).is_none());
        let no_spec = PodTemplateSpec::default();
        assert!(Demand::of(&BTreeMap::new(), "ns", &no_spec, 3).is_none());
        let mut no_labels = template.clone();
        no_labels.metadata = None;
        assert!(Demand::of(&BTreeMap::new(), "ns", &no_labels, 3).is_none());
    }
}
