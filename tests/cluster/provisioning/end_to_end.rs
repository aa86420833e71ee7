//! Provisioning end to end: pods the scheduler marks Unschedulable become one NodeClaim sized
//! for them within the NodePool's limits (the pod a limit leaves pending is reported on the
//! NodePool); the NodeClaim launches an instance through CreateFleet, its Node registers and
//! the pods run there; deleting the NodeClaim terminates the instance and removes the Node.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;
use windlass::scheduling::resources::Resources;

use super::fixture::{
    assert_terminated, candidate_types, claim_instance, delete_pods, delete_pool_and_class,
    describe_instance, ec2_catalog, event_note, instance_profile_roles, instance_tag,
    launch_template, node_class_and_pool, pending_pods, pool_condition, tagged_instances,
    wait_claim_gone, wait_node_gone,
};
use crate::invariants::{LimitWatch, assert_instances_match_claims};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, unique, wait_until,
};

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
    windlass.catalog_read().await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let limits = LimitWatch::watch(&claims, &name, 4000, 8 << 30);
    let pods = pending_pods(&env, ns, &name, 3).await;

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
    let note = wait_until(
        "the NodePool to say its limit left a pod pending",
        Duration::from_secs(30),
        || event_note(&env, &name, "LimitReached"),
    )
    .await;
    assert_eq!(note, "limit cpu=4 reached: 1 pod left pending");
    let limit_reached = wait_until(
        "the NodePool's LimitReached condition",
        Duration::from_secs(30),
        || pool_condition(&pools, &name, "LimitReached", "True"),
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
    let types = candidate_types(claim);
    assert!(!types.is_empty());
    let catalog = ec2_catalog(&env).await;
    for name in &types {
        let it = catalog.iter().find(|it| &it.name == name).unwrap();
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
    let instance = claim_instance(&status);
    let ec2_instance = describe_instance(&env, &instance).await;
    assert_eq!(
        instance_tag(&ec2_instance, "windlass.dev/nodeclaim"),
        Some(claim_name.as_str())
    );
    assert_eq!(
        instance_tag(&ec2_instance, "windlass.dev/nodepool"),
        Some(name.as_str())
    );
    let launched_type = ec2_instance.instance_type().unwrap().as_str().to_owned();
    assert!(
        types.contains(&launched_type),
        "{launched_type} was not a candidate"
    );
    assert_eq!(
        initialized.labels().get("node.kubernetes.io/instance-type"),
        Some(&launched_type)
    );
    assert_eq!(
        tagged_instances(&env, &windlass.cluster).await,
        1,
        "one NodeClaim, one instance"
    );
    assert_instances_match_claims(&env, &windlass.cluster).await;
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
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = nodes.get(&node_name).await.unwrap();
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
        !node_taints
            .iter()
            .any(|t| t.key == "windlass.dev/unregistered"),
        "registration takes off the taint the kubelet registered with: {node_taints:?}"
    );
    assert!(
        node.finalizers()
            .iter()
            .any(|f| f == "windlass.dev/termination"),
        "the Node carries the termination finalizer"
    );
    println!("pods → NodeClaim → {launched_type} ({instance}) → Node {node_name} Ready");

    // The launch template: the node class's tags, the default encrypted gp3 root volume, IMDSv2.
    let (template_name, data) = launch_template(&env, &windlass.cluster).await;
    assert!(
        template_name.starts_with(&format!("windlass-{}-{name}-", windlass.cluster)),
        "{template_name}"
    );
    assert_eq!(data.image_id(), ec2_instance.image_id());
    let profile = data
        .iam_instance_profile()
        .and_then(|p| p.name())
        .expect("the template names the instance profile made for the role");
    let roles = instance_profile_roles(&env, profile).await;
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
    assert_eq!(instance_tag(&ec2_instance, "team"), Some("provisioning"));

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
        || pool_condition(&pools, &name, "LimitReached", "False"),
    )
    .await;
    claims
        .delete(&claim_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_claim_gone(&claims, &claim_name).await;
    assert_terminated(&env, &instance).await;
    wait_node_gone(&nodes, &node_name).await;
    assert_instances_match_claims(&env, &windlass.cluster).await;
    limits.assert_never_over();

    let left = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "a NodeClaim is left");
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
