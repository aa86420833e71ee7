//! What the provisioner writes for a plan, without I/O: the NodeClaim for each planned claim,
//! the limit notes for the pools whose limits left pods pending, and the candidates that have no
//! known price.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{
    CLUSTER_LABEL, INSTANCE_TYPE_LABEL, NODECLASS_HASH_ANNOTATION, NODEPOOL_HASH_ANNOTATION,
    NODEPOOL_LABEL,
};
use crate::apis::node_claim::{NodeClaim, NodeClaimSpec, ResourceRequirements};
use crate::apis::node_pool::NodePool;
use crate::nodeclaim::drift::{node_class_hash, template_hash};
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::requirements::Requirement;
use crate::scheduling::{
    LAUNCH_CANDIDATES, NODE_CLAIM_CANDIDATES, NewClaim, Rejection, Unplaced, cheapest_candidates,
    claim_labels,
};

/// The NodeClaim for a planned claim, for the install `cluster`: the pool's template, the
/// plan's requirements with the instance types narrowed to the cheapest candidates, the pods'
/// requests, and the hashes of the template and of the pool's `class` (for drift).
pub fn node_claim(
    node_pool: &NodePool,
    class: Option<&EC2NodeClass>,
    claim: &NewClaim,
    catalog: &[InstanceType],
    cluster: &str,
) -> NodeClaim {
    let template = &node_pool.spec.template;
    let pool_name = node_pool.name_any();
    // The nodepool is a label on the NodeClaim, not a requirement it may carry.
    let mut requirements = claim.requirements.clone().without(NODEPOOL_LABEL);
    requirements.add(
        INSTANCE_TYPE_LABEL,
        Requirement::one_of(
            cheapest_candidates(
                &claim.instance_types,
                &claim.requirements,
                catalog,
                NODE_CLAIM_CANDIDATES,
            )
            .iter()
            .copied()
            .map(|i| catalog[i].name.clone()),
        ),
    );
    let mut labels = claim_labels(&pool_name, &template.metadata.labels, &requirements);
    let mut annotations = template.metadata.annotations.clone();
    annotations.insert(
        NODEPOOL_HASH_ANNOTATION.to_owned(),
        template_hash(node_pool),
    );
    if let Some(class) = class {
        annotations.insert(NODECLASS_HASH_ANNOTATION.to_owned(), node_class_hash(class));
    }
    labels.insert(CLUSTER_LABEL.to_owned(), cluster.to_owned());
    NodeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{pool_name}-")),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "windlass.dev/v1alpha1".into(),
                kind: "NodePool".into(),
                name: pool_name,
                uid: node_pool.metadata.uid.clone().unwrap_or_default(),
                block_owner_deletion: Some(true),
                controller: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: NodeClaimSpec {
            requirements: requirements.to_node_selector(),
            resources: ResourceRequirements {
                requests: claim.requests.to_list(),
            },
            node_class_ref: template.spec.node_class_ref.clone(),
            taints: template.spec.taints.clone(),
            startup_taints: template.spec.startup_taints.clone(),
            expire_after: template.spec.expire_after.clone(),
            termination_grace_period: template.spec.termination_grace_period.clone(),
        },
        status: None,
    }
}

/// The candidates a first launch of `claim` offers that have no known price for the offerings
/// it may use.
pub fn unpriced_candidates<'a>(claim: &NewClaim, catalog: &'a [InstanceType]) -> Vec<&'a str> {
    cheapest_candidates(
        &claim.instance_types,
        &claim.requirements,
        catalog,
        LAUNCH_CANDIDATES,
    )
    .iter()
    .copied()
    .map(|i| &catalog[i])
    .filter(|it| {
        it.cheapest_offering(&claim.requirements)
            .is_none_or(|offering| offering.price.is_none())
    })
    .map(|it| it.name.as_str())
    .collect()
}

