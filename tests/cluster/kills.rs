//! The controller killed (SIGKILL, by its own failpoint: src/failpoints.rs) at each point where
//! a crash could break a promise, then started again as the same install without failpoints
//! (issue 19). After CreateFleet returned but before the NodeClaim recorded its instance, the
//! restart adopts that instance: one instance, one NodeClaim, the pool within its limit. After
//! a ScaledJob's Job was created but before it was counted, the restart counts it and creates
//! no second Job for its message. After a JobSchedule's tick was claimed but before its message
//! was sent, the restart sends it once. Mid-drain, the restart evicts the rest, terminates the
//! instance, and the Deployment's pods run elsewhere.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::job_schedule::JobSchedule;
use windlass::apis::scaled_job::ScaledJob;
use windlass::failpoints::{
    self, EVICTED_BEFORE_TERMINATED, JOB_CREATED_BEFORE_COUNTED, LAUNCHED_BEFORE_STATUS,
    TICK_CLAIMED_BEFORE_SENT,
};
use windlass::jobs::schedule_controller::message_id;

use crate::disruption::{
    PoolRun, Timeline, deployment_sized, initialized_claims, pool_claims, wait_pods_running,
};
use crate::invariants::{
    LimitWatch, assert_instances_match_claims, assert_job_counters_match,
    assert_one_message_per_tick,
};
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, delete_claims, delete_pods, describe_instance,
    live_instances, pending_pods, wait_claim_gone, wait_node_gone,
};
use crate::support::{
    DATA_PROCESSOR_IMAGE, TestEnv, TestNamespace, Windlass, data_processor, install_crds,
    start_windlass_with_args_and_env, unique, wait_until,
};

/// The environment that makes `windlass run` kill itself at `point`.
fn kill_at(point: &str) -> (&'static str, String) {
    (failpoints::ENV, format!("{point}={}", failpoints::KILL))
}

/// Waits until the process has died of SIGKILL, as the failpoint's action does it: not a
/// panic, not an exit.
async fn wait_killed(windlass: &mut Windlass, point: &str, timeout: Duration) {
    let status = wait_until(
        &format!("windlass to kill itself at {point}"),
        timeout,
        || {
            let status = windlass.process.try_wait();
            async move { status }
        },
    )
    .await;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "windlass ended with {status}, not SIGKILL at {point}"
    );
}

/// `windlass run` again as the install `cluster`, without failpoints. It leads once the killed
/// process's Lease has expired (the chart's 15 s).
fn restart(namespace: &str, cluster: &str) -> Windlass {
    start_windlass_with_args_and_env(namespace, cluster, &[], &[])
}

#[tokio::test]
async fn killed_after_create_fleet_before_the_status_write_the_restart_adopts_the_instance() {
    let timeline = Timeline::start();
    let (var, kill) = kill_at(LAUNCHED_BEFORE_STATUS);
    // m5.large only, and room for one: a second NodeClaim for the pod could not launch, and a
    // second instance would have no NodeClaim.
    let pool = json!({
        "limits": {"cpu": "2"},
        "template": {"spec": {"requirements": [
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large"]}
        ]}}
    });
    let mut run = PoolRun::start_with_env("kill-launch", pool, &[], &[(var, &kill)]).await;
    let (ns, name, cluster) = (
        run.ns().to_owned(),
        run.name.clone(),
        run.windlass.cluster.clone(),
    );
    let limits = LimitWatch::watch(&run.claims, &name, 2000, i64::MAX);
    let pods = pending_pods(&run.env, &ns, &name, 1).await;

    wait_killed(
        &mut run.windlass,
        LAUNCHED_BEFORE_STATUS,
        Duration::from_secs(120),
    )
    .await;
    timeline.mark("killed after CreateFleet returned");
    let claims = pool_claims(&run.claims, &name).await;
    assert_eq!(claims.len(), 1, "one NodeClaim for the pod");
    let claim = claims[0].name_any();
    assert!(
        claims[0]
            .status
            .as_ref()
            .is_none_or(|s| s.provider_id.is_none()),
        "the kill came before the status write"
    );
    let launched = live_instances(&run.env, &cluster).await;
    assert_eq!(launched.len(), 1, "CreateFleet launched one instance");
    timeline.mark(&format!(
        "NodeClaim {claim} names no instance; {} is running",
        launched[0]
    ));

    run.windlass = restart(&ns, &cluster);
    wait_pods_running(&pods, 1).await;
    timeline.mark("restarted; the pod is Running");
    let claims = pool_claims(&run.claims, &name).await;
    assert_eq!(
        claims.iter().map(|c| c.name_any()).collect::<Vec<_>>(),
        [claim],
        "the restart launched no other NodeClaim"
    );
    let status = claims[0].status.as_ref().expect("a launched status");
    assert_eq!(
        claim_instance(status),
        launched[0],
        "the NodeClaim adopted the instance the killed process launched"
    );
    assert_instances_match_claims(&run.env, &cluster).await;
    limits.assert_never_over();
    timeline.mark("one instance, one NodeClaim, never over the limit");

    delete_pods(&pods).await;
    delete_claims(&run.claims, &format!("windlass.dev/nodepool={name}")).await;
    run.finish().await;
    timeline.mark("cleaned up");
}

