//! NodePools and EC2NodeClasses that pass the schema but cannot launch, side by side with one
//! pool that can: each says why in a condition and an Event, and the healthy pool's pod gets
//! its instance meanwhile.

use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::Condition;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    delete_claims, delete_pods, delete_pool_and_class, event_notes, live_instances,
    node_class_and_pool, node_class_and_pool_with, pod_for_pool, pool_condition,
};
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

/// The EC2NodeClass's condition `type_` once it has `status`.
async fn class_condition(
    classes: &Api<EC2NodeClass>,
    name: &str,
    type_: &str,
    status: &str,
) -> Condition {
    wait_until(
        &format!("EC2NodeClass {name} {type_}={status}"),
        Duration::from_secs(30),
        || async {
            let class_status = classes.get(name).await.ok()?.status?;
            class_status
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_ && c.status == status)
        },
    )
    .await
}

/// The first Event note with `reason` about `name` (in `namespace`, or cluster-scoped) that
/// contains `text`.
async fn event_containing(
    env: &TestEnv,
    namespace: Option<&str>,
    name: &str,
    reason: &str,
    text: &str,
) -> String {
    wait_until(
        &format!("a {reason} Event about {name} saying {text:?}"),
        Duration::from_secs(30),
        || async {
            event_notes(env, namespace, name, reason)
                .await
                .into_iter()
                .find(|note| note.contains(text))
        },
    )
    .await
}

/// A VPC of its own with a subnet in `zone`, tagged `windlass.dev/test: <tag>`, and a security
/// group: their ids.
async fn own_network(env: &TestEnv, zone: &str, tag: &str) -> (String, String, String) {
    let ec2 = env.ec2();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.78.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.78.1.0/24")
        .availability_zone(zone)
        .send()
        .await
        .unwrap();
    let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
    ec2.create_tags()
        .resources(&subnet)
        .tags(Tag::builder().key("windlass.dev/test").value(tag).build())
        .send()
        .await
        .unwrap();
    let group = ec2
        .create_security_group()
        .group_name(tag)
        .description("subnets-gone test")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap();
    (vpc, subnet, group.group_id().unwrap().to_owned())
}

