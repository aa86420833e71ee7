//! EC2NodeClasses against moto: selector terms resolve to subnets, security groups and AMIs
//! (by tags, name and alias), a role gets an instance profile in IAM, and a term that matches
//! nothing, or a role that does not exist, is a condition and an Event.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use windlass::apis::ec2_node_class::EC2NodeClass;

use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

fn node_class(name: &str, spec: serde_json::Value) -> EC2NodeClass {
    serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn condition<'a>(
    class: &'a EC2NodeClass,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    class
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn node_classes_resolve_their_selector_terms() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "node-classes").await;
    let tag = unique("node-class");
    let ec2 = env.ec2();
    let region = env.aws.region().unwrap().to_string();
    let tags = |id: &str| {
        ec2.create_tags()
            .resources(id)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key("windlass.dev/test")
                    .value(&tag)
                    .build(),
            )
            .send()
    };
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.77.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let mut subnets = Vec::new();
    for (index, zone) in ["a", "b"].iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.77.{}.0/24", index))
            .availability_zone(format!("{region}{zone}"))
            .send()
            .await
            .unwrap();
        let id = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
        tags(&id).await.unwrap();
        subnets.push(id);
    }
    let group = ec2
        .create_security_group()
        .group_name(&tag)
        .description("node class test")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    let group = group.group_id().unwrap().to_owned();
    // moto's RegisterImage drops the architecture; its bundled images carry one.
    let arm64 = ec2
        .describe_images()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("architecture")
                .values("arm64")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let image = arm64.images()[0].image_id().unwrap().to_owned();
    tags(&image).await.unwrap();

    let classes: Api<EC2NodeClass> = Api::all(env.client.clone());
    let (good, bad, no_role) = (
        unique("resolves"),
        unique("missing-subnet"),
        unique("missing-role"),
    );
    classes
        .create(
            &PostParams::default(),
            &node_class(
                &good,
                json!({
                    "role": "WindlassNodeRole", "amiFamily": "AL2023",
                    "subnetSelectorTerms": [{"tags": {"windlass.dev/test": tag}}],
                    "securityGroupSelectorTerms": [{"name": tag}],
                    "amiSelectorTerms": [{"tags": {"windlass.dev/test": tag}}]
                }),
            ),
        )
        .await
        .unwrap();
    classes
        .create(
            &PostParams::default(),
            &node_class(&bad, json!({
                "role": "WindlassNodeRole",
                "subnetSelectorTerms": [{"tags": {"windlass.dev/test": format!("{tag}-nothing")}}],
                "securityGroupSelectorTerms": [{"id": group}],
                "amiSelectorTerms": [{"alias": "al2023@latest"}]
            })),
        )
        .await
        .unwrap();
    classes
        .create(
            &PostParams::default(),
            &node_class(
                &no_role,
                json!({
                    "role": "NoSuchRole",
                    "subnetSelectorTerms": [{"tags": {"windlass.dev/test": tag}}],
                    "securityGroupSelectorTerms": [{"id": group}],
                    "amiSelectorTerms": [{"alias": "al2023@latest"}]
                }),
            ),
        )
        .await
        .unwrap();
    let windlass = start_windlass(&namespace.name);

    let resolved = wait_until(
        "the node class to be Ready",
        Duration::from_secs(30),
        || async {
            let class = classes.get(&good).await.ok()?;
            (condition(&class, "Ready")?.status == "True").then_some(class)
        },
    )
    .await;
    let status = resolved.status.unwrap();
    let mut found: Vec<_> = status
        .subnets
        .iter()
        .map(|s| (s.id.clone(), s.zone.clone()))
        .collect();
    found.sort();
    let mut expected: Vec<_> = subnets
        .iter()
        .cloned()
        .zip([format!("{region}a"), format!("{region}b")])
        .collect();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(status.security_groups.len(), 1);
    assert_eq!(status.security_groups[0].id, group);
    assert_eq!(status.amis.len(), 1);
    assert_eq!(status.amis[0].id, image);
    assert_eq!(status.amis[0].requirements[0].values, ["arm64"]);
    // Every test runs its own install (its own --cluster-name) against the one API server, so
    // any of them may have written the status last.
    let profile = status.instance_profile.clone().unwrap();
    assert!(
        profile.starts_with("windlass_cluster-") && profile.ends_with(&format!("_{good}")),
        "{profile}"
    );
    let iam = aws_sdk_iam::Client::new(&env.aws);
    let made = iam
        .get_instance_profile()
        .instance_profile_name(&profile)
        .send()
        .await
        .unwrap()
        .instance_profile
        .unwrap();
    let roles: Vec<&str> = made.roles.iter().map(|r| r.role_name.as_str()).collect();
    assert_eq!(roles, ["WindlassNodeRole"]);
    assert!(
        made.tags()
            .iter()
            .any(|t| t.key == "windlass.dev/ec2nodeclass" && t.value == good),
        "{:?}",
        made.tags()
    );
    // Another install may have resolved the class first; this one gets to it within moments.
    let own = format!("windlass_{}_{good}", windlass.cluster);
    wait_until(
        "this install's own instance profile",
        Duration::from_secs(30),
        || async {
            iam.get_instance_profile()
                .instance_profile_name(&own)
                .send()
                .await
                .ok()
        },
    )
    .await;

    let roleless = wait_until(
        "the node class without a role to say why",
        Duration::from_secs(30),
        || async {
            let class = classes.get(&no_role).await.ok()?;
            (condition(&class, "Ready")?.status == "False").then_some(class)
        },
    )
    .await;
    let profile_ready = condition(&roleless, "InstanceProfileReady").unwrap();
    assert_eq!(profile_ready.status, "False");
    assert!(
        profile_ready
            .message
            .contains("IAM role NoSuchRole does not exist"),
        "{}",
        profile_ready.message
    );

    let unresolved = wait_until(
        "the other node class to say why",
        Duration::from_secs(30),
        || async {
            let class = classes.get(&bad).await.ok()?;
            (condition(&class, "Ready")?.status == "False").then_some(class)
        },
    )
    .await;
    let subnets_ready = condition(&unresolved, "SubnetsReady").unwrap();
    assert_eq!(
        (subnets_ready.status.as_str(), subnets_ready.reason.as_str()),
        ("False", "NotFound")
    );
    assert_eq!(
        condition(&unresolved, "SecurityGroupsReady")
            .unwrap()
            .status,
        "True"
    );
    let amis = &unresolved.status.as_ref().unwrap().amis;
    let arches: Vec<_> = amis
        .iter()
        .map(|a| a.requirements[0].values[0].clone())
        .collect();
    assert_eq!(
        arches,
        ["amd64", "arm64"],
        "al2023@latest resolves through the EKS SSM parameters"
    );
    let events: Api<Event> = Api::all(env.client.clone());
    wait_until(
        "a Warning Event for the missing subnets",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(bad.as_str())
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("no subnets match"))
                })
                .then_some(())
        },
    )
    .await;

    for name in [&good, &bad, &no_role] {
        classes
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    namespace.delete().await;
}
