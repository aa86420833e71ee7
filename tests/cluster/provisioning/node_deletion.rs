//! Deleting a Node (not its NodeClaim) terminates its instance and removes its NodeClaim.

use k8s_openapi::api::core::v1::Node;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;

use super::fixture::{
    assert_terminated, claim_instance, delete_pods, delete_pool_and_class, initialized_claim,
    node_class_and_pool, pending_pods, wait_claim_gone, wait_node_gone,
};
use crate::support::{
    TestEnv, TestNamespace, install_crds, start_registrar, start_windlass, unique,
};

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
    windlass.catalog_read().await;
    let _registrar = start_registrar(&windlass.cluster, 1);
    let pods = pending_pods(&env, ns, &name, 1).await;
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let claim = initialized_claim(&claims, &name).await;
    let status = claim.status.clone().unwrap();
    let node_name = status.node_name.clone().unwrap();
    let instance = claim_instance(&status);
    delete_pods(&pods).await;

    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_claim_gone(&claims, &claim.name_any()).await;
    wait_node_gone(&nodes, &node_name).await;
    assert_terminated(&env, &instance).await;

    drop(windlass);
    delete_pool_and_class(&pools, &classes, &name).await;
    namespace.delete().await;
}
