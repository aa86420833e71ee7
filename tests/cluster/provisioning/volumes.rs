//! A pod's volumes pin its NodeClaim to their zone: a claim bound to a PersistentVolume with
//! zonal node affinity, and an unbound claim whose WaitForFirstConsumer StorageClass allows one
//! zone. Neither zone is the first of the stack's three, where the pod would otherwise go.
//!
//! The PersistentVolume is a `local` one: the kube-scheduler's VolumeBinding plugin checks its
//! node affinity against the registered Node's labels as it would an EBS volume's, without a
//! CSI driver (none runs on kwok's nodes). The volume and the class name
//! `topology.kubernetes.io/zone`: the kube-scheduler matches keys as written, and the
//! registrar's Nodes carry that label, not the EBS driver's `topology.ebs.csi.aws.com/zone`
//! (which the driver's node plugin adds on EKS); reading that key as the zone is unit-tested.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::VolumePool;
use crate::support::{unique, wait_until};

const ZONE: &str = "topology.kubernetes.io/zone";

/// The values of the NodeClaim's zone requirement.
fn claim_zones(claim: &NodeClaim) -> Vec<String> {
    claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == ZONE)
        .flat_map(|r| r.values.clone())
        .collect()
}

#[tokio::test]
async fn a_pod_with_a_zonal_volume_gets_a_node_in_that_zone() {
    let pool = VolumePool::create("zonal-volume").await;
    let (env, ns, name) = (&pool.env, pool.namespace.name.as_str(), &pool.name);
    let volume_zone = pool.zone('c');

    // A volume in the last of the stack's zones, bound to the claim ahead of time.
    let volumes: Api<PersistentVolume> = Api::all(env.client.clone());
    let volume_name = unique("zonal-pv");
    let volume: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume_name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
            "local": {"path": "/mnt/data"},
            "claimRef": {"namespace": ns, "name": "data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": ZONE, "operator": "In", "values": [volume_zone]}]}
            ]}}
        }
    }))
    .unwrap();
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .unwrap();
    let volume_claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"storageClassName": "", "volumeName": volume_name, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    volume_claims
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
    // The kube-scheduler takes a claim as bound once the PersistentVolume controller says so.
    wait_until("the claim to be Bound", Duration::from_secs(60), || async {
        let claim = volume_claims.get("data").await.ok()?;
        (claim.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;

    let launched = pool.launch_pod_with_claim("stateful", "data").await;
    assert_eq!(
        claim_zones(&launched.planned),
        [volume_zone.as_str()],
        "the NodeClaim is pinned to the volume's zone"
    );
    // Bound means the kube-scheduler's VolumeBinding found the volume's affinity on the Node.
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = wait_until(
        "the pod to be bound to a Node",
        Duration::from_secs(90),
        || async {
            let pod = launched.pods.get("stateful").await.ok()?;
            nodes
                .get(pod.spec.as_ref()?.node_name.as_deref()?)
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(
        node.labels().get(ZONE),
        Some(&volume_zone),
        "Node {}",
        node.name_any()
    );
    assert_eq!(
        node.labels().get("windlass.dev/nodepool"),
        Some(name),
        "the pod runs on the Node launched for it"
    );
    let all = launched.pool_claims().await;
    assert_eq!(
        all.len(),
        1,
        "one NodeClaim: {:?}",
        all.iter().map(claim_zones).collect::<Vec<_>>()
    );
    println!(
        "volume in {volume_zone} → NodeClaim and Node {} in {volume_zone}",
        node.name_any()
    );

    launched.delete().await;
    volume_claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    volumes
        .delete(&volume_name, &DeleteParams::default())
        .await
        .unwrap();
    pool.delete().await;
}

/// An unbound claim of a WaitForFirstConsumer class is provisioned where its pod lands, within
/// the class's allowed topologies. No provisioner runs here, so the volume is never made: the
/// kube-scheduler's choice shows as the node it selects for the claim
/// (`volume.kubernetes.io/selected-node`), made only on a Node in an allowed zone.
#[tokio::test]
async fn an_unbound_claim_waiting_for_its_pod_is_provisioned_within_its_class_zones() {
    let pool = VolumePool::create("wffc-volume").await;
    let (env, ns, name) = (&pool.env, pool.namespace.name.as_str(), &pool.name);
    let allowed_zone = pool.zone('b');

    let storage_classes: Api<StorageClass> = Api::all(env.client.clone());
    let class_name = unique("zonal-class");
    let class: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": class_name},
        "provisioner": "windlass.dev/test-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [
            {"key": ZONE, "values": [allowed_zone]}
        ]}]
    }))
    .unwrap();
    storage_classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let volume_claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "scratch"},
        "spec": {"storageClassName": class_name, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    volume_claims
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();

    let launched = pool.launch_pod_with_claim("waiting", "scratch").await;
    assert_eq!(
        claim_zones(&launched.planned),
        [allowed_zone.as_str()],
        "the class's topology pins the NodeClaim"
    );
    let nodes: Api<Node> = Api::all(env.client.clone());
    let selected = wait_until(
        "the kube-scheduler to select a node for the claim",
        Duration::from_secs(90),
        || async {
            let claim = volume_claims.get("scratch").await.ok()?;
            let node = claim
                .annotations()
                .get("volume.kubernetes.io/selected-node")?
                .clone();
            nodes.get(&node).await.ok()
        },
    )
    .await;
    assert_eq!(
        selected.labels().get("windlass.dev/nodepool"),
        Some(name),
        "the Node launched for the pod"
    );
    assert_eq!(selected.labels().get(ZONE), Some(&allowed_zone));
    println!(
        "class allows {allowed_zone} → NodeClaim in {allowed_zone}, claim's node {}",
        selected.name_any()
    );

    launched.delete().await;
    volume_claims
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    storage_classes
        .delete(&class_name, &DeleteParams::default())
        .await
        .unwrap();
    pool.delete().await;
}
