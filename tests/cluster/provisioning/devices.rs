//! Extended resources on the stack: a pod asking for `nvidia.com/gpu` gets a GPU type, whose
//! Node the kube-scheduler finds the GPU on; the NodePool's `nvidia.com/gpu` limit holds the
//! next one; and a pod asking for a resource no instance type brings is told so, with no
//! NodeClaim made for it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::labels::REGISTERED_LABEL;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    delete_claims, delete_pods, delete_pool_and_class, event_notes, node_class_and_pool,
};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, unique, wait_until,
};

/// A pod only `pool` can take, with `resources` beside 1 vCPU / 1 GiB.
async fn create_pod(pods: &Api<Pod>, name: &str, pool: &str, limits: serde_json::Value) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": pool},
            "containers": [{"name": "worker", "image": "worker", "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                // The API server defaults an extended resource's request to its limit.
                "limits": limits
            }}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn failed_provisioning(env: &TestEnv, ns: &str, pod: &str, wanted: &str) -> Vec<String> {
    wait_until(
        &format!("a FailedProvisioning Event for {pod} saying {wanted:?}"),
        Duration::from_secs(120),
        || async {
            let notes = event_notes(env, Some(ns), pod, "FailedProvisioning").await;
            notes.iter().any(|n| n.contains(wanted)).then_some(notes)
        },
    )
    .await
}

#[tokio::test]
async fn a_gpu_pod_gets_a_gpu_type_within_the_gpu_limit_and_an_unknown_device_is_refused() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "devices").await;
    let ns = namespace.name.as_str();
    let name = unique("devices");
    // m5.large is the cheapest type here; g4dn.xlarge (one NVIDIA T4 in moto's
    // DescribeInstanceTypes) has no bundled price, so only a GPU request picks it.
    let (classes, pools) = node_class_and_pool(
        &env,
        &name,
        json!([
            {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g4dn", "m5"]},
            {"key": "karpenter.k8s.aws/instance-size", "operator": "In", "values": ["large", "xlarge"]}
        ]),
        json!({"nvidia.com/gpu": "1"}),
    )
    .await;
    let windlass = start_windlass(ns);
    windlass.catalog_read().await;
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    create_pod(&pods, "trainer", &name, json!({"nvidia.com/gpu": "1"})).await;

    let nodes: Api<Node> = Api::all(env.client.clone());
    // Running means kube-scheduler found the GPU in the registered Node's allocatable. The
    // instance-type labels arrive when Windlass registers the Node, which may be after the pod
    // runs: the kubelet's own labels are the template's.
    let node = wait_until(
        "the GPU pod to run on its Node, registered by Windlass",
        Duration::from_secs(120),
        || async {
            let pod = pods.get("trainer").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(())?;
            let node = nodes
                .get(pod.spec.as_ref()?.node_name.as_deref()?)
                .await
                .ok()?;
            node.labels().contains_key(REGISTERED_LABEL).then_some(node)
        },
    )
    .await;
    let labels = node.labels();
    assert_eq!(
        labels["node.kubernetes.io/instance-type"], "g4dn.xlarge",
        "{labels:?}"
    );
    assert_eq!(
        labels
            .get("karpenter.k8s.aws/instance-gpu-manufacturer")
            .map(String::as_str),
        Some("nvidia"),
        "{labels:?}"
    );
    let allocatable = node.status.as_ref().unwrap().allocatable.as_ref().unwrap();
    assert_eq!(allocatable["nvidia.com/gpu"].0, "1", "{allocatable:?}");
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let selector = format!("windlass.dev/nodepool={name}");
    let claim = wait_until(
        "the NodeClaim to record its Node",
        Duration::from_secs(30),
        || async {
            let listed = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let [claim] = listed.items.as_slice() else {
                return None;
            };
            claim
                .status
                .as_ref()?
                .node_name
                .is_some()
                .then(|| claim.clone())
        },
    )
    .await;
    assert_eq!(
        claim.spec.resources.requests["nvidia.com/gpu"].0, "1",
        "the NodeClaim records the GPU its pod asked for"
    );
    let status = claim.status.as_ref().unwrap();
    assert_eq!(
        status.allocatable["nvidia.com/gpu"].0, "1",
        "{:?}",
        status.allocatable
    );

    // The node has one GPU and the pool's limit is one: the next GPU pod stays pending.
    create_pod(
        &pods,
        "second-trainer",
        &name,
        json!({"nvidia.com/gpu": "1"}),
    )
    .await;
    failed_provisioning(
        &env,
        ns,
        "second-trainer",
        &format!("nodepool {name}: limit nvidia.com/gpu=1 reached"),
    )
    .await;

    create_pod(&pods, "fpga", &name, json!({"example.com/fpga": "1"})).await;
    failed_provisioning(
        &env,
        ns,
        "fpga",
        "it requests example.com/fpga, which no instance type brings",
    )
    .await;
    let count = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, 1, "neither held pod got a NodeClaim");
    println!(
        "{} on {}: allocatable {allocatable:?}",
        claim.name_any(),
        node.name_any()
    );

    delete_pods(&pods).await;
    delete_claims(&claims, &selector).await;
    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
