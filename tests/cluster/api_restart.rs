//! The API server restarting under Windlass (issue 19): Windlass talks to a spare
//! kube-apiserver of the stack's cluster (`hack/stack/stack.sh spare-apiserver`, on the same
//! etcd), which the test kills with SIGKILL — every watch cut, every request refused — and
//! starts again in the middle of a scale-out, while the rest of the suite keeps the stack's own
//! API server. Each test ends with the invariants: nodes launched once each within the pool's
//! limits, instances and NodeClaims one to one, no Job created twice for one message.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::scaled_job::ScaledJob;

use crate::disruption::{PoolRun, pool_claims, wait_pods_running};
use crate::faults::m5_large_pool;
use crate::invariants::{LimitWatch, assert_instances_match_claims};
use crate::provisioning::fixture::{delete_claims, delete_pods, pending_pods};
use crate::release::suite_release;
use crate::scaled_job::scaled_job;
use crate::support::{
    ChildProcess, TestEnv, TestNamespace, free_port, install_crds, skipped_without_own_stack,
    start_windlass_with_args_and_env, unique, wait_until,
};

/// How long the API server stays down each time: longer than a watch's reconnect backoff
/// starts at, shorter than the test's leader Lease grace (below).
const DOWN: Duration = Duration::from_secs(8);

/// The leader Lease outlives the outages: its holder renews a third of it before expiry and
/// stops leading if renewals fail that long (src/operator/leader.rs), which a restart of the
/// API server must not cause here. What a lost Lease does is the leader tests' subject.
pub const LEASE: [&str; 2] = ["--leader-elect-lease-duration", "300s"];

/// A second kube-apiserver of the stack's cluster on a port of its own, and a kubeconfig that
/// reaches it as the release's ServiceAccount.
pub struct SpareApiServer {
    port: u16,
    kubeconfig: PathBuf,
    log: PathBuf,
    process: Option<ChildProcess>,
}

impl SpareApiServer {
    pub async fn start() -> Self {
        let port = free_port();
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&suite_release().kubeconfig).unwrap()).unwrap();
        config["clusters"][0]["cluster"]["server"] = json!(format!("https://127.0.0.1:{port}"));
        let dir = std::env::temp_dir();
        let kubeconfig = dir.join(format!("windlass-spare-apiserver-{port}.kubeconfig"));
        std::fs::write(&kubeconfig, serde_json::to_vec(&config).unwrap()).unwrap();
        let mut spare = Self {
            port,
            kubeconfig,
            log: dir.join(format!("windlass-spare-apiserver-{port}.log")),
            process: None,
        };
        spare.up().await;
        spare
    }

    /// The environment that points a process at this server.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("KUBECONFIG", self.kubeconfig.to_str().unwrap())]
    }

    /// Starts the server and waits until it answers.
    async fn up(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/stack/stack.sh"))
            .args(["spare-apiserver", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the spare API server");
        self.process = Some(child.into());
        let options = KubeConfigOptions::default();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        // Serving the release's ServiceAccount, not just answering: until its RBAC caches
        // fill, a fresh API server forbids every request, and the test's next wait should not
        // start before that is over.
        let what = format!("the spare API server (log: {})", self.log.display());
        let claims: Api<NodeClaim> = Api::all(client);
        wait_until(&what, Duration::from_secs(120), || async {
            claims
                .list(&ListParams::default().limit(1))
                .await
                .ok()
                .map(drop)
        })
        .await;
    }

    /// SIGKILL: no connection is closed cleanly.
    fn kill(&mut self) {
        drop(self.process.take());
    }

    /// Down for [`DOWN`], then up again; how long it was unreachable.
    pub async fn restart(&mut self) -> Duration {
        let killed = Instant::now();
        self.kill();
        tokio::time::sleep(DOWN).await;
        self.up().await;
        killed.elapsed()
    }
}

#[tokio::test]
#[ignore = "found a bug (issue 19): a NodeClaim create whose answer the restart cut off, while the watches re-list, was created again once in three runs (4 NodeClaims for 3 pods); the provisioner must wait until its NodeClaim store is synced with the API before planning"]
async fn the_api_server_restarting_mid_scale_out_launches_each_node_once_within_the_limit() {
    if skipped_without_own_stack("a spare kube-apiserver on the stack's etcd") {
        return;
    }
    let started = Instant::now();
    let mut api = SpareApiServer::start().await;
    let run = PoolRun::start_with_env("api-restart", m5_large_pool("6"), &LEASE, &api.env()).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    let limits = LimitWatch::watch(claims, name, 6000, i64::MAX);
    let pods = pending_pods(env, ns, name, 3).await;

    // Down the moment the first NodeClaim is written: its launch, its registration and the
    // other pods' NodeClaims all fall around the restart.
    wait_until("a NodeClaim", Duration::from_secs(60), || async {
        (!pool_claims(claims, name).await.is_empty()).then_some(())
    })
    .await;
    let down = api.restart().await;
    println!(
        "{:>5.1}s the API server is back after {:.1} s down",
        started.elapsed().as_secs_f64(),
        down.as_secs_f64()
    );
    wait_pods_running(&pods, 3).await;
    println!(
        "{:>5.1}s three pods Running",
        started.elapsed().as_secs_f64()
    );
    // Once more with everything running: the watches Windlass resumes must not read the
    // restart as nodes gone or pods new.
    api.restart().await;
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
    // A create the restart cut off may have been written all the same: the provisioner then
    // counts it as failed (windlass_nodeclaims_created_total stays short) and finds the
    // NodeClaim in its watch once the API server is back. What must hold is the NodeClaims
    // that exist, a few polls later too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        pool_claims(claims, name).await.len(),
        3,
        "no NodeClaim more"
    );
    let pool_label = format!("{{nodepool=\"{name}\"}}");
    let counted = |counter: &str| {
        run.windlass
            .metric(&format!("windlass_nodeclaims_{counter}_total{pool_label}"))
            .unwrap_or(0.0)
    };
    println!(
        "NodeClaims counted as created {}, as launched {}",
        counted("created"),
        counted("launched")
    );
    assert_instances_match_claims(env, &run.windlass.cluster).await;
    limits.assert_never_over();

    delete_pods(&pods).await;
    delete_claims(claims, &format!("windlass.dev/nodepool={name}")).await;
    println!("{:>5.1}s cleaned up", started.elapsed().as_secs_f64());
    run.finish().await;
}