/// Four pools that cannot launch — requirements no instance type satisfies, a limit below
/// every type, an EC2NodeClass whose role does not exist, one whose only subnet was deleted
/// after it resolved — and a healthy one. Each bad one says why on its NodePool or
/// EC2NodeClass, as a condition and a Warning Event; the deleted subnet is found at the
/// launch (the NodeClaim's LaunchFailed Event names it) and the class is resolved again at
/// once rather than at its next five-minute pass. The healthy pool's pod gets its instance
/// meanwhile, and it is the only one launched.
#[tokio::test]
async fn unworkable_pools_and_node_classes_say_why_while_a_healthy_pool_launches() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "unworkable").await;
    let ns = namespace.name.as_str();
    let on_demand =
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]);
    let healthy = unique("healthy");
    let (classes, pools) = node_class_and_pool(&env, &healthy, on_demand.clone(), json!({})).await;
    let no_types = unique("no-types");
    node_class_and_pool(
        &env,
        &no_types,
        json!([{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["x9.nonexistent"]}]),
        json!({}),
    )
    .await;
    let limited = unique("limited");
    node_class_and_pool(&env, &limited, on_demand.clone(), json!({"cpu": "1"})).await;
    let no_role = unique("no-role");
    let missing_role = unique("NoSuchRole");
    node_class_and_pool_with(
        &env,
        &no_role,
        json!({"role": missing_role}),
        json!({}),
        on_demand.clone(),
        json!({}),
    )
    .await;
    let region = env.aws.region().unwrap().to_string();
    let tag = unique("subnets-gone");
    let (vpc, subnet, group) = own_network(&env, &format!("{region}a"), &tag).await;
    let gone = unique("subnets-gone");
    node_class_and_pool_with(
        &env,
        &gone,
        json!({"subnetSelectorTerms": [{"tags": {"windlass.dev/test": tag}}],
               "securityGroupSelectorTerms": [{"id": group}]}),
        json!({}),
        on_demand,
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;

    // The class resolved its subnet, this install among others: its instance profile shows
    // it resolved the class. Then the subnet goes.
    class_condition(&classes, &gone, "Ready", "True").await;
    let iam = aws_sdk_iam::Client::new(&env.aws);
    let own_profile = format!("windlass_{}_{gone}", windlass.cluster);
    wait_until(
        "this install to resolve the class",
        Duration::from_secs(30),
        || async {
            iam.get_instance_profile()
                .instance_profile_name(&own_profile)
                .send()
                .await
                .ok()
        },
    )
    .await;
    env.ec2()
        .delete_subnet()
        .subnet_id(&subnet)
        .send()
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    for pool in [&healthy, &no_types, &limited, &no_role, &gone] {
        pod_for_pool(&pods, pool, pool).await;
    }

    // Requirements that admit no instance type.
    let condition = wait_until(
        "the NodePool to say its requirements admit no instance type",
        Duration::from_secs(60),
        || pool_condition(&pools, &no_types, "InstanceTypesReady", "False"),
    )
    .await;
    let why = "node.kubernetes.io/instance-type In [x9.nonexistent] admits none of the";
    assert_eq!(condition.reason, "NoInstanceTypes");
    assert!(condition.message.contains(why), "{}", condition.message);
    event_containing(&env, None, &no_types, "NoInstanceTypes", why).await;

    // A limit below every type that could take the pod.
    let condition = wait_until(
        "the NodePool to say its limit holds the pod back",
        Duration::from_secs(60),
        || pool_condition(&pools, &limited, "LimitReached", "True"),
    )
    .await;
    let why = "limit cpu=1 reached: 1 pod left pending";
    assert_eq!(condition.message, why);
    event_containing(&env, None, &limited, "LimitReached", why).await;

    // A role that does not exist.
    let condition = class_condition(&classes, &no_role, "InstanceProfileReady", "False").await;
    let why = format!("IAM role {missing_role} does not exist");
    assert_eq!(condition.reason, "ResolveFailed");
    assert!(condition.message.contains(&why), "{}", condition.message);
    event_containing(&env, None, &no_role, "ResolveFailed", &why).await;
    let condition = wait_until(
        "the NodePool to say its node class is not ready",
        Duration::from_secs(30),
        || pool_condition(&pools, &no_role, "NodeClassReady", "False"),
    )
    .await;
    assert_eq!(condition.reason, "NodeClassNotReady");

    // The subnet that is gone: within moments, not at the class's next five-minute pass.
    let condition = class_condition(&classes, &gone, "SubnetsReady", "False").await;
    assert_eq!(
        (condition.reason.as_str(), condition.message.as_str()),
        ("NotFound", "no subnets match the selector terms")
    );
    event_containing(
        &env,
        None,
        &gone,
        "NotFound",
        "no subnets match the selector terms",
    )
    .await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let gone_selector = format!("windlass.dev/nodepool={gone}");
    let gone_claims = claims
        .list(&ListParams::default().labels(&gone_selector))
        .await
        .unwrap()
        .items;
    // Another install may have resolved the class again before this one planned the pod; then
    // no NodeClaim was made for it. One that was made tried, and says what was gone.
    println!(
        "{} NodeClaim(s) for the pool whose subnet is gone",
        gone_claims.len()
    );
    for claim in &gone_claims {
        assert_eq!(
            claim.status.as_ref().and_then(|s| s.provider_id.clone()),
            None
        );
        let note = event_containing(
            &env,
            None,
            &claim.name_any(),
            "LaunchFailed",
            &format!("EC2NodeClass {gone} resolved to something that is gone"),
        )
        .await;
        assert!(
            note.contains("InvalidSubnetID.NotFound") && note.contains(&subnet),
            "{note}"
        );
    }

    // The healthy pool launched all along, and nothing else did.
    let healthy_selector = format!("windlass.dev/nodepool={healthy}");
    wait_until(
        "the healthy pool's NodeClaim to launch",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&healthy_selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|c| c.status.as_ref().is_some_and(|s| s.provider_id.is_some()))
        },
    )
    .await;
    assert_eq!(live_instances(&env, &windlass.cluster).await.len(), 1);

    delete_pods(&pods).await;
    for pool in [&healthy, &no_types, &limited, &no_role, &gone] {
        delete_claims(&claims, &format!("windlass.dev/nodepool={pool}")).await;
    }
    drop(windlass);
    for pool in [&healthy, &no_types, &limited, &no_role, &gone] {
        delete_pool_and_class(&pools, &classes, pool).await;
    }
    // moto keeps what a test leaves; the class that used them is gone.
    let _ = env
        .ec2()
        .delete_security_group()
        .group_id(&group)
        .send()
        .await;
    let _ = env.ec2().delete_vpc().vpc_id(&vpc).send().await;
    namespace.delete().await;
}