/// Per NodePool whose limits left pods pending, one note per limit, such as
/// `limit cpu=4 reached: 1 pod left pending`.
pub fn limit_notes<'a>(
    unplaced: impl IntoIterator<Item = &'a Unplaced>,
) -> BTreeMap<String, Vec<String>> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for unplaced in unplaced {
        for (pool, rejection) in &unplaced.0 {
            if let Rejection::Limit(limit) = rejection {
                *counts.entry((pool.clone(), limit.clone())).or_default() += 1;
            }
        }
    }
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((pool, limit), count) in counts {
        let plural = if count == 1 { "" } else { "s" };
        notes.entry(pool).or_default().push(format!(
            "limit {limit} reached: {count} pod{plural} left pending"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scheduling::catalog;
    use crate::scheduling::instance_types::{ON_DEMAND, Offering, Shape};
    use crate::scheduling::pod::Untolerated;
    use crate::scheduling::requirements::Requirements;
    use crate::scheduling::resources::Resources;

    fn new_claim(catalog: &[InstanceType], names: &[&str]) -> NewClaim {
        NewClaim {
            pool: 0,
            requirements: Requirements::default(),
            pods: vec![0, 1],
            requests: Resources {
                cpu: 2000,
                memory: 6 << 30,
                pods: 2,
                nvidia_gpu: 1,
                ..Resources::default()
            },
            instance_types: names
                .iter()
                .map(|n| catalog.iter().position(|it| it.name == *n).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_node_claim_carries_its_pool_its_install_and_the_cheapest_candidates() {
        let catalog = catalog::bundled();
        let pool: NodePool = serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "default", "uid": "pool-uid"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "data"}},
                "spec": {
                    "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"},
                    "requirements": [],
                    "taints": [{"key": "dedicated", "value": "data", "effect": "NoSchedule"}]
                }
            }}
        }))
        .unwrap();
        let claim = node_claim(
            &pool,
            None,
            &new_claim(&catalog, &["c5.xlarge", "m5.xlarge"]),
            &catalog,
            "prod",
        );
        let labels = claim.labels();
        assert_eq!(labels[NODEPOOL_LABEL], "default");
        assert_eq!(labels[CLUSTER_LABEL], "prod");
        assert_eq!(labels["team"], "data");
        assert_eq!(
            claim.annotations().get(NODEPOOL_HASH_ANNOTATION),
            Some(&template_hash(&pool)),
            "stamped for drift"
        );
        assert_eq!(claim.metadata.generate_name.as_deref(), Some("default-"));
        let owner = &claim.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("NodePool", "pool-uid")
        );
        let types: Vec<&String> = claim
            .spec
            .requirements
            .iter()
            .filter(|r| r.key == INSTANCE_TYPE_LABEL)
            .flat_map(|r| r.values.iter())
            .collect();
        assert_eq!(types, ["c5.xlarge", "m5.xlarge"]);
        assert!(
            claim
                .spec
                .requirements
                .iter()
                .all(|r| r.key != NODEPOOL_LABEL),
            "the nodepool is a label, not a requirement"
        );
        let requests: Vec<(&str, &str)> = claim
            .spec
            .resources
            .requests
            .iter()
            .map(|(name, amount)| (name.as_str(), amount.0.as_str()))
            .collect();
        assert_eq!(
            requests,
            [
                ("cpu", "2"),
                ("memory", "6Gi"),
                ("nvidia.com/gpu", "1"),
                ("pods", "2")
            ],
            "every resource the pods ask for is recorded"
        );
        assert_eq!(claim.spec.taints[0].key, "dedicated");
    }

    #[test]
    fn a_single_valued_requirement_is_a_label_unless_the_instance_gives_it() {
        let catalog = catalog::bundled();
        let pool: NodePool = serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "default"},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"},
                "requirements": []
            }}}
        }))
        .unwrap();
        let mut claim = new_claim(&catalog, &["m5.xlarge"]);
        claim
            .requirements
            .add("team", Requirement::one_of(["data"]));
        claim
            .requirements
            .add("tier", Requirement::one_of(["a", "b"]));
        claim
            .requirements
            .add("karpenter.sh/capacity-type", Requirement::one_of(["spot"]));
        let labels = node_claim(&pool, None, &claim, &catalog, "prod")
            .labels()
            .clone();
        assert_eq!(
            labels["team"], "data",
            "a pod selecting team=data schedules"
        );
        assert!(!labels.contains_key("tier"), "two values are not a label");
        assert!(
            !labels.contains_key(crate::apis::labels::CAPACITY_TYPE_LABEL),
            "the launched offering says the capacity type"
        );
        assert_eq!(labels["karpenter.sh/nodepool"], "default");
    }

    #[test]
    fn limit_notes_count_the_pods_each_limit_held_back() {
        let limit = |pool: &str, which: &str| (pool.to_owned(), Rejection::Limit(which.into()));
        let unplaced = [
            Unplaced(vec![
                limit("a", "cpu=4"),
                (
                    "b".into(),
                    Rejection::Untolerated(Untolerated {
                        key: "k".into(),
                        value: "v".into(),
                        effect: "NoSchedule".into(),
                    }),
                ),
            ]),
            Unplaced(vec![limit("a", "cpu=4")]),
            Unplaced(vec![limit("a", "nodes=2"), limit("b", "memory=8Gi")]),
        ];
        let notes = limit_notes(&unplaced);
        assert_eq!(
            notes["a"],
            [
                "limit cpu=4 reached: 2 pods left pending",
                "limit nodes=2 reached: 1 pod left pending"
            ]
        );
        assert_eq!(notes["b"], ["limit memory=8Gi reached: 1 pod left pending"]);
    }

    #[test]
    fn candidates_without_a_known_price_are_named() {
        let mut catalog = catalog::bundled();
        catalog.push(InstanceType::new(
            "t4g.medium",
            "arm64",
            Shape {
                vcpus: 2,
                memory_mib: 4096,
                max_pods: 17,
                ..Shape::default()
            },
            vec![Offering {
                zone: "us-east-1a".into(),
                capacity_type: ON_DEMAND.into(),
                price: None,
                available: true,
            }],
        ));
        let claim = new_claim(&catalog, &["m5.large", "t4g.medium"]);
        assert_eq!(unpriced_candidates(&claim, &catalog), ["t4g.medium"]);
    }
}
