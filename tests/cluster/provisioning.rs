//! Provisioning against the real cluster and moto: pods the scheduler marks Unschedulable
//! become a NodeClaim sized for them within the NodePool's limits (the pod a limit leaves
//! pending is reported on the NodePool); the NodeClaim launches an instance through
//! CreateFleet, its Node registers and the pods run there; deleting the NodeClaim terminates
//! the instance and removes the Node.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::NodePool;
use windlass::scheduling::resources::Resources;

use windlass::aws::instance_id;

use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, start_windlass_as,
    unique, wait_until,
};

/// An EC2NodeClass on the stack's subnets and security group, and a NodePool on it whose taint
/// keeps other tests' pods away.
async fn node_class_and_pool(
    env: &TestEnv,
    name: &str,
    requirements: serde_json::Value,
    limits: serde_json::Value,
) -> (Api<EC2NodeClass>, Api<NodePool>) {
    let cluster =
        std::env::var("WINDLASS_CLUSTER_NAME").unwrap_or_else(|_| "windlass-local".into());
    let discovery = json!({"windlass.dev/discovery": cluster});
    let classes: Api<EC2NodeClass> = Api::all(env.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": name},
                "spec": {"role": "WindlassNodeRole", "amiSelectorTerms": [{"alias": "al2023@latest"}], "tags": {"team": "provisioning"},
                         "subnetSelectorTerms": [{"tags": discovery}], "securityGroupSelectorTerms": [{"tags": discovery}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pools: Api<NodePool> = Api::all(env.client.clone());
    pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": name},
                "spec": {
                    "template": {"spec": {
                        "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": name},
                        "requirements": requirements,
                        "taints": [{"key": "windlass.dev/test", "value": name, "effect": "NoSchedule"}]
                    }},
                    "limits": limits
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    (classes, pools)
}

/// The instance types the controller plans with: moto's, priced from the bundled table.
async fn ec2_catalog(env: &TestEnv) -> Vec<windlass::scheduling::instance_types::InstanceType> {
    windlass::aws::Aws::new(&env.aws)
        .instance_catalog(&windlass::scheduling::catalog::on_demand_prices())
        .await
        .unwrap()
}

/// Deletes every pod of the test, and waits until they are gone.
async fn delete_pods(pods: &Api<Pod>) {
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    wait_until("the pods to be gone", Duration::from_secs(30), || async {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

async fn assert_terminated(env: &TestEnv, instance: &str) {
    let described = env
        .ec2()
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    let state = described.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_owned();
    assert!(
        ["shutting-down", "terminated"].contains(&state.as_str()),
        "instance {instance} is {state}"
    );
}

async fn delete_pool_and_class(pools: &Api<NodePool>, classes: &Api<EC2NodeClass>, name: &str) {
    pools.delete(name, &DeleteParams::default()).await.unwrap();
    classes
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

async fn wait_claims_gone(claims: &Api<NodeClaim>, selector: &str) {
    wait_until(
        "the NodeClaims to be gone",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
}

/// `count` pods of 1 vCPU / 3 GiB that only the test's NodePool can take.
async fn pending_pods(env: &TestEnv, namespace: &str, pool: &str, count: usize) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    for index in 0..count {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("worker-{index}"), "labels": {"app": "worker"}},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": pool},
                "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    pods
}

#[tokio::test]
async fn unschedulable_pods_get_a_right_sized_node_within_the_node_pool_limits() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "provisioning").await;
    let ns = namespace.name.as_str();
    let name = unique("limited");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({"cpu": "4", "memory": "8Gi"}),
    )
    .await;
    let windlass = start_windlass(ns);
    let pods = pending_pods(&env, ns, &name, 3).await;

    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let created = wait_until(
        "a NodeClaim for the pending pods",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            (!list.items.is_empty()).then_some(list.items)
        },
    )
    .await;
    let events: Api<Event> = Api::all(env.client.clone());
    let note = wait_until(
        "the NodePool to say its limit left a pod pending",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                (e.regarding.as_ref()?.name.as_deref() == Some(name.as_str())
                    && e.reason.as_deref() == Some("LimitReached"))
                .then(|| e.note.unwrap_or_default())
            })
        },
    )
    .await;
    assert_eq!(note, "limit cpu=4 reached: 1 pod left pending");
    let limit_reached = wait_until(
        "the NodePool's LimitReached condition",
        Duration::from_secs(30),
        || async {
            let status = pools.get(&name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "LimitReached" && c.status == "True")
        },
    )
    .await;
    assert_eq!(
        limit_reached.message,
        "limit cpu=4 reached: 1 pod left pending"
    );
    // A later batch must not plan the nominated pods again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let claims_now = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    assert_eq!(
        claims_now.len(),
        1,
        "one 4-vCPU, 8 GiB node holds two pods and is the whole limit"
    );
    assert_eq!(created.len(), 1);

    let claim = &claims_now[0];
    let requests = Resources::from_list(&claim.spec.resources.requests);
    assert!(
        requests.cpu >= 2000 && requests.memory >= 6 << 30,
        "{requests:?}"
    );
    let types: Vec<&String> = claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == "node.kubernetes.io/instance-type")
        .flat_map(|r| r.values.iter())
        .collect();
    assert!(!types.is_empty());
    let catalog = ec2_catalog(&env).await;
    for name in &types {
        let it = catalog.iter().find(|it| &&it.name == name).unwrap();
        assert!(
            it.shape.vcpus <= 4 && it.shape.memory_mib <= 8192,
            "{name} could break the limits"
        );
        assert!(
            requests.fits(&it.allocatable),
            "{name} cannot hold the claim's pods"
        );
    }
    assert!(
        claim
            .spec
            .taints
            .iter()
            .any(|t| t.key == "windlass.dev/test")
    );

    assert_eq!(
        claim.labels().get("windlass.dev/cluster"),
        Some(&windlass.cluster)
    );

    // The instance: launched by CreateFleet, registered by the kubelet stand-in, Ready.
    let _registrar = start_registrar(&windlass.cluster, 1);
    let claim_name = claim.name_any();
    let initialized = wait_until(
        "the NodeClaim to be Initialized",
        Duration::from_secs(90),
        || async {
            let claim = claims.get(&claim_name).await.ok()?;
            let status = claim.status.as_ref()?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Initialized" && c.status == "True")
                .then_some(claim)
        },
    )
    .await;
    let status = initialized.status.clone().unwrap();
    let instance = instance_id(status.provider_id.as_deref().unwrap())
        .unwrap()
        .to_owned();
    let described = env
        .ec2()
        .describe_instances()
        .instance_ids(&instance)
        .send()
        .await
        .unwrap();
    let ec2_instance = described.reservations()[0].instances()[0].clone();
    let tag = |key: &str| {
        ec2_instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(
        tag("windlass.dev/nodeclaim").as_deref(),
        Some(claim_name.as_str())
    );
    assert_eq!(tag("windlass.dev/nodepool").as_deref(), Some(name.as_str()));
    let launched_type = ec2_instance.instance_type().unwrap().as_str().to_owned();
    assert!(
        types.iter().any(|t| **t == launched_type),
        "{launched_type} was not a candidate"
    );
    assert_eq!(
        initialized.labels().get("node.kubernetes.io/instance-type"),
        Some(&launched_type)
    );
    let ours = env
        .ec2()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:windlass.dev/cluster")
                .values(&windlass.cluster)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let launched: usize = ours
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert_eq!(launched, 1, "one NodeClaim, one instance");
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    assert_eq!(
        windlass.metric(&format!("windlass_nodeclaims_created_total{pool_label}")),
        Some(1.0)
    );
    assert_eq!(
        windlass.metric(&format!("windlass_nodeclaims_launched_total{pool_label}")),
        Some(1.0)
    );
    let node_name = status.node_name.clone().unwrap();
    let node = Api::<Node>::all(env.client.clone())
        .get(&node_name)
        .await
        .unwrap();
    let node_labels = node.labels();
    assert_eq!(
        node_labels
            .get("windlass.dev/registered")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        node_labels
            .get("windlass.dev/instance-family")
            .map(String::as_str),
        launched_type.split('.').next()
    );
    assert_eq!(node_labels.get("windlass.dev/nodepool"), Some(&name));
    let node_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(
        node_taints.iter().any(|t| t.key == "windlass.dev/test"),
        "{node_taints:?}"
    );
    assert!(
        node.finalizers()
            .iter()
            .any(|f| f == "windlass.dev/termination"),
        "the Node carries the termination finalizer"
    );
    println!("pods → NodeClaim → {launched_type} ({instance}) → Node {node_name} Ready");

    // The launch template: the node class's tags, the default encrypted gp3 root volume, IMDSv2.
    let templates = env
        .ec2()
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:windlass.dev/cluster")
                .values(&windlass.cluster)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let template = &templates.launch_templates()[0];
    let template_name = template.launch_template_name().unwrap();
    assert!(
        template_name.starts_with(&format!("windlass-{}-{name}-", windlass.cluster)),
        "{template_name}"
    );
    let versions = env
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(template_name)
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(data.image_id(), ec2_instance.image_id());
    let profile = data
        .iam_instance_profile()
        .and_then(|p| p.name())
        .expect("the template names the instance profile made for the role");
    let roles: Vec<String> = aws_sdk_iam::Client::new(&env.aws)
        .get_instance_profile()
        .instance_profile_name(profile)
        .send()
        .await
        .unwrap()
        .instance_profile
        .unwrap()
        .roles
        .into_iter()
        .map(|r| r.role_name)
        .collect();
    assert_eq!(roles, ["WindlassNodeRole"], "{profile}");
    let root = &data.block_device_mappings()[0];
    assert_eq!(root.device_name(), Some("/dev/xvda"));
    let ebs = root.ebs().unwrap();
    assert_eq!((ebs.volume_size(), ebs.encrypted()), (Some(20), Some(true)));
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    let metadata = data.metadata_options().unwrap();
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    let volume_tags = &data.tag_specifications()[0];
    assert!(
        volume_tags
            .tags()
            .iter()
            .any(|t| t.key() == Some("team") && t.value() == Some("provisioning")),
        "{volume_tags:?}"
    );
    assert_eq!(tag("team").as_deref(), Some("provisioning"));

    let pool_status = wait_until(
        "the NodePool to count its node",
        Duration::from_secs(30),
        || async {
            let status = pools.get(&name).await.ok()?.status?;
            (status.nodes == 1 && status.resources.get("cpu").is_some_and(|q| q.0 != "0"))
                .then_some(status)
        },
    )
    .await;
    let counted = Resources::from_list(&pool_status.resources);
    assert_eq!(
        counted,
        Resources::from_list(&status.capacity),
        "the pool counts its NodeClaim's capacity"
    );
    assert!(
        pool_status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    let running = wait_until(
        "two pods Running on the new Node",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let running: Vec<_> = list
                .items
                .into_iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str())
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .collect();
            (running.len() == 2).then_some(running)
        },
    )
    .await;
    assert_eq!(running.len(), 2);

    // Deleting the NodeClaim terminates the instance and removes the Node. The pods go first,
    // so the freed limit does not bring a NodeClaim for the pod still pending.
    delete_pods(&pods).await;
    wait_until(
        "LimitReached to clear once no pod is held back",
        Duration::from_secs(30),
        || async {
            let status = pools.get(&name).await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "LimitReached" && c.status == "False")
                .then_some(())
        },
    )
    .await;
    claims
        .delete(&claim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        "the NodeClaim to be gone",
        Duration::from_secs(60),
        || async {
            claims
                .get_opt(&claim_name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_terminated(&env, &instance).await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    wait_until("the Node to be gone", Duration::from_secs(30), || async {
        nodes
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    let left = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "a NodeClaim is left");
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// The moto server's fault injection (hack/stack/moto_server.py): CreateFleet for `cluster`
/// reports the offerings `value` matches (`capacity-type:type:zone`, `*` for any) as out of
/// capacity until the returned parameter is deleted.
async fn exhaust(env: &TestEnv, cluster: &str, value: &str) -> String {
    let name = format!("/windlass-test/insufficient-capacity/{cluster}");
    aws_sdk_ssm::Client::new(&env.aws)
        .put_parameter()
        .name(&name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    name
}

async fn restore(env: &TestEnv, parameter: &str) {
    aws_sdk_ssm::Client::new(&env.aws)
        .delete_parameter()
        .name(parameter)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn spot_out_of_capacity_falls_back_to_on_demand() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "capacity").await;
    let ns = namespace.name.as_str();
    let name = unique("spot");
    let (classes, pools) = node_class_and_pool(&env, &name, json!([]), json!({})).await;
    let windlass = start_windlass(ns);
    let exhausted = exhaust(&env, &windlass.cluster, "spot:*:*").await;
    let pods = pending_pods(&env, ns, &name, 1).await;

    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let launched = wait_until(
        "the NodeClaim to launch on-demand",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|c| c.labels().contains_key("windlass.dev/capacity-type"))
        },
    )
    .await;
    restore(&env, &exhausted).await;
    assert_eq!(
        launched
            .labels()
            .get("windlass.dev/capacity-type")
            .map(String::as_str),
        Some("on-demand"),
        "spot was out of capacity everywhere"
    );
    let events: Api<Event> = Api::all(env.client.clone());
    let claim_name = launched.name_any();
    let failure = wait_until(
        "a LaunchFailed Event for the spot attempt",
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find_map(|e| {
                (e.regarding.as_ref()?.name.as_deref() == Some(claim_name.as_str())
                    && e.reason.as_deref() == Some("LaunchFailed"))
                .then(|| e.note.unwrap_or_default())
            })
        },
    )
    .await;
    assert!(
        failure.contains("(spot)") && failure.contains("InsufficientInstanceCapacity"),
        "{failure}"
    );
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    assert!(
        windlass.metric(&format!(
            "windlass_nodeclaims_launch_failures_total{pool_label}"
        )) >= Some(1.0)
    );
    assert_eq!(
        windlass.metric(&format!("windlass_nodeclaims_launched_total{pool_label}")),
        Some(1.0)
    );

    delete_pods(&pods).await;
    claims
        .delete(&claim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        "the NodeClaim to be gone",
        Duration::from_secs(60),
        || async {
            claims
                .get_opt(&claim_name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

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
        let status = claim.status.as_ref().unwrap();
        let instance = instance_id(status.provider_id.as_deref().unwrap())
            .unwrap()
            .to_owned();
        let described = env
            .ec2()
            .describe_instances()
            .instance_ids(&instance)
            .send()
            .await
            .unwrap();
        let ec2_instance = &described.reservations()[0].instances()[0];
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
    for claim in &launched {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// The values of the NodeClaim's instance-type requirement.
fn candidate_types(claim: &NodeClaim) -> Vec<String> {
    claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == "node.kubernetes.io/instance-type")
        .flat_map(|r| r.values.clone())
        .collect()
}

#[tokio::test]
async fn the_cheapest_type_out_of_capacity_launches_the_next_and_is_left_out_after() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "next-type").await;
    let ns = namespace.name.as_str();
    let name = unique("nexttype");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.xlarge", "m5.2xlarge"]}
        ]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    let exhausted = exhaust(&env, &windlass.cluster, "on-demand:m5.xlarge:*").await;
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let first = wait_until(
        "the first NodeClaim to launch",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|c| c.labels().contains_key("node.kubernetes.io/instance-type"))
        },
    )
    .await;
    assert_eq!(candidate_types(&first), ["m5.2xlarge", "m5.xlarge"]);
    assert_eq!(
        first
            .labels()
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m5.2xlarge"),
        "m5.xlarge, the cheapest, was out of capacity"
    );

    // A pod that may not share a node with the worker: the second NodeClaim no longer offers
    // m5.xlarge while that is marked out of capacity.
    let big: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": name},
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "worker"}}}
            ]}},
            "containers": [{"name": "big", "image": "big", "resources": {"requests": {"cpu": "3500m", "memory": "3Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &big).await.unwrap();
    let second = wait_until("a second NodeClaim", Duration::from_secs(60), || async {
        let list = claims
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|c| c.name_any() != first.name_any())
    })
    .await;
    restore(&env, &exhausted).await;
    assert_eq!(candidate_types(&second), ["m5.2xlarge"]);

    delete_pods(&pods).await;
    for claim in [&first, &second] {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

#[tokio::test]
async fn deleting_a_node_terminates_its_instance_and_removes_its_node_claim() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "node-delete").await;
    let ns = namespace.name.as_str();
    let name = unique("nodedelete");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let claim = wait_until(
        "the NodeClaim to be Initialized",
        Duration::from_secs(90),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().find(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Initialized" && c.status == "True")
                })
            })
        },
    )
    .await;
    let status = claim.status.clone().unwrap();
    let node_name = status.node_name.clone().unwrap();
    let instance = instance_id(status.provider_id.as_deref().unwrap())
        .unwrap()
        .to_owned();
    delete_pods(&pods).await;

    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        "the NodeClaim to be gone",
        Duration::from_secs(60),
        || async {
            claims
                .get_opt(&claim.name_any())
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    wait_until("the Node to be gone", Duration::from_secs(30), || async {
        nodes
            .get_opt(&node_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_terminated(&env, &instance).await;

    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// The instances tagged for `cluster` that are pending or running.
async fn live_instances(env: &TestEnv, cluster: &str) -> Vec<String> {
    let described = env
        .ec2()
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:windlass.dev/cluster")
                .values(cluster)
                .build(),
        )
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect()
}

/// How many batches the controller has planned since it started.
fn batches_planned(windlass: &crate::support::Windlass) -> f64 {
    windlass
        .metric("windlass_scheduling_duration_seconds_count")
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_restart_mid_launch_never_launches_for_pods_that_have_capacity_coming() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "restart").await;
    let ns = namespace.name.as_str();
    let name = unique("restart");
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
        json!({}),
    )
    .await;
    let windlass = start_windlass(ns);
    let cluster = windlass.cluster.clone();
    // Two pods that may not share a node: two NodeClaims. Each pod is more than half of the
    // smallest candidate type, so a claim that still counted its pod as taken had no room for it.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    for index in 0..2 {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("apart-{index}"), "labels": {"app": "apart"}},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": name},
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "apart"}}}
                ]}},
                "containers": [{"name": "apart", "image": "apart", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let list_claims = || async {
        claims
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    };
    wait_until(
        "two NodeClaims launched",
        Duration::from_secs(60),
        || async {
            let launched = list_claims()
                .await
                .into_iter()
                .filter(|c| c.status.as_ref().is_some_and(|s| s.provider_id.is_some()))
                .count();
            (launched == 2).then_some(())
        },
    )
    .await;
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // Killed before any Node exists, then started again with the same arguments.
    drop(windlass);
    let mut windlass = start_windlass_as(ns, "windlass", &cluster);
    wait_until(
        "the restarted controller to plan",
        Duration::from_secs(30),
        || std::future::ready((batches_planned(&windlass) >= 1.0).then_some(())),
    )
    .await;
    assert_eq!(
        list_claims().await.len(),
        2,
        "after SIGKILL: the pods have capacity coming"
    );
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);
    // A measurement window, not a wait for an outcome: the retry 10 s later launches nothing.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(list_claims().await.len(), 2, "after the retry interval");
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // A graceful restart: the same.
    windlass.process.terminate().await;
    let windlass = start_windlass_as(ns, "windlass", &cluster);
    wait_until(
        "the restarted controller to plan",
        Duration::from_secs(30),
        || std::future::ready((batches_planned(&windlass) >= 1.0).then_some(())),
    )
    .await;
    assert_eq!(
        list_claims().await.len(),
        2,
        "after SIGTERM: the pods have capacity coming"
    );
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    // The capacity that was coming is where the pods run.
    let _registrar = start_registrar(&cluster, 1);
    let nodes = wait_until("both pods Running", Duration::from_secs(90), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let nodes: BTreeSet<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (nodes.len() == 2).then_some(nodes)
    })
    .await;
    println!("two pods, two NodeClaims across two restarts, on {nodes:?}");
    wait_until(
        "windlass_pending_pods to drop to 0",
        Duration::from_secs(15),
        || {
            std::future::ready(
                (windlass.metric("windlass_pending_pods") == Some(0.0)).then_some(()),
            )
        },
    )
    .await;
    assert_eq!(live_instances(&env, &cluster).await.len(), 2);

    delete_pods(&pods).await;
    for claim in list_claims().await {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}

