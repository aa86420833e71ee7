//! Drift, without I/O: whether a NodeClaim still is what its NodePool and EC2NodeClass would
//! launch today. Each NodeClaim is stamped at creation with a hash of its pool's template and
//! of its class's spec; a different hash now, a label the pool's requirements no longer
//! allow, or an image the class no longer resolves is drift. Fields that only steer behaviour
//! (weight, limits, disruption, expireAfter, terminationGracePeriod) and the requirements
//! (checked against the node's labels instead) are not hashed, so changing them drifts nothing;
//! selector terms are not hashed either: what they resolve to is compared instead (the image,
//! and the instance's subnet and security groups as the last listing of instances shows them).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde_json::json;

use super::set_condition;
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{NODECLASS_HASH_ANNOTATION, NODEPOOL_HASH_ANNOTATION};
use crate::apis::node_claim::{CONDITION_DRIFTED, NodeClaim, NodeClaimStatus};
use crate::apis::node_pool::NodePool;
use crate::cloud::Instance;
use crate::scheduling::requirements::Requirements;

/// Why a NodeClaim has drifted: the message of its `Drifted` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Drift {
    #[error("NodePool {pool}'s template changed since the node was launched")]
    Template { pool: String },
    #[error("label {key}={value} is no longer allowed by NodePool {pool}'s requirements")]
    Requirements {
        pool: String,
        key: String,
        value: String,
    },
    #[error("EC2NodeClass {class}'s spec changed since the node was launched")]
    NodeClass { class: String },
    #[error("image {image} is no longer one EC2NodeClass {class} resolves")]
    Image { class: String, image: String },
    #[error("subnet {subnet} is no longer one EC2NodeClass {class} resolves")]
    Subnet { class: String, subnet: String },
    #[error(
        "security groups {launched} are not the ones EC2NodeClass {class} resolves ({resolved})"
    )]
    SecurityGroups {
        class: String,
        launched: String,
        resolved: String,
    },
}

impl Drift {
    /// The `Drifted` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Drift::Template { .. } => "NodePoolDrifted",
            Drift::Requirements { .. } => "RequirementsDrifted",
            Drift::NodeClass { .. } => "NodeClassDrifted",
            Drift::Image { .. } => "ImageDrifted",
            Drift::Subnet { .. } => "SubnetDrifted",
            Drift::SecurityGroups { .. } => "SecurityGroupsDrifted",
        }
    }
}

/// The hash of what a NodePool's template gives every node beyond its requirements.
pub fn template_hash(pool: &NodePool) -> String {
    let template = &pool.spec.template;
    let hashed = json!({
        "labels": template.metadata.labels,
        "annotations": template.metadata.annotations,
        "taints": template.spec.taints,
        "startupTaints": template.spec.startup_taints,
        "nodeClassRef": template.spec.node_class_ref,
    });
    crate::aws::short_hash(hashed.to_string().as_bytes(), 8)
}

/// The hash of an EC2NodeClass's spec without its selector terms.
pub fn node_class_hash(class: &EC2NodeClass) -> String {
    let mut spec = serde_json::to_value(&class.spec).unwrap_or_default();
    if let Some(fields) = spec.as_object_mut() {
        for selector in [
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "amiSelectorTerms",
        ] {
            fields.remove(selector);
        }
    }
    crate::aws::short_hash(spec.to_string().as_bytes(), 8)
}

