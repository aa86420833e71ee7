use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::apis::labels::HOSTNAME_LABEL;
use crate::scheduling::fake;
use crate::scheduling::pod::NamespaceLabels;
use crate::scheduling::{Mismatch, NodePoolInput, Problem, Rejection, solve};

/// The storage objects of a test cluster.
#[derive(Default)]
struct Storage {
    claims: Vec<Arc<PersistentVolumeClaim>>,
    volumes: Vec<Arc<PersistentVolume>>,
    classes: Vec<Arc<StorageClass>>,
}

impl StorageObjects for Storage {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }

    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
            .cloned()
    }

    fn storage_classes(&self) -> Vec<Arc<StorageClass>> {
        self.classes.clone()
    }
}

impl Storage {
    fn claim_of(mut self, name: &str, spec: Value) -> Self {
        self.claims.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"}, "spec": spec
            }))
            .unwrap(),
        ));
        self
    }

    /// A PersistentVolume with these node-affinity terms.
    fn volume_in(mut self, name: &str, terms: Value) -> Self {
        self.volumes.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": terms}}}
            }))
            .unwrap(),
        ));
        self
    }

    fn class(mut self, name: &str, annotations: Value, mode: &str, topologies: Value) -> Self {
        self.classes.push(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "annotations": annotations,
                             "creationTimestamp": format!("2026-01-0{}T00:00:00Z", self.classes.len() + 1)},
                "provisioner": "ebs.csi.aws.com",
                "volumeBindingMode": mode,
                "allowedTopologies": topologies
            }))
            .unwrap(),
        ));
        self
    }
}

fn zone_term(key: &str, zones: &[&str]) -> Value {
    json!({"matchExpressions": [{"key": key, "operator": "In", "values": zones}]})
}

/// A pending pod `web` in `ns` with these volumes and this node affinity.
fn pod_with(volumes: Value, affinity_terms: Option<Value>) -> Pod {
    let affinity = affinity_terms.map(|terms| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
    });
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {"containers": [{"name": "c"}], "volumes": volumes, "affinity": affinity}
    }))
    .unwrap()
}

fn claim_volume(claim: &str) -> Value {
    json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])
}

fn zones_of(alternatives: &[Requirements]) -> Vec<Vec<String>> {
    alternatives
        .iter()
        .map(|a| {
            a.get(ZONE_LABEL)
                .and_then(Requirement::finite_values)
                .map(|v| v.iter().cloned().collect())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_bound_claim_pins_the_pod_to_its_volumes_zone_under_the_ebs_key() {
    let storage = Storage::default()
        .claim_of("data", json!({"volumeName": "pv-1"}))
        .volume_in(
            "pv-1",
            json!([zone_term("topology.ebs.csi.aws.com/zone", &["zone-b"])]),
        );
    let pod = pod_with(claim_volume("data"), None);
    let alternatives = volume_requirements(&pod, &storage).unwrap().unwrap();
    assert_eq!(zones_of(&alternatives), [["zone-b"]]);
    assert!(
        alternatives[0]
            .get("topology.ebs.csi.aws.com/zone")
            .is_none(),
        "read as topology.kubernetes.io/zone"
    );
}

#[test]
fn a_volumes_terms_are_alternatives_each_with_the_pods_own() {
    let storage = Storage::default()
        .claim_of("data", json!({"volumeName": "pv-1"}))
        .volume_in(
            "pv-1",
            json!([
                zone_term("failure-domain.beta.kubernetes.io/zone", &["zone-a"]),
                zone_term(ZONE_LABEL, &["zone-b"])
            ]),
        );
    // The pod allows zone-a or zone-b with arm64, or zone-c.
    let pod = pod_with(
        claim_volume("data"),
        Some(json!([
            {"matchExpressions": [
                {"key": ZONE_LABEL, "operator": "In", "values": ["zone-a", "zone-b"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}
            ]},
            zone_term(ZONE_LABEL, &["zone-c"])
        ])),
    );
    let shape = placement_shape(&pod, &storage).unwrap();
    assert_eq!(
        zones_of(&shape.requirements),
        [["zone-a"], ["zone-b"]],
        "zone-c meets neither of the volume's terms"
    );
    assert!(
        shape
            .requirements
            .iter()
            .all(|a| !a.allows("kubernetes.io/arch", "amd64"))
    );
    assert_eq!(
        zones_of(shape.node_affinity()),
        [vec!["zone-a", "zone-b"], vec!["zone-c"]],
        "the pod's own affinity is kept for its zone spreads"
    );
}

#[test]
fn a_pod_whose_affinity_excludes_its_volumes_zone_is_refused_with_both() {
    let storage = Storage::default()
        .claim_of("data", json!({"volumeName": "pv-1"}))
        .volume_in("pv-1", json!([zone_term(ZONE_LABEL, &["zone-b"])]));
    let pod = pod_with(
        claim_volume("data"),
        Some(json!([zone_term(ZONE_LABEL, &["zone-a"])])),
    );
    let error = placement_shape(&pod, &storage).unwrap_err();
    assert_eq!(
        error.to_string(),
        "its volumes can be reached only where its node affinity does not allow \
         (topology.kubernetes.io/zone In [zone-b])"
    );
}

#[test]
fn two_volumes_in_different_zones_leave_no_node() {
    let storage = Storage::default()
        .claim_of("a", json!({"volumeName": "pv-a"}))
        .claim_of("b", json!({"volumeName": "pv-b"}))
        .volume_in("pv-a", json!([zone_term(ZONE_LABEL, &["zone-a"])]))
        .volume_in("pv-b", json!([zone_term(ZONE_LABEL, &["zone-b"])]));
    let pod = pod_with(
        json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "a"}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "b"}}
        ]),
        None,
    );
    assert_eq!(
        volume_requirements(&pod, &storage),
        Err(VolumeError::NoCommonNode {
            key: ZONE_LABEL.into()
        })
    );
}

