//! What voluntary disruption never evicts: a pod annotated do-not-disrupt and a running pod of
//! a ScaledJob's Job keep their drifted nodes; once the guarded pod is gone its node goes. An
//! underused node running a ScaledJob's Job is cordoned and goes once the Job is done.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::scaled_job::ScaledJob;

use super::{PoolRun, initialized_claims, patch_pool, pool_claims};
use crate::support::wait_until;

/// A pod spec only the pool can take, one per node among those labelled `app: protected`.
fn spec(pool: &str) -> serde_json::Value {
    json!({
        "restartPolicy": "Never",
        "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
        "nodeSelector": {"windlass.dev/nodepool": pool},
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "protected"}}, "topologyKey": "kubernetes.io/hostname"}
        ]}},
        "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
    })
}

/// ScaledJob `report` on `queue`: one Job at a time, whose pod runs until the test takes its
/// `windlass.dev/test-outcome: hold` annotation off (the stack's kubelets complete Job pods
/// otherwise).
async fn holding_scaled_job(
    env: &crate::support::TestEnv,
    namespace: &str,
    pool: &str,
    queue: &str,
) -> Api<ScaledJob> {
    let scaled_job: ScaledJob = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "report"},
        "spec": {
            "pollingInterval": 1, "maxReplicaCount": 1,
            "jobTargetRef": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {"app": "protected"},
                             "annotations": {"windlass.dev/test-outcome": "hold"}},
                "spec": spec(pool)
            }},
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap();
    let scaled_jobs: Api<ScaledJob> = Api::namespaced(env.client.clone(), namespace);
    scaled_jobs
        .create(&PostParams::default(), &scaled_job)
        .await
        .unwrap();
    scaled_jobs
}

fn drifted(claim: &windlass::apis::node_claim::NodeClaim) -> bool {
    claim.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Drifted" && c.status == "True")
    })
}

#[tokio::test]
async fn do_not_disrupt_and_scaled_job_pods_keep_their_drifted_nodes() {
    let run = PoolRun::start(
        "protect",
        json!({"disruption": {"consolidateAfter": "Never", "budgets": [{"nodes": "100%"}]}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let guarded: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "guarded", "labels": {"app": "protected"},
                     "annotations": {"windlass.dev/do-not-disrupt": "true"}},
        "spec": spec(name)
    }))
    .unwrap();
    pods.create(&PostParams::default(), &guarded).await.unwrap();
    // A Job that runs until the test ends.
    let queue = env.queue("protect").await;
    env.send_messages(&queue, 1).await;
    let scaled_jobs = holding_scaled_job(env, ns, name, &queue).await;
    let both = initialized_claims(claims, name, 2).await;
    wait_until("both pods to run", Duration::from_secs(90), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (running == 2).then_some(())
    })
    .await;
    let node_of_pod = |pod: &Pod| pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let guarded_node = node_of_pod(&pods.get("guarded").await.unwrap());
    let guarded_claim = both
        .iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.clone()) == guarded_node)
        .unwrap()
        .name_any();

    patch_pool(
        &run.pools,
        name,
        json!({"template": {"metadata": {"labels": {"generation": "two"}}}}),
    )
    .await;
    wait_until(
        "both NodeClaims Drifted",
        Duration::from_secs(30),
        || async {
            let list = pool_claims(claims, name).await;
            (list.len() == 2 && list.iter().all(drifted)).then_some(())
        },
    )
    .await;
    // Past the 30 s bind grace and several disruption passes.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let list = pool_claims(claims, name).await;
    assert_eq!(list.len(), 2, "both nodes stay");
    for claim in &list {
        assert!(
            claim.metadata.deletion_timestamp.is_none()
                && !claim.annotations().contains_key("windlass.dev/disruption"),
            "{} is neither deleted nor being replaced",
            claim.name_any()
        );
    }

    // The guard goes: its drifted node follows; the Job's stays.
    pods.delete("guarded", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_until(
        "the unguarded drifted node to go",
        Duration::from_secs(60),
        || async {
            let list = pool_claims(claims, name).await;
            list.iter()
                .find(|c| c.name_any() == guarded_claim)
                .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    let left = pool_claims(claims, name).await;
    assert!(
        left.iter()
            .any(|c| c.name_any() != guarded_claim && c.metadata.deletion_timestamp.is_none()),
        "the ScaledJob's node stays while its Job runs"
    );
    scaled_jobs
        .delete("report", &DeleteParams::default())
        .await
        .unwrap();
    run.finish().await;
}

#[tokio::test]
async fn an_underused_scaled_job_node_is_cordoned_and_goes_once_its_job_is_done() {
    let run = PoolRun::start(
        "cordon",
        json!({"disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                              "consolidateAfter": "10s", "budgets": [{"nodes": "100%"}]}}),
    )
    .await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let queue = env.queue("cordon").await;
    env.send_messages(&queue, 1).await;
    let scaled_jobs = holding_scaled_job(env, ns, name, &queue).await;
    let claim = initialized_claims(claims, name, 1).await.remove(0);
    let node_name = claim.status.as_ref().unwrap().node_name.clone().unwrap();
    let job_pod = wait_until("the Job's pod to run", Duration::from_secs(90), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let cordoned = wait_until(
        "the node to be cordoned for consolidation",
        Duration::from_secs(180),
        || async {
            let claim = claims.get(&claim.name_any()).await.ok()?;
            (claim
                .annotations()
                .get("windlass.dev/disruption")
                .map(String::as_str)
                == Some("underutilized"))
            .then_some(claim)
        },
    )
    .await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    let tainted = |node: &k8s_openapi::api::core::v1::Node| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == "windlass.dev/disrupted"))
    };
    wait_until("the taint on the node", Duration::from_secs(10), || async {
        tainted(&nodes.get(&node_name).await.ok()?).then_some(())
    })
    .await;
    // Several passes later the Job still runs and the node stays, Disrupting says why.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let claim = claims.get(&cordoned.name_any()).await.unwrap();
    assert!(
        claim.metadata.deletion_timestamp.is_none(),
        "the node stays while its Job runs"
    );
    let disrupting = claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Disrupting"))
        .map(|c| c.message.clone());
    assert!(
        disrupting
            .as_deref()
            .is_some_and(|m| m.contains("ScaledJob")),
        "Disrupting says the node waits for its Jobs: {disrupting:?}"
    );
    let running = pods.get(&job_pod.name_any()).await.unwrap();
    assert!(
        running.metadata.deletion_timestamp.is_none()
            && running.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        "the Job's pod was not evicted"
    );

    // The Job ends (no more work is queued): the node goes.
    env.sqs()
        .purge_queue()
        .queue_url(&queue)
        .send()
        .await
        .unwrap();
    let annotations = json!({"metadata": {"annotations": {"windlass.dev/test-outcome": null}}});
    pods.patch(
        &job_pod.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&annotations),
    )
    .await
    .unwrap();
    wait_until(
        "the Job's pod to succeed",
        Duration::from_secs(30),
        || async {
            let pod = pods.get(&job_pod.name_any()).await.ok()?;
            (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
        },
    )
    .await;
    crate::provisioning::fixture::wait_claim_gone(claims, &claim.name_any()).await;
    crate::provisioning::fixture::assert_terminated(
        env,
        &crate::provisioning::fixture::claim_instance(claim.status.as_ref().unwrap()),
    )
    .await;
    scaled_jobs
        .delete("report", &DeleteParams::default())
        .await
        .unwrap();
    run.finish().await;
}