/// The notes of the Events with `reason` about the object named `name` in `namespace` (`None`
/// for a cluster-scoped object), oldest first.
async fn event_notes(
    env: &TestEnv,
    namespace: Option<&str>,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let events: Api<Event> = Api::all(env.client.clone());
    let mut matching: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.name.as_deref()) == Some(name)
                && regarding.and_then(|r| r.namespace.as_deref()) == namespace
                && e.reason.as_deref() == Some(reason)
        })
        .collect();
    matching.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    matching.into_iter().filter_map(|e| e.note).collect()
}

/// One pod of 1 vCPU / 1 GiB that only `pool` can take.
async fn pod_for_pool(pods: &Api<Pod>, pod_name: &str, pool: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": pool},
            "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

#[tokio::test]
async fn pools_that_cannot_launch_say_why_and_an_unpriced_type_still_launches() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "why").await;
    let ns = namespace.name.as_str();
    let name = unique("graviton");
    // t4g.medium is arm64 and has no bundled on-demand price.
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["t4g.medium"]},
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}
        ]),
        json!({}),
    )
    .await;
    // A second pool whose node class finds no subnet.
    let unready = unique("unready");
    let (_, _) = node_class_and_pool(&env, &unready, json!([]), json!({})).await;
    classes
        .patch(
            &unready,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"subnetSelectorTerms": [{"tags": {"windlass.dev/discovery": "nowhere"}}]}})),
        )
        .await
        .unwrap();
    let windlass = start_windlass(ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    pod_for_pool(&pods, "graviton", &name).await;
    pod_for_pool(&pods, "unready", &unready).await;

    let conflict = "kubernetes.io/arch In [amd64] and node.kubernetes.io/instance-type In [t4g.medium] admit no instance type together";
    let condition = wait_until(
        "the NodePool to say its requirements admit no instance type",
        Duration::from_secs(60),
        || async {
            let status = pools.get(&name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "InstanceTypesReady" && c.status == "False")
        },
    )
    .await;
    assert!(
        condition.message.ends_with(conflict),
        "{}",
        condition.message
    );
    let pool_events = event_notes(&env, None, &name, "NoInstanceTypes").await;
    assert!(
        pool_events.iter().any(|n| n.ends_with(conflict)),
        "{pool_events:?}"
    );
    let first = wait_until(
        "the pod's FailedProvisioning Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, Some(ns), "graviton", "FailedProvisioning")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(
        first.contains(&format!(
            "nodepool {name}: its requirements admit no instance type: {conflict}"
        )),
        "{first}"
    );
    let not_ready = wait_until(
        "the other pod's FailedProvisioning Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, Some(ns), "unready", "FailedProvisioning")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(
        not_ready.contains(&format!(
            "nodepool {unready}: EC2NodeClass {unready} is not ready"
        )),
        "{not_ready}"
    );

    // Fixed, but held by a limit: the pod's Event says the new reason, as a new Event.
    pools
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {
                "template": {"spec": {"requirements": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["t4g.medium"]},
                    {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}
                ]}},
                "limits": {"cpu": "1"}
            }})),
        )
        .await
        .unwrap();
    wait_until(
        "the NodePool's instance types to be admitted",
        Duration::from_secs(30),
        || async {
            let status = pools.get(&name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "InstanceTypesReady" && c.status == "True")
        },
    )
    .await;
    let notes = wait_until(
        "a FailedProvisioning Event naming the limit",
        Duration::from_secs(30),
        || async {
            let notes = event_notes(&env, Some(ns), "graviton", "FailedProvisioning").await;
            notes
                .iter()
                .any(|n| n.contains(&format!("nodepool {name}: limit cpu=1 reached")))
                .then_some(notes)
        },
    )
    .await;
    assert!(notes.len() >= 2, "{notes:?}");
    assert!(notes[0].contains("admit no instance type"), "{notes:?}");

    // Without the limit the unpriced type launches, and its NodeClaim says it had no price.
    pools
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"limits": null}})),
        )
        .await
        .unwrap();
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let claim = wait_until(
        "a NodeClaim for t4g.medium",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        },
    )
    .await;
    assert_eq!(candidate_types(&claim), ["t4g.medium"]);
    let unknown = wait_until(
        "the UnknownPrice Event",
        Duration::from_secs(30),
        || async {
            event_notes(&env, None, &claim.name_any(), "UnknownPrice")
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert!(unknown.contains("t4g.medium"), "{unknown}");
    wait_until(
        "the t4g.medium instance",
        Duration::from_secs(60),
        || async { (live_instances(&env, &windlass.cluster).await.len() == 1).then_some(()) },
    )
    .await;

    delete_pods(&pods).await;
    claims
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_claims_gone(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    delete_pool_and_class(&pools, &classes, &unready).await;
    namespace.delete().await;
}