#[test]
fn an_unbound_claim_waiting_for_its_pod_follows_its_class_topologies() {
    let topologies = json!([
        {"matchLabelExpressions": [{"key": "topology.ebs.csi.aws.com/zone", "values": ["zone-c"]}]},
        {"matchLabelExpressions": [{"key": ZONE_LABEL, "values": ["zone-a"]}]}
    ]);
    let storage = Storage::default()
        .class("gp3", json!({}), "WaitForFirstConsumer", topologies)
        .class("anywhere", json!({}), "WaitForFirstConsumer", json!(null))
        .claim_of("data", json!({"storageClassName": "gp3"}))
        .claim_of("scratch", json!({"storageClassName": "anywhere"}));
    let alternatives = volume_requirements(&pod_with(claim_volume("data"), None), &storage)
        .unwrap()
        .unwrap();
    assert_eq!(zones_of(&alternatives), [["zone-c"], ["zone-a"]]);
    assert_eq!(
        volume_requirements(&pod_with(claim_volume("scratch"), None), &storage),
        Ok(None),
        "a class without allowed topologies provisions wherever the pod lands"
    );
}

#[test]
fn a_claim_without_a_class_takes_the_newest_default_one() {
    let default = json!({"storageclass.kubernetes.io/is-default-class": "true"});
    let beta_default = json!({"storageclass.beta.kubernetes.io/is-default-class": "true"});
    let storage = Storage::default()
        .class(
            "old-default",
            default,
            "WaitForFirstConsumer",
            json!([{"matchLabelExpressions": [{"key": ZONE_LABEL, "values": ["zone-a"]}]}]),
        )
        .class(
            "new-default",
            beta_default,
            "WaitForFirstConsumer",
            json!([{"matchLabelExpressions": [{"key": ZONE_LABEL, "values": ["zone-b"]}]}]),
        )
        .class(
            "not-default",
            json!({"storageclass.kubernetes.io/is-default-class": "false"}),
            "WaitForFirstConsumer",
            json!([{"matchLabelExpressions": [{"key": ZONE_LABEL, "values": ["zone-c"]}]}]),
        )
        .claim_of("data", json!({}));
    let alternatives = volume_requirements(&pod_with(claim_volume("data"), None), &storage)
        .unwrap()
        .unwrap();
    assert_eq!(zones_of(&alternatives), [["zone-b"]]);
}

