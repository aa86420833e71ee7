//! Pod constraints shape the NodeClaims: a nodeSelector picks the architecture, required node
//! affinity the zones, and a zone topology spread puts one node in each, counting the pods
//! nominated to NodeClaims in flight and the pods running on Nodes.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    claim_instance, delete_claims, delete_pods, delete_pool_and_class, describe_instance,
    ec2_catalog, node_class_and_pool,
};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, unique, wait_until,
};

#[tokio::test]
async fn node_selectors_node_affinity_and_zone_spread_shape_the_node_claims() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "constraints").await;
    let ns = namespace.name.as_str();
    let name = unique("spread");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let region = env.aws.region().unwrap().to_string();
    let allowed = [format!("{region}b"), format!("{region}c")];
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    // Zone spread across the two allowed zones, one web pod per node.
    let web_pod = |index: usize| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{index}"), "labels": {"app": "web"}},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": name, "kubernetes.io/arch": "arm64"},
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": allowed}]}
                    ]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}
                    ]}
                },
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "containers": [{"name": "web", "image": "web", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]
            }
        }))
        .unwrap()
    };
    for index in 0..2 {
        let pod = web_pod(index);
        pods.create(&PostParams::default(), &pod).await.unwrap();
        // The second pod comes in a later batch, while the first one's NodeClaim is in
        // flight: the nominated first pod must count for the spread.
        wait_until(
            "a NodeClaim for the first pod",
            Duration::from_secs(30),
            || async {
                let list = claims
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                (!list.items.is_empty()).then_some(())
            },
        )
        .await;
    }

    let launched = wait_until(
        "two NodeClaims launched",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let launched: Vec<NodeClaim> = list
                .items
                .into_iter()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.provider_id.is_some()))
                .collect();
            (launched.len() == 2).then_some(launched)
        },
    )
    .await;
    let mut zones: Vec<String> = Vec::new();
    for claim in &launched {
        let instance = claim_instance(claim.status.as_ref().unwrap());
        let ec2_instance = describe_instance(&env, &instance).await;
        let zone = ec2_instance
            .placement()
            .unwrap()
            .availability_zone()
            .unwrap()
            .to_owned();
        let instance_type = ec2_instance.instance_type().unwrap().as_str().to_owned();
        let catalog = ec2_catalog(&env).await;
        let arch = &catalog
            .iter()
            .find(|it| it.name == instance_type)
            .unwrap()
            .arch;
        assert_eq!(arch, "arm64", "{instance_type} ignores the nodeSelector");
        assert!(
            allowed.contains(&zone),
            "{zone} is outside the node affinity"
        );
        zones.push(zone);
    }
    zones.sort();
    assert_eq!(
        zones, allowed,
        "the zone spread puts one pod in each allowed zone"
    );
    println!("zone spread + arm64 + affinity → {zones:?}");

    // Pods Running on initialized Nodes count for the spread too: with web-0 and web-1 running
    // and web-2 running in the first zone, web-3 must go to the second.
    let _registrar = start_registrar(&windlass.cluster, 1);
    let zone_of_running = |pod_name: String| {
        let pods = pods.clone();
        let nodes: Api<Node> = Api::all(env.client.clone());
        async move {
            wait_until(
                &format!("{pod_name} Running"),
                Duration::from_secs(90),
                || async {
                    let pod = pods.get(&pod_name).await.ok()?;
                    let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
                    let node = nodes
                        .get(pod.spec.as_ref()?.node_name.as_deref()?)
                        .await
                        .ok()?;
                    running.then(|| node.labels().get("topology.kubernetes.io/zone").cloned())?
                },
            )
            .await
        }
    };
    zone_of_running("web-0".into()).await;
    zone_of_running("web-1".into()).await;
    pods.create(&PostParams::default(), &web_pod(2))
        .await
        .unwrap();
    let third_zone = zone_of_running("web-2".into()).await;
    pods.create(&PostParams::default(), &web_pod(3))
        .await
        .unwrap();
    let fourth_zone = zone_of_running("web-3".into()).await;
    assert_ne!(
        third_zone, fourth_zone,
        "web-3 must balance the zones web-0..2 run in"
    );
    let launched: Vec<NodeClaim> = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    assert_eq!(launched.len(), 4, "one node per web pod");

    delete_pods(&pods).await;
    delete_claims(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// A NodePool and pod written for Karpenter keep their meaning: `karpenter.k8s.aws/*` and
/// `karpenter.sh/*` requirements pick the types and capacity, the Node carries Karpenter's
/// labels beside Windlass', and a single-valued custom requirement becomes a Node label the pod
/// selects.
#[tokio::test]
async fn karpenters_label_keys_pick_the_types_and_land_on_the_node() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "vocabulary").await;
    let ns = namespace.name.as_str();
    let name = unique("vocabulary");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["c6i", "m6i"]},
            {"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["5"]},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]},
            {"key": "team", "operator": "In", "values": ["data"]}
        ]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ported"},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
            "nodeSelector": {"karpenter.sh/nodepool": name, "team": "data",
                             "karpenter.k8s.aws/instance-size": "xlarge"},
            "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let nodes: Api<Node> = Api::all(env.client.clone());
    // Running means kube-scheduler found every selected label on the registered Node.
    let node = wait_until(
        "the pod to run on its Node",
        Duration::from_secs(90),
        || async {
            let pod = pods.get("ported").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())?;
            nodes
                .get(pod.spec.as_ref()?.node_name.as_deref()?)
                .await
                .ok()
        },
    )
    .await;
    let labels = node.labels();
    let instance_type = &labels["node.kubernetes.io/instance-type"];
    let family = instance_type.split('.').next().unwrap();
    assert!(
        ["c6i.xlarge", "m6i.xlarge"].contains(&instance_type.as_str()),
        "{instance_type} is outside the requirements"
    );
    let expected = [
        ("karpenter.sh/nodepool", name.as_str()),
        ("windlass.dev/nodepool", name.as_str()),
        ("karpenter.sh/capacity-type", "spot"),
        ("windlass.dev/capacity-type", "spot"),
        ("karpenter.k8s.aws/instance-family", family),
        ("windlass.dev/instance-family", family),
        ("karpenter.k8s.aws/instance-category", &family[..1]),
        ("karpenter.k8s.aws/instance-generation", "6"),
        ("karpenter.k8s.aws/instance-size", "xlarge"),
        ("karpenter.k8s.aws/instance-cpu", "4"),
        // What moto's DescribeInstanceTypes says of both types.
        ("karpenter.k8s.aws/instance-hypervisor", "nitro"),
        (
            "karpenter.k8s.aws/instance-encryption-in-transit-supported",
            "true",
        ),
        ("karpenter.k8s.aws/instance-network-bandwidth", "1562"),
        ("team", "data"),
    ];
    for (key, value) in expected {
        assert_eq!(
            labels.get(key).map(String::as_str),
            Some(value),
            "label {key} on {}: {labels:?}",
            node.name_any()
        );
    }
    assert!(
        !labels
            .keys()
            .any(|k| k.contains("instance-gpu") || k.contains("local-nvme")),
        "no GPU or instance store label on a type without them: {labels:?}"
    );
    println!("{instance_type} spot Node labels: {labels:?}");

    delete_pods(&pods).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    delete_claims(&claims, &format!("windlass.dev/nodepool={name}")).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
