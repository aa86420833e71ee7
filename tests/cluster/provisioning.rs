//! The provisioner against the real cluster and moto's EC2 catalog: pods the scheduler marks
//! Unschedulable become NodeClaims sized for them, within the NodePool's limits, and the pod
//! a limit leaves pending is reported on the NodePool.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::NodePool;
use windlass::provisioning::resources::Resources;

use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

#[tokio::test]
async fn unschedulable_pods_become_node_claims_within_the_node_pool_limits() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "provisioning").await;
    let ns = namespace.name.as_str();
    let name = unique("limited");
    let cluster =
        std::env::var("WINDLASS_CLUSTER_NAME").unwrap_or_else(|_| "windlass-local".into());
    let discovery = json!({"windlass.dev/discovery": cluster});
    let classes: Api<EC2NodeClass> = Api::all(env.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": name},
                "spec": {"role": "WindlassNodeRole", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                         "subnetSelectorTerms": [{"tags": discovery}], "securityGroupSelectorTerms": [{"tags": discovery}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // The taint keeps other tests' pods off this pool.
    let pools: Api<NodePool> = Api::all(env.client.clone());
    pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": name},
                "spec": {
                    "template": {"spec": {
                        "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": name},
                        "requirements": [{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}],
                        "taints": [{"key": "windlass.dev/test", "value": name, "effect": "NoSchedule"}]
                    }},
                    "limits": {"cpu": "4", "memory": "8Gi"}
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let _windlass = start_windlass(ns);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    for index in 0..3 {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("worker-{index}")},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": name},
                "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

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
    let catalog = windlass::provisioning::catalog::bundled();
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

    for claim in claims_now {
        claims
            .delete(&claim.metadata.name.unwrap(), &DeleteParams::default())
            .await
            .unwrap();
    }
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
    classes
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    namespace.delete().await;
}