#[test]
fn an_unbound_claim_bound_immediately_or_without_a_class_waits_with_a_reason() {
    let storage = Storage::default()
        .class("io2", json!({}), "Immediate", json!(null))
        .claim_of("immediate", json!({"storageClassName": "io2"}))
        .claim_of("classless", json!({"storageClassName": ""}))
        .claim_of("no-default", json!({}));
    let reason = |claim: &str| {
        volume_requirements(&pod_with(claim_volume(claim), None), &storage)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        reason("immediate"),
        "PersistentVolumeClaim ns/immediate is not bound yet and its StorageClass io2 binds immediately"
    );
    assert_eq!(
        reason("classless"),
        "PersistentVolumeClaim ns/classless is not bound yet and with no StorageClass it binds immediately"
    );
    assert_eq!(
        reason("no-default"),
        "PersistentVolumeClaim ns/no-default is not bound yet and with no StorageClass it binds immediately"
    );
}

#[test]
fn a_missing_claim_volume_or_class_is_named() {
    let storage = Storage::default()
        .claim_of("lost", json!({"volumeName": "pv-gone"}))
        .claim_of("typo", json!({"storageClassName": "gp-three"}));
    let reason = |pod: Pod| PodShape::from_pod(&pod).and_then(|_| placement_shape(&pod, &storage));
    assert_eq!(
        reason(pod_with(claim_volume("absent"), None)),
        Err(PodShapeError::Volume(VolumeError::ClaimMissing {
            claim: "ns/absent".into()
        }))
    );
    assert_eq!(
        reason(pod_with(claim_volume("lost"), None))
            .unwrap_err()
            .to_string(),
        "PersistentVolume pv-gone of PersistentVolumeClaim ns/lost does not exist"
    );
    assert_eq!(
        reason(pod_with(claim_volume("typo"), None))
            .unwrap_err()
            .to_string(),
        "StorageClass gp-three of PersistentVolumeClaim ns/typo does not exist"
    );
    let mut deleting = (*storage.claims[0]).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let storage = Storage {
        claims: vec![Arc::new(deleting)],
        ..Storage::default()
    };
    assert_eq!(
        volume_requirements(&pod_with(claim_volume("lost"), None), &storage),
        Err(VolumeError::ClaimDeleting {
            claim: "ns/lost".into()
        })
    );
}

