//! Who scales a target. Two scalers writing one target's replicas undo each other's work, so a
//! target has one owner: a HorizontalPodAutoscaler if one targets it (Windlass creates none, so
//! every HPA is someone else's), else the oldest ScaledObject on it (by creationTimestamp, then
//! name). KEDA refuses the second one in its admission webhook; Windlass has no webhook and
//! decides here, in the loop, so the other one takes over once the owner is gone.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;

use crate::apis::scaled_object::{ScaleTargetRef, ScaledObject};

/// Another object that scales the same target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtherOwner {
    HorizontalPodAutoscaler(String),
    ScaledObject(String),
}

impl std::fmt::Display for OtherOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OtherOwner::HorizontalPodAutoscaler(name) => {
                write!(f, "HorizontalPodAutoscaler {name:?}")
            }
            OtherOwner::ScaledObject(name) => write!(f, "ScaledObject {name:?} (created first)"),
        }
    }
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → the core group "").
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn same_target(ours: &ScaleTargetRef, kind: &str, name: &str, api_version: Option<&str>) -> bool {
    ours.kind == kind
        && ours.name == name
        && api_version.is_none_or(|v| group(v) == group(&ours.api_version))
}

/// Who else scales `object`'s target, if anyone does before it: an HPA on the target, else an
/// older ScaledObject on it. Only objects of `object`'s namespace can target what it targets.
/// Every poll of every ScaledObject asks, so the scan compares in place and copies only
/// what matches.
pub fn other_owner<'a>(
    object: &ScaledObject,
    scaled_objects: impl IntoIterator<Item = &'a ScaledObject>,
    autoscalers: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
) -> Option<OtherOwner> {
    let (namespace, name) = (&object.metadata.namespace, &object.metadata.name);
    let target = &object.spec.scale_target_ref;
    let hpa = autoscalers
        .into_iter()
        .filter(|hpa| hpa.metadata.namespace == *namespace)
        .filter(|hpa| {
            let theirs = &hpa.spec.scale_target_ref;
            same_target(
                target,
                &theirs.kind,
                &theirs.name,
                theirs.api_version.as_deref(),
            )
        })
        .map(ResourceExt::name_any)
        .min();
    if let Some(name) = hpa {
        return Some(OtherOwner::HorizontalPodAutoscaler(name));
    }
    let seniority = |o: &ScaledObject| {
        (
            o.metadata.creation_timestamp.as_ref().map(|t| t.0),
            o.name_any(),
        )
    };
    let ours = seniority(object);
    scaled_objects
        .into_iter()
        .filter(|other| other.metadata.namespace == *namespace && other.metadata.name != *name)
        .filter(|other| {
            let theirs = &other.spec.scale_target_ref;
            same_target(
                target,
                &theirs.kind,
                &theirs.name,
                Some(&theirs.api_version),
            )
        })
        .map(seniority)
        .filter(|theirs| *theirs < ours)
        .min()
        .map(|(_, name)| OtherOwner::ScaledObject(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scaled_object(name: &str, created: &str, target: serde_json::Value) -> ScaledObject {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": name, "namespace": "team-a", "creationTimestamp": created},
            "spec": {
                "scaleTargetRef": target,
                "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "https://sqs/q"}}]
            }
        }))
        .unwrap()
    }

    fn hpa(name: &str, namespace: &str, target: serde_json::Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scaleTargetRef": target, "maxReplicas": 5}
        }))
        .unwrap()
    }

    const EARLY: &str = "2026-12-01T10:00:00Z";
    const LATE: &str = "2026-12-01T11:00:00Z";

    #[test]
    fn the_oldest_scaled_object_owns_the_target_and_the_younger_names_it() {
        let older = scaled_object("older", EARLY, json!({"name": "worker"}));
        let younger = scaled_object("younger", LATE, json!({"name": "worker"}));
        let all = [older.clone(), younger.clone()];
        assert_eq!(other_owner(&older, &all, []), None);
        assert_eq!(
            other_owner(&younger, &all, []),
            Some(OtherOwner::ScaledObject("older".into()))
        );
        // Once the older one is gone, the younger owns it.
        assert_eq!(other_owner(&younger, [&younger], []), None);
    }

    #[test]
    fn created_in_the_same_second_the_name_decides() {
        let a = scaled_object("a", EARLY, json!({"name": "worker"}));
        let b = scaled_object("b", EARLY, json!({"name": "worker"}));
        let all = [a.clone(), b.clone()];
        assert_eq!(other_owner(&a, &all, []), None);
        assert_eq!(
            other_owner(&b, &all, []),
            Some(OtherOwner::ScaledObject("a".into()))
        );
    }

    #[test]
    fn other_targets_kinds_groups_and_namespaces_do_not_conflict() {
        let ours = scaled_object("ours", LATE, json!({"name": "worker"}));
        let other_name = scaled_object("a", EARLY, json!({"name": "api"}));
        let other_kind =
            scaled_object("b", EARLY, json!({"name": "worker", "kind": "StatefulSet"}));
        let other_group = scaled_object(
            "c",
            EARLY,
            json!({"name": "worker", "apiVersion": "example.com/v1"}),
        );
        let mut elsewhere = scaled_object("d", EARLY, json!({"name": "worker"}));
        elsewhere.metadata.namespace = Some("team-b".into());
        let hpa_elsewhere = hpa(
            "web",
            "team-b",
            json!({"kind": "Deployment", "name": "worker", "apiVersion": "apps/v1"}),
        );
        let others = [other_name, other_kind, other_group, elsewhere];
        assert_eq!(other_owner(&ours, &others, [&hpa_elsewhere]), None);
        // Another version of the same group is the same target.
        let other_version = scaled_object(
            "e",
            EARLY,
            json!({"name": "worker", "apiVersion": "apps/v1beta2"}),
        );
        assert_eq!(
            other_owner(&ours, [&other_version], []),
            Some(OtherOwner::ScaledObject("e".into()))
        );
    }

    #[test]
    fn an_hpa_on_the_target_owns_it_even_against_the_oldest_scaled_object() {
        let oldest = scaled_object("oldest", EARLY, json!({"name": "worker"}));
        let autoscaler = hpa(
            "web",
            "team-a",
            json!({"kind": "Deployment", "name": "worker", "apiVersion": "apps/v1"}),
        );
        assert_eq!(
            other_owner(&oldest, [&oldest], [&autoscaler]),
            Some(OtherOwner::HorizontalPodAutoscaler("web".into()))
        );
        assert_eq!(
            OtherOwner::HorizontalPodAutoscaler("web".into()).to_string(),
            "HorizontalPodAutoscaler \"web\""
        );
    }
}
