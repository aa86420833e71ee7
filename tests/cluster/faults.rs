//! The promises Windlass keeps while AWS fails its calls (issue 19): the local stack's moto
//! throttles, fails, delays, drops or loses the answers of the calls of one Windlass process
//! (hack/stack/faults.py),
//! and each test ends with the invariants. CreateFleet failing (its answers lost, throttled,
//! failed, dropped) while a limited pool scales out launches every pod's node once and never
//! goes over the limit; GetQueueAttributes failing under a scaled-out ScaledObject keeps its
//! replicas until the queue can be read again, and one that never answers is cut off;
//! TerminateInstances failing while empty nodes are given back still terminates each instance
//! and leaves none without a NodeClaim.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::scaled_object::ScaledObject;

use crate::disruption::{PoolRun, initialized_claims, pool_claims, wait_pods_running};
use crate::invariants::LimitWatch;
use crate::provisioning::fixture::{
    assert_terminated, claim_instance, delete_claims, delete_pods, pending_pods, wait_node_gone,
};
use crate::scaled_object::{
    clean_up, deployment, replicas, scaled_object, wait_for_condition, wait_for_replicas,
};
use crate::support::{
    TestEnv, TestNamespace, Windlass, install_crds, skipped_without_moto, start_windlass_with_env,
    test_node, unique, wait_until,
};

/// What the SQS tests need that only the stack's moto has: LocalStack serves SQS itself, so
/// the fault hook, which it loads into the moto it serves EC2 from, never sees a queue call.
const SQS_FAULTS: &str =
    "faults on SQS calls (hack/stack/moto_server.py change 5): LocalStack's SQS is not moto's";

/// A fault one rule injects (hack/stack/faults.py).
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// The service's throttling error (EC2: RequestLimitExceeded, 503).
    Throttle,
    /// An internal error, HTTP 500.
    Error500,
    /// Served normally, this late.
    Slow(Duration),
    /// The connection closed without an answer; the call not served.
    Drop,
    /// The call served, then the connection closed without the answer.
    Lost,
}

impl Fault {
    fn word(self) -> String {
        match self {
            Self::Throttle => "throttle".into(),
            Self::Error500 => "error500".into(),
            Self::Slow(delay) => format!("slow{}", delay.as_millis()),
            Self::Drop => "drop".into(),
            Self::Lost => "lost".into(),
        }
    }
}

/// The AWS faults of one client: the process started with [`AwsFaults::env`], whose SDK then
/// names itself `app/<id>` to the stack's moto. Its rules live in the SSM parameter
/// `/windlass-test/faults/<id>`, what was injected in `/windlass-test/faults-injected/<id>`.
pub struct AwsFaults {
    ssm: aws_sdk_ssm::Client,
    app_id: String,
}

impl AwsFaults {
    pub fn new(env: &TestEnv) -> Self {
        Self {
            ssm: aws_sdk_ssm::Client::new(&env.aws),
            app_id: unique("faults"),
        }
    }

    /// The environment that makes a process this client.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("AWS_SDK_UA_APP_ID", self.app_id.as_str())]
    }

    /// Replaces the client's rules, tried in order: each fails the next `count` calls of the
    /// operation (`*` for any), or every one if `count` is None. The counts start afresh.
    pub async fn set(&self, rules: &[(&str, Fault, Option<u32>)]) {
        let text: Vec<String> = rules
            .iter()
            .map(|(operation, fault, count)| match count {
                Some(count) => format!("{operation}={}*{count}", fault.word()),
                None => format!("{operation}={}", fault.word()),
            })
            .collect();
        self.ssm
            .put_parameter()
            .name(format!("/windlass-test/faults/{}", self.app_id))
            .value(text.join(","))
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    /// No more faults for this client.
    pub async fn clear(&self) {
        let deleted = self
            .ssm
            .delete_parameter()
            .name(format!("/windlass-test/faults/{}", self.app_id))
            .send()
            .await;
        if let Err(error) = deleted {
            let gone = error
                .as_service_error()
                .is_some_and(|e| e.is_parameter_not_found());
            assert!(gone, "clearing the faults: {error:?}");
        }
    }

    /// How many calls of `operation` got `fault` so far.
    pub async fn injected(&self, operation: &str, fault: Fault) -> u32 {
        let read = self
            .ssm
            .get_parameter()
            .name(format!("/windlass-test/faults-injected/{}", self.app_id))
            .send()
            .await;
        let output = match read {
            Ok(output) => output,
            // Nothing injected yet.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                return 0;
            }
            Err(error) => panic!("reading the injected faults: {error:?}"),
        };
        let key = format!("{operation}={}*", fault.word());
        let value = output.parameter().and_then(|p| p.value()).unwrap_or("");
        value
            .split(',')
            .find_map(|entry| entry.strip_prefix(&key)?.parse().ok())
            .unwrap_or(0)
    }
}