#[test]
fn an_ephemeral_volume_reads_the_claim_named_after_pod_and_volume_until_the_pod_is_placed() {
    let ephemeral =
        json!([{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]);
    let missing = volume_requirements(&pod_with(ephemeral.clone(), None), &Storage::default());
    assert_eq!(
        missing.unwrap_err().to_string(),
        "PersistentVolumeClaim ns/web-scratch of ephemeral volume scratch is not created yet"
    );
    let storage = Storage::default()
        .claim_of("web-scratch", json!({"volumeName": "pv-1"}))
        .volume_in("pv-1", json!([zone_term(ZONE_LABEL, &["zone-a"])]));
    let pending = pod_with(ephemeral, None);
    let alternatives = volume_requirements(&pending, &storage).unwrap().unwrap();
    assert_eq!(zones_of(&alternatives), [["zone-a"]]);
    let mut placed = pending;
    placed.spec.as_mut().unwrap().node_name = Some("node-1".into());
    assert_eq!(
        volume_requirements(&placed, &storage),
        Ok(None),
        "moved, the pod is made anew with a claim of its own"
    );
}

#[test]
fn region_keys_narrow_nothing_and_other_keys_stay() {
    let storage = Storage::default()
        .claim_of("regional", json!({"volumeName": "pv-r"}))
        .claim_of("local", json!({"volumeName": "pv-l"}))
        .volume_in(
            "pv-r",
            json!([{"matchExpressions": [
                {"key": "failure-domain.beta.kubernetes.io/region", "operator": "In", "values": ["us-east-1"]},
                {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["us-east-1"]}
            ]}]),
        )
        .volume_in(
            "pv-l",
            json!([{"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["node-1"]}]}]),
        );
    assert_eq!(
        volume_requirements(&pod_with(claim_volume("regional"), None), &storage),
        Ok(None)
    );
    let local = volume_requirements(&pod_with(claim_volume("local"), None), &storage)
        .unwrap()
        .unwrap();
    assert!(local[0].allows(HOSTNAME_LABEL, "node-1"));
    assert!(!local[0].allows(HOSTNAME_LABEL, "node-2"));
    let no_claims = pod_with(json!([{"name": "tmp", "emptyDir": {}}]), None);
    assert_eq!(volume_requirements(&no_claims, &storage), Ok(None));
}

fn pool(catalog: &[crate::scheduling::instance_types::InstanceType]) -> NodePoolInput {
    NodePoolInput {
        name: "default".into(),
        instance_types: (0..catalog.len()).collect(),
        ..NodePoolInput::default()
    }
}

#[test]
fn the_simulation_launches_in_the_volumes_zone_and_not_for_a_node_local_volume() {
    let catalog = fake::catalog(4);
    let storage = Storage::default()
        .claim_of("zonal", json!({"volumeName": "pv-z"}))
        .claim_of("local", json!({"volumeName": "pv-l"}))
        .volume_in(
            "pv-z",
            json!([zone_term("topology.ebs.csi.aws.com/zone", &[fake::ZONES[2]])]),
        )
        .volume_in(
            "pv-l",
            json!([{"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["node-1"]}]}]),
        );
    let pods = [
        placement_shape(&pod_with(claim_volume("zonal"), None), &storage).unwrap(),
        placement_shape(&pod_with(claim_volume("local"), None), &storage).unwrap(),
    ];
    let pools = [pool(&catalog)];
    let plan = solve(&Problem {
        catalog: &catalog,
        pools: &pools,
        existing: &[],
        bound: &[],
        pods: &pods,
        namespaces: &NamespaceLabels::new(),
    });
    assert_eq!(plan.new_claims.len(), 1);
    let zone = plan.new_claims[0].requirements.get(ZONE_LABEL).unwrap();
    assert_eq!(zone.single_value(), Some(fake::ZONES[2]));
    let [(1, unplaced)] = plan.unplaced.as_slice() else {
        panic!("the node-local pod is unplaced: {:?}", plan.unplaced);
    };
    assert!(
        matches!(
            &unplaced.0[0].1,
            Rejection::Requirements(Mismatch::LabelNotSet { key, .. }) if key == HOSTNAME_LABEL
        ),
        "a new node cannot reach a volume on another node: {unplaced}"
    );
}

proptest! {
    /// Whatever zones the pod's affinity and its volume allow, a planned NodeClaim is in a zone
    /// both allow, and the pod is refused only when they share none.
    #[test]
    fn a_planned_claim_is_in_a_zone_the_pod_and_its_volume_both_allow(
        pod_zones in prop::collection::btree_set(0..3usize, 1..=3),
        volume_zones in prop::collection::btree_set(0..3usize, 1..=3),
    ) {
        let names = |set: &BTreeSet<usize>| set.iter().map(|&i| fake::ZONES[i]).collect::<Vec<_>>();
        let storage = Storage::default()
            .claim_of("data", json!({"volumeName": "pv-1"}))
            .volume_in("pv-1", json!([zone_term("topology.ebs.csi.aws.com/zone", &names(&volume_zones))]));
        let pod = pod_with(claim_volume("data"), Some(json!([zone_term(ZONE_LABEL, &names(&pod_zones))])));
        let both: BTreeSet<usize> = pod_zones.intersection(&volume_zones).copied().collect();
        let shape = placement_shape(&pod, &storage);
        prop_assert_eq!(shape.is_err(), both.is_empty());
        if let Ok(shape) = shape {
            let catalog = fake::catalog(4);
            let pools = [pool(&catalog)];
            let pods = [shape];
            let plan = solve(&Problem { catalog: &catalog, pools: &pools, existing: &[], bound: &[], pods: &pods, namespaces: &NamespaceLabels::new() });
            prop_assert_eq!(plan.new_claims.len(), 1);
            let zone = plan.new_claims[0].requirements.get(ZONE_LABEL).unwrap();
            let allowed = names(&both);
            for zone_name in fake::ZONES {
                prop_assert_eq!(zone.allows(zone_name), allowed.contains(&zone_name), "{}", zone_name);
            }
        }
    }
}
