//! Nodes join the cluster because their user data says how: the registrar (playing nodeadm,
//! Bottlerocket and bootstrap.sh) reads each instance's user data back from EC2 and registers a
//! Node only from a bootstrap naming this cluster's API server and CA, with the labels, taints
//! and max pods it carries. A `Custom` image's user data, passed through untouched, joins
//! nothing. Without the cluster flags the bootstrap comes from EKS DescribeCluster.

use std::time::Duration;

use aws_sdk_ec2::types::InstanceAttributeName;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use windlass::apis::node_claim::{NodeClaim, NodeClaimStatus};

use super::fixture::{
    claim_instance, delete_pods, delete_pool_and_class, launch_template, node_class_and_pool_with,
};
use crate::release::cluster_access;
use crate::support::{
    TestEnv, TestNamespace, install_crds, skipped_without_moto, start_registrar, start_windlass,
    start_windlass_without, unique, wait_until,
};

/// The instance's user data, decoded.
async fn user_data(env: &TestEnv, instance: &str) -> String {
    let attribute = env
        .ec2()
        .describe_instance_attribute()
        .instance_id(instance)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = attribute
        .user_data()
        .and_then(|v| v.value())
        .unwrap_or_default();
    String::from_utf8(aws_smithy_types::base64::decode(encoded).unwrap()).unwrap()
}

/// One pod that only `pool`'s nodes take.
async fn pod_for(pods: &Api<Pod>, pool: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pool},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": pool},
            "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// The status of `pool`'s first NodeClaim, once it has one.
async fn first_claim_status(claims: &Api<NodeClaim>, pool: &str) -> Option<NodeClaimStatus> {
    let selector = format!("windlass.dev/nodepool={pool}");
    let list = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?;
    list.items.into_iter().next()?.status
}

/// The instance launched for `pool`'s first NodeClaim, once it has one.
async fn launched_instance(claims: &Api<NodeClaim>, pool: &str) -> String {
    wait_until(
        &format!("an instance launched for pool {pool}"),
        Duration::from_secs(90),
        || async {
            let status = first_claim_status(claims, pool).await?;
            status.provider_id.as_ref()?;
            Some(claim_instance(&status))
        },
    )
    .await
}

/// The Node registered for `instance`, if there is one.
async fn node_of(nodes: &Api<Node>, instance: &str) -> Option<Node> {
    let list = nodes.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find(|n| {
        n.spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|id| id.ends_with(&format!("/{instance}")))
    })
}

#[tokio::test]
async fn al2023_bottlerocket_and_al2_nodes_register_from_their_user_data_and_custom_ones_do_not() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "bootstrap").await;
    let on_demand =
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]);
    let limits = json!({"cpu": "8"});
    // Each family with its own max pods and reservations: only the bootstrap carries them to
    // the kubelet, and the NodeClaim's status must agree with what it registers.
    let families = [
        (
            "al2023",
            json!({"kubelet": {"maxPods": 21}, "instanceStorePolicy": "RAID0"}),
            Some(21),
        ),
        (
            "bottlerocket",
            json!({"amiSelectorTerms": [{"alias": "bottlerocket@latest"}], "kubelet": {"maxPods": 22, "systemReserved": {"cpu": "100m", "memory": "100Mi"}},
                   "userData": "[settings.host-containers.admin]\nenabled = true\n"}),
            Some(22),
        ),
        (
            "al2",
            json!({"amiSelectorTerms": [{"alias": "al2@latest"}],
                   "kubelet": {"maxPods": 23, "evictionHard": {"memory.available": "5%"}}}),
            Some(23),
        ),
        (
            "custom",
            json!({"amiSelectorTerms": [{"alias": "al2023@latest"}], "amiFamily": "Custom",
                   "userData": "#!/bin/bash\necho hello\n"}),
            None,
        ),
    ];
    let mut pools = Vec::new();
    for (family, class, _) in &families {
        let name = unique(&format!("boot-{family}"));
        let mut class = class.clone();
        if *family == "custom" {
            // An alias names its family, so a Custom class selects its image by id: one of
            // moto's bundled images, which carry their architecture (RegisterImage drops it).
            let images = env
                .ec2()
                .describe_images()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("architecture")
                        .values("x86_64")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            class["amiSelectorTerms"] = json!([{"id": images.images()[0].image_id().unwrap()}]);
        }
        let (classes, node_pools) = node_class_and_pool_with(
            &env,
            &name,
            class,
            json!({"family": family}),
            on_demand.clone(),
            limits.clone(),
        )
        .await;
        pools.push((name, classes, node_pools));
    }
    let windlass = start_windlass(&namespace.name);
    windlass.catalog_read().await;
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &namespace.name);
    for (name, _, _) in &pools {
        pod_for(&pods, name).await;
    }
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let nodes: Api<Node> = Api::all(env.client.clone());
    let access = cluster_access();
    let mut custom_instance = None;
    for ((family, _, max_pods), (name, _, _)) in families.iter().zip(&pools) {
        let instance = launched_instance(&claims, name).await;
        let data = user_data(&env, &instance).await;
        let Some(max_pods) = max_pods else {
            assert_eq!(
                data, "#!/bin/bash\necho hello\n",
                "Custom keeps userData as it is"
            );
            custom_instance = Some(instance);
            continue;
        };
        assert!(data.contains(&access.endpoint), "{family}: {data}");
        if *family == "al2023" {
            assert!(data.contains("strategy: RAID0"), "{data}");
        }
        let node = wait_until(
            &format!("the {family} instance's Node"),
            Duration::from_secs(60),
            || node_of(&nodes, &instance),
        )
        .await;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("family").map(String::as_str), Some(*family));
        let allocatable = node.status.unwrap().allocatable.unwrap();
        assert_eq!(
            allocatable["pods"].0,
            max_pods.to_string(),
            "{family}: the kubelet's max pods came from the bootstrap"
        );
        let recorded = first_claim_status(&claims, name).await.unwrap().allocatable;
        for resource in ["cpu", "memory", "pods"] {
            assert_eq!(
                recorded[resource], allocatable[resource],
                "{family}: the NodeClaim's {resource} is what its kubelet registered"
            );
        }
        let taints = node.spec.unwrap().taints.unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == "windlass.dev/test" && t.value.as_deref() == Some(name.as_str())),
            "{family}: {taints:?}"
        );
    }
    // The other families registered within seconds of their launch; the Custom one never does.
    let custom_instance = custom_instance.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        node_of(&nodes, &custom_instance).await.is_none(),
        "an instance whose user data joins nothing has no Node"
    );

    delete_pods(&pods).await;
    for (name, classes, node_pools) in &pools {
        delete_pool_and_class(node_pools, classes, name).await;
    }
}