/// The example worker as a ScaledJob of up to `max` Jobs on `pool`'s nodes, keeping every Job.
fn worker_scaled_job(pool: &str, queue: &str, max: usize) -> ScaledJob {
    serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob",
        "metadata": {"name": "worker"},
        "spec": {
            "pollingInterval": 1,
            "maxReplicaCount": max,
            "successfulJobsHistoryLimit": 100,
            "failedJobsHistoryLimit": 100,
            "jobTargetRef": {"backoffLimit": 2, "template": {
                // The registrar runs the worker binary for pods held like this.
                "metadata": {"annotations": {"windlass.dev/test-outcome": "run"}},
                "spec": {
                    "restartPolicy": "Never",
                    "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
                    "nodeSelector": {"windlass.dev/nodepool": pool},
                    "containers": [{"name": "worker", "image": format!("{DATA_PROCESSOR_IMAGE}:1"),
                                    "env": [{"name": "QUEUE_URL", "value": queue}, {"name": "WAIT_SECONDS", "value": "2"}],
                                    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]
                }
            }},
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": queue, "queueLength": "1"}}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn killed_after_a_job_was_created_before_it_was_counted_the_restart_makes_no_second_job() {
    const MESSAGES: usize = 3;
    data_processor();
    let timeline = Timeline::start();
    let (var, kill) = kill_at(JOB_CREATED_BEFORE_COUNTED);
    let mut run = PoolRun::start_with_env(
        "kill-job",
        json!({"disruption": {"consolidateAfter": "Never"}}),
        &[],
        &[(var, &kill)],
    )
    .await;
    let (env, ns, name, cluster) = (
        &run.env,
        run.ns().to_owned(),
        run.name.clone(),
        run.windlass.cluster.clone(),
    );
    let queue = env.queue("kill-job").await;
    // On the queue before the ScaledJob exists: its first poll wants three Jobs.
    for n in 0..MESSAGES {
        let body = json!({"id": format!("kill-job-{n}"), "payload": {"n": n}});
        env.sqs()
            .send_message()
            .queue_url(&queue)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    Api::<ScaledJob>::namespaced(env.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &worker_scaled_job(&name, &queue, MESSAGES),
        )
        .await
        .unwrap();

    wait_killed(
        &mut run.windlass,
        JOB_CREATED_BEFORE_COUNTED,
        Duration::from_secs(60),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &ns);
    let before = jobs.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(before.len(), 1, "killed right after the first Job");
    timeline.mark(&format!(
        "killed after creating Job {}; {} messages on the queue",
        before[0].name_any(),
        env.messages_on(&queue).await
    ));

    run.windlass = restart(&ns, &cluster);
    wait_until(
        "the workers to take every message",
        Duration::from_secs(240),
        || async { (env.messages_on(&queue).await == 0).then_some(()) },
    )
    .await;
    timeline.mark("restarted; the queue is empty");
    let (done, after) =
        assert_job_counters_match(env, &ns, "worker", Duration::from_secs(60)).await;
    timeline.mark(&format!(
        "{} Jobs; counted {} succeeded, {} failed, {} retries",
        after.len(),
        done.succeeded,
        done.failed,
        done.retries
    ));
    assert_eq!(
        after.len(),
        MESSAGES,
        "one Job per message: none created twice"
    );
    assert!(
        after.iter().any(|j| j.name_any() == before[0].name_any()),
        "the Job created before the kill is one of them"
    );
    // Each run takes at most one message and deletes it only when it succeeds: three runs and
    // an empty queue mean each message was taken once, and none was lost.
    assert_eq!(
        (done.succeeded, done.failed, done.pod_failures),
        (MESSAGES as i64, 0, 0),
        "every Job took its message and succeeded"
    );

    Api::<ScaledJob>::namespaced(env.client.clone(), &ns)
        .delete("worker", &DeleteParams::default())
        .await
        .unwrap();
    delete_claims(&run.claims, &format!("windlass.dev/nodepool={name}")).await;
    run.finish().await;
    timeline.mark("cleaned up");
}

#[tokio::test]
async fn killed_after_a_tick_was_claimed_before_it_was_sent_the_restart_sends_it_once() {
    let timeline = Timeline::start();
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "kill-tick").await;
    let ns = namespace.name.clone();
    let queue = env.queue("kill-tick").await;
    // Its Jobs' pods fit no node: nothing consumes the messages.
    let nowhere = crate::scaled_job::pod("no-such-node", false);
    Api::<ScaledJob>::namespaced(env.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &crate::scaled_job::scaled_job("reports", &queue, 10, nowhere, (100, 100)),
        )
        .await
        .unwrap();
    let cluster = unique("cluster");
    let (var, kill) = kill_at(TICK_CLAIMED_BEFORE_SENT);
    let mut windlass = start_windlass_with_args_and_env(&ns, &cluster, &[], &[(var, &kill)]);
    let schedules: Api<JobSchedule> = Api::namespaced(env.client.clone(), &ns);
    let schedule: JobSchedule = serde_json::from_value(json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "JobSchedule",
        "metadata": {"name": "every-minute"},
        "spec": {"schedule": "* * * * *", "scaledJob": "reports", "payload": {"report": "minutely"}}
    }))
    .unwrap();
    let uid = schedules
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap()
        .uid()
        .unwrap();

    wait_killed(
        &mut windlass,
        TICK_CLAIMED_BEFORE_SENT,
        Duration::from_secs(90),
    )
    .await;
    let status = schedules.get("every-minute").await.unwrap().status.unwrap();
    let tick = status
        .pending_schedule_time
        .expect("the tick was claimed before the kill")
        .0;
    assert_eq!(status.last_schedule_time, None);
    assert_eq!(
        env.messages_on(&queue).await,
        0,
        "the kill came before the send"
    );
    timeline.mark(&format!("killed with tick {tick} claimed and not sent"));

    let _windlass = restart(&ns, &cluster);
    wait_until(
        "the restart to send the claimed tick",
        Duration::from_secs(90),
        || async {
            let status = schedules.get("every-minute").await.ok()?.status?;
            (status.last_schedule_time?.0 >= tick).then_some(())
        },
    )
    .await;
    timeline.mark("restarted; the tick is confirmed");
    // No later tick while the queue is read.
    schedules
        .patch(
            "every-minute",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let last = wait_until("no tick in flight", Duration::from_secs(30), || async {
        let status = schedules.get("every-minute").await.ok()?.status?;
        match status.pending_schedule_time {
            None => status.last_schedule_time.map(|t| t.0),
            Some(_) => None,
        }
    })
    .await;
    let ticks: Vec<Timestamp> = std::iter::successors(Some(tick), |t| {
        Some(*t + SignedDuration::from_secs(60)).filter(|next| *next <= last)
    })
    .collect();
    let bodies = assert_one_message_per_tick(&env, &queue, "every-minute", &ticks).await;
    let sent = bodies
        .iter()
        .find(|b| b["scheduledTime"] == tick.to_string())
        .expect("the tick's message");
    assert_eq!(
        sent["id"],
        message_id(&uid, tick),
        "the tick's own message id"
    );
    assert_eq!(sent["payload"], json!({"report": "minutely"}));
    timeline.mark(&format!(
        "one message for each of {} tick(s) from {tick}",
        ticks.len()
    ));
    namespace.delete().await;
    timeline.mark("cleaned up");
}

#[tokio::test]
async fn killed_mid_drain_the_restart_evicts_the_rest_and_the_pods_run_elsewhere() {
    let timeline = Timeline::start();
    let (var, kill) = kill_at(EVICTED_BEFORE_TERMINATED);
    let mut run = PoolRun::start_with_env(
        "kill-drain",
        json!({"limits": {"cpu": "16"}, "disruption": {"consolidateAfter": "Never"}}),
        &[],
        &[(var, &kill)],
    )
    .await;
    let (ns, name, cluster) = (
        run.ns().to_owned(),
        run.name.clone(),
        run.windlass.cluster.clone(),
    );
    let env = &run.env;
    let limits = LimitWatch::watch(&run.claims, &name, 16_000, i64::MAX);
    // Two small pods the provisioner puts on one node.
    let deployments =
        deployment_sized(env, &ns, &name, "worker", 2, ("250m", "256Mi"), json!({})).await;
    let claim = initialized_claims(&run.claims, &name, 1).await.remove(0);
    let status = claim.status.clone().unwrap();
    let node = status.node_name.clone().unwrap();
    let instance = claim_instance(&status);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns);
    wait_pods_running(&pods, 2).await;
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    assert_eq!(pods.list(&on_node).await.unwrap().items.len(), 2);
    timeline.mark(&format!("two pods on {node} ({instance})"));

    run.claims
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_killed(
        &mut run.windlass,
        EVICTED_BEFORE_TERMINATED,
        Duration::from_secs(60),
    )
    .await;
    let staying: Vec<String> = pods
        .list(&on_node)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    assert_eq!(staying.len(), 1, "one pod evicted, one left: {staying:?}");
    let nodes: Api<Node> = Api::all(env.client.clone());
    assert!(nodes.get_opt(&node).await.unwrap().is_some());
    let state = describe_instance(env, &instance).await;
    assert_eq!(
        state.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("running"),
        "the kill came before the termination"
    );
    timeline.mark(&format!(
        "killed mid-drain; {} still on the node",
        staying[0]
    ));

    run.windlass = restart(&ns, &cluster);
    wait_claim_gone(&run.claims, &claim.name_any()).await;
    wait_node_gone(&nodes, &node).await;
    assert_terminated(env, &instance).await;
    timeline.mark("restarted; the NodeClaim, its Node and its instance are gone");
    let elsewhere = wait_until(
        "both pods Running on another node",
        Duration::from_secs(120),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            let running: Vec<&Pod> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            let names: Vec<String> = running.iter().map(|p| p.name_any()).collect();
            (running.len() == 2
                && running
                    .iter()
                    .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(&node)))
            .then_some(names)
        },
    )
    .await;
    assert!(
        !elsewhere.contains(&staying[0]),
        "the pod left on the node was evicted too"
    );
    timeline.mark(&format!("{elsewhere:?} Running elsewhere"));
    assert_instances_match_claims(env, &cluster).await;
    limits.assert_never_over();

    deployments
        .delete("worker", &DeleteParams::default())
        .await
        .unwrap();
    delete_pods(&pods).await;
    delete_claims(&run.claims, &format!("windlass.dev/nodepool={name}")).await;
    run.finish().await;
    timeline.mark("cleaned up");
}
