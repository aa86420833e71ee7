//! The seed's ScaledJob half end to end: ten jobs submitted through the jobs API become Jobs,
//! their pods wait for nodes Windlass launches (joining after the registrar's boot delay), the
//! real example worker takes one message per pod, two messages fail their first two attempts
//! and then succeed, `GET /jobs/stats` counts exactly what the Jobs did, the queue ends empty,
//! and every launched instance is terminated once its node is empty.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use windlass::apis::scaled_job::ScaledJob;

use super::{PoolRun, Timeline, pool_claims};
use crate::invariants::JobOutcomes;
use crate::provisioning::fixture::{live_instances, tagged_instances};
use crate::support::{DATA_PROCESSOR_IMAGE, JOBS_TOKEN, data_processor, http_request, wait_until};

const JOBS: usize = 10;
/// Submissions whose payload fails the worker's first two attempts (`failTimes`).
const FAILING: [usize; 2] = [3, 7];

/// The example worker's ScaledJob, its pods on `pool`'s nodes taking messages from `queue`.
pub fn data_processor_job(pool: &str, queue: &str) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "data-processor"},
        "spec": {
            "pollingInterval": 1,
            "maxReplicaCount": JOBS,
            "jobTargetRef": {"backoffLimit": 2, "template": {
                // The registrar runs the worker binary for pods held like this.
                "metadata": {"annotations": {"windlass.dev/test-outcome": "run"}},
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
                    "nodeSelector": {"windlass.dev/nodepool": pool},
                    "containers": [{"name": "data-processor", "image": format!("{DATA_PROCESSOR_IMAGE}:1"),
                                    "env": [{"name": "QUEUE_URL", "value": queue}, {"name": "WAIT_SECONDS", "value": "5"}],
                                    "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
                }
            }},
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap()
}

fn stats(port: u16, namespace: &str) -> Option<Value> {
    let path = format!("/jobs/stats?namespace={namespace}&scaledJob=data-processor");
    let (status, body) = http_request(port, "GET", &path, Some(JOBS_TOKEN), b"")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

#[tokio::test]
async fn seed_jobs_run_on_launched_nodes_retry_twice_are_counted_and_every_instance_goes() {
    data_processor();
    let run = PoolRun::start(
        "seed-jobs",
        json!({"disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s"}}),
    )
    .await;
    let (env, ns, name) = (&run.env, run.ns(), &run.name);
    let port = run.windlass.jobs_port;
    let queue = env.queue("seed-jobs").await;
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &data_processor_job(name, &queue))
        .await
        .unwrap();
    wait_until(
        "the jobs API to answer",
        Duration::from_secs(30),
        || async { stats(port, ns) },
    )
    .await;

    let timeline = Timeline::start();
    for n in 0..JOBS {
        let payload = if FAILING.contains(&n) {
            json!({"n": n, "failTimes": 2})
        } else {
            json!({"n": n})
        };
        let body = json!({"scaledJob": "data-processor", "namespace": ns, "payload": payload});
        let (status, answer) = http_request(
            port,
            "POST",
            "/jobs",
            Some(JOBS_TOKEN),
            body.to_string().as_bytes(),
        )
        .expect("the jobs API answers");
        assert_eq!(status, 202, "{answer}");
    }
    timeline.mark(&format!(
        "{JOBS} jobs submitted ({} fail their first two attempts)",
        FAILING.len()
    ));
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    wait_until("a Job per submission", Duration::from_secs(30), || async {
        let list = jobs.list(&ListParams::default()).await.ok()?;
        (list.items.len() == JOBS).then_some(())
    })
    .await;
    timeline.mark(&format!("{JOBS} Jobs created"));
    let claims = wait_until(
        "NodeClaims for the pods",
        Duration::from_secs(60),
        || async {
            let list = pool_claims(&run.claims, name).await;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    timeline.mark(&format!("{} NodeClaim(s) created", claims.len()));
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        "a job pod bound to a launched node",
        Duration::from_secs(120),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                .then_some(())
        },
    )
    .await;
    timeline.mark("the first job pod runs on a launched node");

    // Which pod takes which message is SQS's choice: a failing message given back may go to
    // another Job's pod, so now and then one Job draws three failures, exhausts its
    // backoffLimit, and the ScaledJob starts another Job for the message it gave back. The
    // counts must equal what the Jobs really did, whichever way it went.
    let (settled, done, job_count) = wait_until(
        "every message done and every Job counted",
        Duration::from_secs(240),
        || async {
            if env.messages_on(&queue).await != 0 {
                return None;
            }
            let list = jobs.list(&ListParams::default()).await.ok()?;
            let done = JobOutcomes::of(&list.items).ok()?;
            let stats = stats(port, ns)?;
            (stats["succeeded"].as_i64()? + stats["failed"].as_i64()? == list.items.len() as i64)
                .then_some((stats, done, list.items.len()))
        },
    )
    .await;
    timeline.mark(&format!(
        "stats: {} succeeded, {} failed, {} retries; {job_count} Jobs, {} pod failures",
        settled["succeeded"], settled["failed"], settled["retries"], done.pod_failures
    ));
    assert_eq!(
        (
            settled["succeeded"].as_i64(),
            settled["failed"].as_i64(),
            settled["retries"].as_i64()
        ),
        (Some(done.succeeded), Some(done.failed), Some(done.retries)),
        "the stats count what the Jobs did: {done:?}"
    );
    assert_eq!(
        done.succeeded, JOBS as i64,
        "every message ends in exactly one success"
    );
    assert_eq!(
        done.pod_failures,
        2 * FAILING.len() as i64,
        "each failing message fails its first two attempts, and nothing else fails"
    );
    assert_eq!(
        job_count as i64,
        JOBS as i64 + done.failed,
        "one Job per message, and one more per message a failed Job gave back"
    );
    timeline.mark("queue empty");

    wait_until(
        "every NodeClaim to go",
        Duration::from_secs(150),
        || async {
            pool_claims(&run.claims, name)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let node_api: Api<Node> = Api::all(env.client.clone());
    let pool_nodes = ListParams::default().labels(&format!("windlass.dev/nodepool={name}"));
    wait_until(
        "the pool's Nodes to go",
        Duration::from_secs(30),
        || async {
            node_api
                .list(&pool_nodes)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let launched = tagged_instances(env, &run.windlass.cluster).await;
    assert!(launched >= 1, "the Jobs ran on launched instances");
    assert!(
        live_instances(env, &run.windlass.cluster).await.is_empty(),
        "no instance of this install is left running"
    );
    timeline.mark(&format!(
        "every NodeClaim and Node gone, all {launched} launched instances terminated"
    ));
    // The settled counts hold once the Jobs are gone from the nodes.
    assert_eq!(stats(port, ns).unwrap(), settled);
    run.finish().await;
}