#[tokio::test]
async fn without_the_cluster_flags_nodes_join_the_cluster_eks_describes() {
    if skipped_without_moto("an EKS API (CreateCluster, DescribeCluster): LocalStack has none") {
        return;
    }
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "describe-cluster").await;
    let cluster = unique("cluster");
    let name = unique("described");
    let (classes, pools) = node_class_and_pool_with(
        &env,
        &name,
        json!({"associatePublicIPAddress": true}),
        json!({}),
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({"cpu": "4"}),
    )
    .await;
    let windlass = start_windlass_without(
        &namespace.name,
        "windlass",
        &cluster,
        &[],
        &[
            "WINDLASS_CLUSTER_ENDPOINT",
            "WINDLASS_CLUSTER_CA_BUNDLE",
            "WINDLASS_CLUSTER_SERVICE_CIDR",
        ],
    );
    windlass.catalog_read().await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &namespace.name);
    pod_for(&pods, &name).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let message = wait_until(
        "the NodeClaim to say no EKS cluster tells it what to join",
        Duration::from_secs(90),
        || async {
            let status = first_claim_status(&claims, &name).await?;
            let launched = status.conditions.iter().find(|c| c.type_ == "Launched")?;
            (launched.status == "False" && launched.reason == "ClusterUnknown")
                .then(|| launched.message.clone())
        },
    )
    .await;
    assert!(
        message.contains("eks:DescribeCluster") && message.contains(&cluster),
        "{message}"
    );

    // Once EKS knows the cluster, the next attempt launches.
    let eks = aws_sdk_eks::Client::new(&env.aws);
    eks.create_cluster()
        .name(&cluster)
        .role_arn("arn:aws:iam::123456789012:role/eks")
        .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().build())
        .send()
        .await
        .unwrap();
    let described = eks.describe_cluster().name(&cluster).send().await.unwrap();
    let described = described.cluster().unwrap();
    let endpoint = described.endpoint().unwrap().to_owned();
    let ca = described
        .certificate_authority()
        .unwrap()
        .data()
        .unwrap()
        .to_owned();
    let cidr = described
        .kubernetes_network_config()
        .and_then(|n| n.service_ipv4_cidr())
        .unwrap()
        .to_owned();

    let instance = launched_instance(&claims, &name).await;
    let data = user_data(&env, &instance).await;
    assert!(
        data.contains(&format!("apiServerEndpoint: {endpoint}")),
        "{data}"
    );
    assert!(
        data.contains(&format!("certificateAuthority: {ca}")),
        "{data}"
    );
    assert!(data.contains(&format!("cidr: {cidr}")), "{data}");
    assert!(data.contains(&format!("name: {cluster}")), "{data}");
    assert!(
        data.contains("clusterDNS:\n      - 10.96.0.10"),
        "the kube-dns Service's address: {data}"
    );
    let (_, template) = launch_template(&env, &cluster).await;
    let interface = &template.network_interfaces()[0];
    assert_eq!(interface.associate_public_ip_address(), Some(true));
    assert!(
        !interface.groups().is_empty(),
        "the interface holds the groups"
    );
    assert!(template.security_group_ids().is_empty());

    delete_pods(&pods).await;
    delete_pool_and_class(&pools, &classes, &name).await;
    eks.delete_cluster().name(&cluster).send().await.unwrap();
}