#[tokio::test]
async fn the_api_server_restarting_while_jobs_are_created_creates_one_job_per_message() {
    if skipped_without_own_stack("a spare kube-apiserver on the stack's etcd") {
        return;
    }
    const MESSAGES: usize = 12;
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "api-restart-jobs").await;
    let ns = namespace.name.as_str();
    let mut api = SpareApiServer::start().await;
    let _windlass = start_windlass_with_args_and_env(ns, &unique("cluster"), &LEASE, &api.env());
    let queue = env.queue("api-restart-jobs").await;
    let name = unique("api-restart-job");
    // The Jobs' pods wait behind a scheduling gate: every Job stays running, so each message
    // is one Job and no more.
    let pod = json!({"spec": {
        "restartPolicy": "Never",
        "schedulingGates": [{"name": "windlass.dev/held"}],
        "containers": [{"name": "worker", "image": "worker"}]
    }});
    let object: ScaledJob = scaled_job(&name, &queue, MESSAGES as i32, pod, (1, 1));
    Api::<ScaledJob>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), ns);
    let selector = format!("windlass.dev/scaled-job={name}");
    let count = || async {
        jobs.list(&ListParams::default().labels(&selector))
            .await
            .map_or(0, |list| list.items.len())
    };

    // Messages go on one a second; the API server goes down after the third Job.
    let send = async {
        for _ in 0..MESSAGES {
            env.send_messages(&queue, 1).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let restart = async {
        wait_until("three Jobs", Duration::from_secs(60), || async {
            (count().await >= 3).then_some(())
        })
        .await;
        api.restart().await
    };
    let ((), down) = tokio::join!(send, restart);
    println!("the API server was down {:.1} s", down.as_secs_f64());
    wait_until(
        &format!("{MESSAGES} Jobs"),
        Duration::from_secs(90),
        || async { (count().await >= MESSAGES).then_some(()) },
    )
    .await;
    // A few more polls: a Job created twice for one message would show now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(count().await, MESSAGES, "one Job per message");
    namespace.delete().await;
}