/// A ScaledObject `worker` on a queue of its own, one replica per two messages, polled by a
/// Windlass whose AWS calls [`AwsFaults`] can fail; started once the object is Ready. No
/// fallback: a trigger that cannot be read leaves the replicas where they are.
struct QueueFaultRun {
    env: TestEnv,
    namespace: TestNamespace,
    node: String,
    queue: String,
    objects: Api<ScaledObject>,
    faults: AwsFaults,
    _windlass: Windlass,
}

impl QueueFaultRun {
    async fn start(prefix: &str) -> Self {
        let env = TestEnv::connect().await;
        install_crds(&env.client).await;
        let namespace = TestNamespace::create(&env.client, prefix).await;
        let ns = namespace.name.as_str();
        let node = test_node(&env.client, &format!("kwok-{prefix}")).await;
        deployment(&env.client, ns, "worker", &node, 0).await;
        let queue = env.queue(prefix).await;
        let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), ns);
        objects
            .create(
                &PostParams::default(),
                &scaled_object("worker", "worker", &queue, json!({})),
            )
            .await
            .unwrap();
        let faults = AwsFaults::new(&env);
        let windlass = start_windlass_with_env(ns, &faults.env());
        wait_for_condition(&objects, "worker", "Ready", "True").await;
        Self {
            env,
            namespace,
            node,
            queue,
            objects,
            faults,
            _windlass: windlass,
        }
    }

    fn ns(&self) -> &str {
        &self.namespace.name
    }

    async fn finish(self) {
        self.faults.clear().await;
        clean_up(&self.env, self.namespace, &self.objects, &self.node).await;
    }
}