/// How `claim` (whose node carries `labels`, on `instance` as last listed) has drifted from
/// `pool` and `class`, if it has. A claim stamped by no hash (made by hand, or before hashes)
/// is compared only by its labels, image, subnet and security groups.
pub fn drift(
    claim: &NodeClaim,
    labels: &BTreeMap<String, String>,
    instance: Option<&Instance>,
    pool: &NodePool,
    class: Option<&EC2NodeClass>,
) -> Option<Drift> {
    let pool_name = pool.metadata.name.clone().unwrap_or_default();
    let annotations = claim.metadata.annotations.as_ref();
    let stamped = |key: &str| annotations.and_then(|a| a.get(key));
    if stamped(NODEPOOL_HASH_ANNOTATION).is_some_and(|hash| *hash != template_hash(pool)) {
        return Some(Drift::Template { pool: pool_name });
    }
    let requirements = Requirements::from_node_pool(&pool.spec.template.spec.requirements);
    for (key, requirement) in requirements.iter() {
        if let Some(value) = labels.get(key)
            && !requirement.allows(value)
        {
            return Some(Drift::Requirements {
                pool: pool_name,
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    let class = class?;
    let class_name = class.metadata.name.clone().unwrap_or_default();
    if stamped(NODECLASS_HASH_ANNOTATION).is_some_and(|hash| *hash != node_class_hash(class)) {
        return Some(Drift::NodeClass { class: class_name });
    }
    let resolved = class
        .status
        .as_ref()
        .map(|s| &s.amis)
        .filter(|a| !a.is_empty());
    let image = claim.status.as_ref().and_then(|s| s.image_id.as_ref());
    if let (Some(resolved), Some(image)) = (resolved, image)
        && !resolved.iter().any(|ami| ami.id == *image)
    {
        return Some(Drift::Image {
            class: class_name,
            image: image.clone(),
        });
    }
    let (Some(instance), Some(status)) = (instance, class.status.as_ref()) else {
        return None;
    };
    if let Some(subnet) = &instance.subnet_id
        && !status.subnets.is_empty()
        && !status.subnets.iter().any(|s| s.id == *subnet)
    {
        return Some(Drift::Subnet {
            class: class_name,
            subnet: subnet.clone(),
        });
    }
    let launched: BTreeSet<&str> = instance
        .security_group_ids
        .iter()
        .map(String::as_str)
        .collect();
    let resolved: BTreeSet<&str> = status
        .security_groups
        .iter()
        .map(|g| g.id.as_str())
        .collect();
    // As Karpenter: an instance with no groups while the class resolves some has drifted; a
    // class that resolves none yet says nothing either way.
    if !resolved.is_empty() && launched != resolved {
        let join = |set: BTreeSet<&str>| match set.is_empty() {
            true => "(none)".to_string(),
            false => set.into_iter().collect::<Vec<_>>().join(", "),
        };
        return Some(Drift::SecurityGroups {
            class: class_name,
            launched: join(launched),
            resolved: join(resolved),
        });
    }
    None
}

/// Shows `drift` as the `Drifted` condition: True with why, or no condition at all.
pub fn mark(status: &mut NodeClaimStatus, claim: &NodeClaim, drift: Option<Drift>, now: Timestamp) {
    match drift {
        Some(drift) => set_condition(
            status,
            claim,
            CONDITION_DRIFTED,
            true,
            drift.reason(),
            drift.to_string(),
            now,
        ),
        None => status.conditions.retain(|c| c.type_ != CONDITION_DRIFTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::testing::merge;

    fn pool(template: serde_json::Value) -> NodePool {
        let mut spec = json!({
            "template": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {
                    "requirements": [{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}],
                    "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"}
                }
            }
        });
        merge(&mut spec["template"], template);
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "default"}, "spec": spec
        }))
        .unwrap()
    }

    fn class(user_data: &str, amis: &[&str]) -> EC2NodeClass {
        let amis: Vec<_> = amis.iter().map(|id| json!({"id": id})).collect();
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {
                "subnetSelectorTerms": [{"tags": {"a": "b"}}],
                "securityGroupSelectorTerms": [{"tags": {"a": "b"}}],
                "amiSelectorTerms": [{"alias": "al2023@latest"}],
                "userData": user_data
            },
            "status": {"amis": amis}
        }))
        .unwrap()
    }

    fn claim(pool: &NodePool, class: &EC2NodeClass, image: &str) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "default-x", "annotations": {
                NODEPOOL_HASH_ANNOTATION: template_hash(pool),
                NODECLASS_HASH_ANNOTATION: node_class_hash(class),
            }},
            "spec": {"requirements": [],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"}},
            "status": {"imageID": image}
        }))
        .unwrap()
    }

    fn on_demand() -> BTreeMap<String, String> {
        BTreeMap::from([("windlass.dev/capacity-type".into(), "on-demand".into())])
    }

    #[test]
    fn an_unchanged_claim_has_not_drifted() {
        let (pool, class) = (pool(json!({})), class("#!/bin/sh", &["ami-1"]));
        let claim = claim(&pool, &class, "ami-1");
        assert_eq!(drift(&claim, &on_demand(), None, &pool, Some(&class)), None);
    }

    #[test]
    fn a_template_label_or_taint_change_is_drift() {
        let (before, class) = (pool(json!({})), class("", &["ami-1"]));
        let claim = claim(&before, &class, "ami-1");
        for changed in [
            pool(json!({"metadata": {"labels": {"team": "b"}}})),
            pool(json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}})),
        ] {
            assert_eq!(
                drift(&claim, &on_demand(), None, &changed, Some(&class)),
                Some(Drift::Template {
                    pool: "default".into()
                })
            );
        }
    }

    #[test]
    fn behavioural_fields_never_drift() {
        let (before, class) = (pool(json!({})), class("", &["ami-1"]));
        let claim = claim(&before, &class, "ami-1");
        let mut after =
            pool(json!({"spec": {"expireAfter": "1h", "terminationGracePeriod": "5m"}}));
        after.spec.weight = Some(50);
        after.spec.disruption.consolidate_after = "1m".into();
        after.spec.limits.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("4".into()),
        );
        assert_eq!(
            drift(&claim, &on_demand(), None, &after, Some(&class)),
            None
        );
    }

    #[test]
    fn a_label_the_requirements_no_longer_allow_is_drift() {
        let (before, class) = (pool(json!({})), class("", &["ami-1"]));
        let claim = claim(&before, &class, "ami-1");
        let spot_only = pool(json!({"spec": {"requirements": [
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["spot"]}
        ]}}));
        let drifted = drift(&claim, &on_demand(), None, &spot_only, Some(&class)).unwrap();
        assert_eq!(drifted.reason(), "RequirementsDrifted");
        assert!(
            drifted
                .to_string()
                .contains("windlass.dev/capacity-type=on-demand")
        );
    }

    #[test]
    fn a_class_spec_change_is_drift_but_a_selector_change_alone_is_not() {
        let (pool, before) = (pool(json!({})), class("one", &["ami-1"]));
        let claim = claim(&pool, &before, "ami-1");
        let mut selectors = before.clone();
        selectors.spec.subnet_selector_terms =
            serde_json::from_value(json!([{"id": "subnet-1"}])).unwrap();
        assert_eq!(
            drift(&claim, &on_demand(), None, &pool, Some(&selectors)),
            None
        );
        let changed = class("two", &["ami-1"]);
        assert_eq!(
            drift(&claim, &on_demand(), None, &pool, Some(&changed)).map(|d| d.reason()),
            Some("NodeClassDrifted")
        );
    }

    #[test]
    fn an_image_the_class_no_longer_resolves_is_drift() {
        let (pool, before) = (pool(json!({})), class("", &["ami-1"]));
        let claim = claim(&pool, &before, "ami-1");
        let newer = class("", &["ami-2"]);
        assert_eq!(
            drift(&claim, &on_demand(), None, &pool, Some(&newer)),
            Some(Drift::Image {
                class: "default".into(),
                image: "ami-1".into()
            })
        );
    }

    #[test]
    fn a_subnet_or_security_groups_the_class_no_longer_resolves_are_drift() {
        let pool = pool(json!({}));
        let mut class = class("", &["ami-1"]);
        let status = class.status.as_mut().unwrap();
        status.subnets =
            serde_json::from_value(json!([{"id": "subnet-a", "zone": "us-east-1a"}])).unwrap();
        status.security_groups =
            serde_json::from_value(json!([{"id": "sg-1"}, {"id": "sg-2"}])).unwrap();
        let claim = claim(&pool, &class, "ami-1");
        let instance = |subnet: &str, groups: &[&str]| Instance {
            id: "i-1".into(),
            provider_id: "aws:///us-east-1a/i-1".into(),
            claim: None,
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            image_id: Some("ami-1".into()),
            subnet_id: Some(subnet.into()),
            security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
        };
        let check =
            |instance: &Instance| drift(&claim, &on_demand(), Some(instance), &pool, Some(&class));
        assert_eq!(
            check(&instance("subnet-a", &["sg-2", "sg-1"])),
            None,
            "order is no drift"
        );
        assert_eq!(
            check(&instance("subnet-b", &["sg-1", "sg-2"])).map(|d| d.reason()),
            Some("SubnetDrifted")
        );
        let groups = check(&instance("subnet-a", &["sg-1"])).unwrap();
        assert_eq!(groups.reason(), "SecurityGroupsDrifted");
        assert!(
            groups.to_string().contains("sg-1 are not the ones")
                && groups.to_string().contains("(sg-1, sg-2)"),
            "{groups}"
        );
        assert_eq!(
            drift(&claim, &on_demand(), None, &pool, Some(&class)),
            None,
            "not listed yet"
        );
    }

    #[test]
    fn an_instance_without_security_groups_has_drifted_unless_the_class_resolves_none() {
        let pool = pool(json!({}));
        let mut class = class("", &["ami-1"]);
        let claim = claim(&pool, &class, "ami-1");
        let instance = Instance {
            id: "i-1".into(),
            provider_id: "aws:///us-east-1a/i-1".into(),
            claim: None,
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            image_id: Some("ami-1".into()),
            subnet_id: None,
            security_group_ids: Vec::new(),
        };
        let check =
            |class: &EC2NodeClass| drift(&claim, &on_demand(), Some(&instance), &pool, Some(class));
        assert_eq!(check(&class), None, "the class resolves no groups yet");
        class.status.as_mut().unwrap().security_groups =
            serde_json::from_value(json!([{"id": "sg-1"}])).unwrap();
        let groups = check(&class).expect("drift");
        assert_eq!(groups.reason(), "SecurityGroupsDrifted");
        assert!(
            groups
                .to_string()
                .contains("security groups (none) are not"),
            "{groups}"
        );
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn behavioural_fields_never_change_the_template_hash(
            weight in proptest::option::of(1i32..100),
            cpu in 1u32..1000,
            after in prop_oneof![Just("Never".to_owned()), (1u32..600).prop_map(|s| format!("{s}s"))],
            expire in prop_oneof![Just("Never".to_owned()), (1u32..1000).prop_map(|h| format!("{h}h"))],
            zones in proptest::collection::btree_set(prop_oneof![Just("us-east-1a"), Just("us-east-1b"), Just("us-east-1c")], 1..3),
        ) {
            let base = pool(json!({}));
            let mut changed = base.clone();
            changed.spec.weight = weight;
            changed.spec.limits = BTreeMap::from([("cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu.to_string()))]);
            changed.spec.disruption.consolidate_after = after;
            changed.spec.template.spec.expire_after = expire;
            changed.spec.template.spec.requirements = serde_json::from_value(json!([
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}
            ])).unwrap();
            prop_assert_eq!(template_hash(&base), template_hash(&changed));
        }

        #[test]
        fn a_label_change_always_changes_the_template_hash(value in "[a-z0-9]{1,12}") {
            prop_assume!(value != "a");
            let base = pool(json!({}));
            let relabelled = pool(json!({"metadata": {"labels": {"team": value}}}));
            prop_assert_ne!(template_hash(&base), template_hash(&relabelled));
        }
    }
}