/// A pool of m5.large nodes only (1.93 allocatable vCPU: one 1-vCPU pod each) limited to
/// `limit_cpu` vCPU.
pub fn m5_large_pool(limit_cpu: &str) -> serde_json::Value {
    json!({
        "limits": {"cpu": limit_cpu},
        "template": {"spec": {"requirements": [
            {"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]},
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.large"]}
        ]}}
    })
}

#[tokio::test]
async fn create_fleet_lost_throttled_failed_and_dropped_launches_each_node_once_within_the_limit() {
    let started = Instant::now();
    let env = TestEnv::connect().await;
    let faults = AwsFaults::new(&env);
    let run = PoolRun::start_with_env("fault-launch", m5_large_pool("6"), &[], &faults.env()).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    // Ten CreateFleet calls fail before one is answered, more than the SDK's three attempts
    // per call absorb. The first three launch their instance and lose the answer: a retry
    // with the same ClientToken gets that instance back (the stack's moto answers it as EC2
    // does), and a launch given up on finds it tagged with its NodeClaim's name.
    // DescribeInstances, which a launch reads before and after CreateFleet, fails too.
    let rules = [
        ("CreateFleet", Fault::Lost, Some(3)),
        ("CreateFleet", Fault::Throttle, Some(3)),
        ("CreateFleet", Fault::Error500, Some(3)),
        ("CreateFleet", Fault::Drop, Some(1)),
        ("DescribeInstances", Fault::Error500, Some(4)),
    ];
    faults.set(&rules).await;
    let limits = LimitWatch::watch(claims, name, 6000, i64::MAX);
    let pods = pending_pods(env, ns, name, 3).await;

    wait_pods_running(&pods, 3).await;
    println!(
        "{:>5.1}s three pods Running",
        started.elapsed().as_secs_f64()
    );
    // A lost answer's instance joins as a Node and runs its pod while its NodeClaim's launch
    // still retries; once every NodeClaim names its instance, no launch is in flight.
    let launched = wait_until(
        "the NodeClaims to name their instances",
        Duration::from_secs(60),
        || async {
            let list = pool_claims(claims, name).await;
            let named = |c: &NodeClaim| c.status.as_ref().is_some_and(|s| s.provider_id.is_some());
            list.iter().all(named).then_some(list)
        },
    )
    .await;
    assert_eq!(launched.len(), 3, "one NodeClaim per pod");
    // Every NodeClaim's first launch makes the SDK's three attempts, since none of the first
    // ten CreateFleet calls is answered: the nine lost, throttled and failed ones are all
    // made, the dropped one only if a NodeClaim still had no instance after them.
    for fault in [Fault::Lost, Fault::Throttle, Fault::Error500] {
        assert_eq!(
            faults.injected("CreateFleet", fault).await,
            3,
            "CreateFleet {fault:?} injected"
        );
    }
    assert!(faults.injected("CreateFleet", Fault::Drop).await <= 1);
    // Later DescribeInstances calls (the orphan check's, say) take what is left.
    wait_until(
        "four failed DescribeInstances",
        Duration::from_secs(60),
        || async {
            (faults.injected("DescribeInstances", Fault::Error500).await == 4).then_some(())
        },
    )
    .await;
    faults.clear().await;
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    for counter in ["created", "launched"] {
        assert_eq!(
            run.windlass
                .metric(&format!("windlass_nodeclaims_{counter}_total{pool_label}")),
            Some(3.0),
            "NodeClaims {counter}"
        );
    }
    crate::invariants::assert_instances_match_claims(env, &run.windlass.cluster).await;
    limits.assert_never_over();

    delete_pods(&pods).await;
    delete_claims(claims, &format!("windlass.dev/nodepool={name}")).await;
    println!("{:>5.1}s cleaned up", started.elapsed().as_secs_f64());
    run.finish().await;
}

#[tokio::test]
async fn get_queue_attributes_throttled_and_failing_keeps_the_replicas_until_it_is_read_again() {
    if skipped_without_moto(SQS_FAULTS) {
        return;
    }
    let run = QueueFaultRun::start("fault-sqs").await;
    let (env, ns, queue, objects, faults) =
        (&run.env, run.ns(), &run.queue, &run.objects, &run.faults);
    env.send_messages(queue, 6).await;
    wait_for_replicas(&env.client, ns, "worker", 3, Duration::from_secs(30)).await;

    // Twelve failed reads: four polls' worth of the SDK's three attempts each. The queue is
    // emptied under them, so a poll that took a failed read for an empty queue would scale the
    // target to zero (the 5 s cooldown runs from the last poll that saw messages).
    let (throttled, failed) = (6, 6);
    faults
        .set(&[
            ("GetQueueAttributes", Fault::Throttle, Some(throttled)),
            ("GetQueueAttributes", Fault::Error500, Some(failed)),
        ])
        .await;
    let faulted = Instant::now();
    env.sqs()
        .purge_queue()
        .queue_url(queue)
        .send()
        .await
        .unwrap();
    let mut most_failures = 0;
    let mut ready_false = None;
    loop {
        // The replicas first: the injected count only grows, so replicas read below 3 before
        // a count short of all twelve were read below 3 while reads still failed.
        let now = replicas(&env.client, ns, "worker").await.unwrap();
        let injected = faults.injected("GetQueueAttributes", Fault::Throttle).await
            + faults.injected("GetQueueAttributes", Fault::Error500).await;
        let status = objects
            .get("worker")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let failures = status
            .health
            .get("queue")
            .map_or(0, |h| h.number_of_failures);
        most_failures = most_failures.max(failures);
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        if let Some(ready) = ready.filter(|c| c.status == "False") {
            ready_false.get_or_insert_with(|| format!("{}: {}", ready.reason, ready.message));
        }
        if injected < throttled + failed {
            assert_eq!(
                now, 3,
                "replicas changed after {injected} of the faulted reads"
            );
        } else if now == 0 {
            break;
        }
        assert!(
            faulted.elapsed() < Duration::from_secs(60),
            "still {now} replicas {:?} after the faults ({injected} injected)",
            faulted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "0 replicas {:?} after the purge; at most {most_failures} failed polls in a row; {ready_false:?}",
        faulted.elapsed()
    );
    assert!(
        most_failures >= 1,
        "the SDK's retries absorbed every fault: no poll failed"
    );
    let ready_false = ready_false.expect("Ready=False while the queue could not be read");
    assert!(
        ready_false.contains("RequestThrottled") || ready_false.contains("InternalFailure"),
        "{ready_false}"
    );
    run.finish().await;
}

#[tokio::test]
async fn a_queue_read_that_never_answers_is_cut_off_and_scaling_goes_on() {
    if skipped_without_moto(SQS_FAULTS) {
        return;
    }
    let run = QueueFaultRun::start("fault-hang").await;
    let (env, ns, queue, faults) = (&run.env, run.ns(), &run.queue, &run.faults);

    // The next read is answered after two minutes: as good as never, for a poll every second.
    // Windlass gives up on it after 10 s (QUEUE_CALL_ATTEMPT_TIMEOUT) and reads again.
    let hang = Fault::Slow(Duration::from_secs(120));
    faults.set(&[("GetQueueAttributes", hang, Some(1))]).await;
    wait_until("a queue read to hang", Duration::from_secs(30), || async {
        (faults.injected("GetQueueAttributes", hang).await == 1).then_some(())
    })
    .await;
    let hung = Instant::now();
    env.send_messages(queue, 6).await;
    wait_for_replicas(&env.client, ns, "worker", 3, Duration::from_secs(40)).await;
    println!("3 replicas {:?} after the read hung", hung.elapsed());
    run.finish().await;
}

#[tokio::test]
async fn terminate_instances_throttled_and_failing_still_terminates_every_empty_node() {
    let started = Instant::now();
    let env = TestEnv::connect().await;
    let faults = AwsFaults::new(&env);
    let mut spec = m5_large_pool("100");
    spec["disruption"] = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5s",
                                "budgets": [{"nodes": "100%"}]});
    let run = PoolRun::start_with_env("fault-empty", spec, &[], &faults.env()).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let pods = pending_pods(env, ns, name, 2).await;
    let launched = initialized_claims(claims, name, 2).await;
    wait_pods_running(&pods, 2).await;
    println!(
        "{:>5.1}s two nodes run a pod each",
        started.elapsed().as_secs_f64()
    );
    let instances: Vec<String> = launched
        .iter()
        .map(|claim| claim_instance(claim.status.as_ref().unwrap()))
        .collect();
    let nodes: Vec<String> = launched
        .iter()
        .map(|claim| claim.status.as_ref().unwrap().node_name.clone().unwrap())
        .collect();

    let rules = [
        ("TerminateInstances", Fault::Throttle, Some(4)),
        ("TerminateInstances", Fault::Error500, Some(3)),
    ];
    faults.set(&rules).await;
    delete_pods(&pods).await;
    wait_until(
        "the empty NodeClaims to go",
        Duration::from_secs(120),
        || async { pool_claims(claims, name).await.is_empty().then_some(()) },
    )
    .await;
    println!(
        "{:>5.1}s both NodeClaims gone",
        started.elapsed().as_secs_f64()
    );
    for (operation, fault, count) in rules {
        assert_eq!(
            faults.injected(operation, fault).await,
            count.unwrap(),
            "{operation} {fault:?} injected"
        );
    }
    faults.clear().await;
    let node_api: Api<Node> = Api::all(env.client.clone());
    for (instance, node) in instances.iter().zip(&nodes) {
        assert_terminated(env, instance).await;
        wait_node_gone(&node_api, node).await;
    }
    run.finish().await;
}
