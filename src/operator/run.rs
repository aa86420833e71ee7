//! `windlass run`: connect to the cluster, run the controllers, serve probes and metrics, stop
//! cleanly on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::events::Recorder;
use axum::Router;
use kube::runtime::events::Reporter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::leader::{self, Leadership, LeaseConfig};
use super::server::{Readiness, health_router, metrics_router};
use crate::aws::cluster::{ClusterFlags, ClusterSource};
use crate::aws::interruption::{self, Interruptions};
use crate::aws::launch_templates;
use crate::aws::nodeclass::controller::{self as node_classes, NodeClasses};
use crate::aws::pricing::{OnDemandPrices, PriceList};
use crate::aws::{Aws, AwsCloud};
use crate::cli::RunArgs;
use crate::disruption::{self, Disruption};
use crate::jobs;
use crate::metrics::Metrics;
use crate::nodeclaim::{self as node_claims, NodeClaims};
use crate::nodepool::{self as node_pools, NodePools};
use crate::provisioning::provisioner::{self, PoolReports, Provisioner};
use crate::scale_outs::ScaleOuts;
use crate::scaling::auth_users::{AuthUsers, Changes};
use crate::scaling::queue_depths::QueueDepths;
use crate::scaling::scaled_job::store::ScaledJobStore;
use crate::scaling::scalers::aws_sqs::SqsClients;
use crate::scaling::{Scaling, scaled_job, scaled_object, trigger_auths};
use crate::state::ClusterState;
use crate::{Error, Result};

/// How long in-flight reconciles may take to finish after SIGTERM, before the leader Lease is
/// released.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(args: RunArgs) -> Result<()> {
    for point in crate::failpoints::configure_from_env()? {
        warn!(%point, "failpoint set");
    }
    let (client, evictions, kubernetes_minor) = connect().await?;
    let metrics = Arc::new(Metrics::new(args.keda_metrics));
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();

    let health = serve(
        args.health_addr,
        health_router(readiness.clone()),
        shutdown.clone(),
    )
    .await?;
    let scrape = serve(
        args.metrics_addr,
        metrics_router(metrics.clone()),
        shutdown.clone(),
    )
    .await?;
    let aws = crate::aws::sdk_clients::with_attempt_timeout(
        &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        crate::aws::sdk_clients::ATTEMPT_TIMEOUT,
    );
    let reporter = Reporter {
        controller: "windlass".into(),
        instance: std::env::var("HOSTNAME").ok(),
    };
    let joins = Arc::new(ClusterSource::new(
        args.cluster_name.clone(),
        ClusterFlags {
            endpoint: args.cluster_endpoint.clone(),
            ca_bundle: args.cluster_ca_bundle.clone(),
            service_cidr: args.cluster_service_cidr.clone(),
        },
        crate::aws::sdk_clients::eks(&aws),
        client.clone(),
    ));
    let region = aws.region().map(ToString::to_string).unwrap_or_default();
    let prices = Arc::new(OnDemandPrices::new(&region));
    let price_list = if args.isolated_vpc {
        info!("--isolated-vpc: on-demand prices come from the bundled tables only");
        None
    } else {
        PriceList::new(&aws, &region).or_else(|| {
            info!(region, "the AWS Price List does not serve this region's partition: on-demand prices come from the bundled tables only");
            None
        })
    };
    let node_class_refresh = Arc::new(node_classes::Refresh::default());
    let cloud = Arc::new(AwsCloud::new(
        Aws::new(&aws).with_vm_memory_overhead(args.vm_memory_overhead_percent),
        joins.clone(),
        args.cluster_name.clone(),
        prices.clone(),
        metrics.clone(),
        node_class_refresh.clone(),
    ));
    let cluster_state = Arc::new(ClusterState::watch(
        &client,
        args.watch_namespace.as_deref(),
        &shutdown,
    ));
    let scaled_job_pods = cluster_state.scaled_job_pods();
    let (pool_reports, pool_reports_seen) = tokio::sync::watch::channel(PoolReports::new());
    let scale_outs = Arc::new(ScaleOuts::default());
    let provisioner = Arc::new(Provisioner {
        client: client.clone(),
        state: cluster_state.clone(),
        metrics: metrics.clone(),
        pool_reports,
        recorder: Recorder::new(client.clone(), reporter.clone()),
        cloud: cloud.clone(),
        cluster: args.cluster_name.clone(),
        batch_idle: args.batch_idle_duration,
        batch_max: args.batch_max_duration,
        scale_outs: scale_outs.clone(),
    });
    let disruption = Arc::new(Disruption {
        scale_outs: scale_outs.clone(),
        client: client.clone(),
        state: cluster_state.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        cloud: cloud.clone(),
        cluster: args.cluster_name.clone(),
        spot_to_spot_consolidation: args.spot_to_spot_consolidation,
    });
    let interruptions = args.interruption_queue.map(|queue| {
        Arc::new(Interruptions {
            client: client.clone(),
            sqs: crate::aws::sdk_clients::sqs(&aws),
            queue,
            state: cluster_state.clone(),
            cloud: cloud.clone(),
            recorder: Recorder::new(client.clone(), reporter.clone()),
            metrics: metrics.clone(),
            cluster: args.cluster_name.clone(),
        })
    });
    let node_claims = Arc::new(NodeClaims {
        client: client.clone(),
        evictions,
        state: cluster_state,
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        cloud,
        cluster: args.cluster_name.clone(),
        pods_seen: Default::default(),
        instances: Default::default(),
    });
    let node_classes = Arc::new(NodeClasses {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter.clone()),
        aws: Aws::new(&aws),
        kubernetes_minor,
        cluster: args.cluster_name.clone(),
        resolved: Default::default(),
        refresh: node_class_refresh,
    });
    let (auth_users, auth_changes) = AuthUsers::new();
    let scaled_job_store = ScaledJobStore::watch(
        &client,
        args.watch_namespace.as_deref(),
        scaled_job_pods,
        &shutdown,
    );
    let scaling = Arc::new(Scaling {
        client: client.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        watch_namespace: args.watch_namespace,
        controller_namespace: args.namespace.clone(),
        sqs: SqsClients::new(aws.clone(), client.clone(), args.cluster_name.clone()),
        queue_depths: QueueDepths::default(),
        scaled_object_loops: Default::default(),
        scaled_job_loops: Default::default(),
        scaled_job_store,
        scale_outs: scale_outs.clone(),
        auth_users,
    });
    let authentication = jobs::auth::Authentication {
        static_token: args.jobs_token.filter(|token| !token.is_empty()),
        kubernetes: args.jobs_kubernetes_auth.then(|| {
            Arc::new(jobs::auth::CachedAuthority::new(
                jobs::auth::KubernetesAuthority {
                    client: client.clone(),
                },
            )) as Arc<dyn jobs::auth::Authority>
        }),
    };
    let jobs_api = if authentication.is_enabled() {
        let tls = match jobs::tls::transport(
            args.jobs_tls_cert.as_deref(),
            args.jobs_tls_key.as_deref(),
            args.jobs_plain_http,
        )? {
            jobs::tls::Transport::Tls { cert, key } => Some(jobs::tls::server_config(cert, key)?),
            jobs::tls::Transport::PlainHttp => None,
        };
        let router = jobs::api::router(
            scaling.clone(),
            jobs::api::Access {
                authentication,
                rate_limit: jobs::rate_limit::RateLimit {
                    per_second: args.jobs_rate_limit,
                    burst: args.jobs_rate_burst,
                },
            },
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Stops with the others on shutdown; nothing waits on it.
        drop(serve_jobs(args.jobs_addr, router, tls, shutdown.clone()).await?);
        format!("{scheme}://{}", args.jobs_addr)
    } else {
        warn!(
            "the jobs API is not served: set WINDLASS_JOBS_TOKEN (or --jobs-token) or WINDLASS_JOBS_KUBERNETES_AUTH=true to enable it"
        );
        "off".to_owned()
    };
    let writers = Writers {
        auth_changes,
        node_pools: Arc::new(NodePools {
            client: client.clone(),
            pool_reports: pool_reports_seen,
        }),
        launch_templates: (
            Aws::new(&aws),
            joins,
            client.clone(),
            args.cluster_name.clone(),
        ),
        scaling,
        node_classes,
        node_claims,
        disruption,
        interruptions,
        provisioner,
        prices: price_list.map(|price_list| (prices, price_list)),
    };
    readiness.set_ready(true);
    info!(health = %args.health_addr, metrics = %args.metrics_addr, jobs = %jobs_api, "windlass is serving");

    let signal = tokio::spawn(wait_for_shutdown_signal());
    let served = tokio::spawn(health_and_metrics(health, scrape));
    let stop = async {
        tokio::select! {
            received = signal => {
                received.expect("signal task never panics")?;
                info!("shutdown signal received, stopping");
                Ok(())
            }
            served = served => served.expect("the servers never panic"),
        }
    };
    tokio::pin!(stop);

    // Only the leader writes; a standby serves probes, metrics and the jobs API meanwhile.
    let leadership = if args.leader_elect {
        let lease = LeaseConfig {
            name: args.leader_elect_lease_name,
            namespace: args.leader_elect_lease_namespace.unwrap_or(args.namespace),
            duration: args.leader_elect_lease_duration,
        };
        tokio::select! {
            acquired = leader::acquire(client.clone(), lease, &shutdown) => match acquired? {
                Some(leadership) => Some(leadership),
                None => return Ok(()),
            },
            stopped = &mut stop => {
                shutdown.cancel();
                return stopped;
            }
        }
    } else {
        None
    };
    metrics.leader.set(1);
    let writers = writers.start(&shutdown);
    info!("windlass is running its controllers");

    let lost = leadership
        .as_ref()
        .map(|l| l.lost.clone())
        .unwrap_or_default();
    let stopped = tokio::select! {
        stopped = &mut stop => stopped,
        _ = lost.cancelled() => {
            // Another replica may be acting already: stop at once, without draining.
            shutdown.cancel();
            return Err(Error::LeadershipLost {
                lease: leadership.as_ref().map(Leadership::lease).unwrap_or_default(),
            });
        }
    };
    readiness.set_ready(false);
    shutdown.cancel();
    writers.stop().await;
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    stopped
}

/// Everything that writes to the cluster or AWS, built and waiting for leadership.
struct Writers {
    scaling: Arc<Scaling>,
    /// Wakes the authentication controllers when their users change.
    auth_changes: Changes,
    node_classes: Arc<NodeClasses>,
    node_claims: Arc<NodeClaims<AwsCloud>>,
    node_pools: Arc<NodePools>,
    disruption: Arc<Disruption<AwsCloud>>,
    interruptions: Option<Arc<Interruptions>>,
    provisioner: Arc<Provisioner<AwsCloud>>,
    launch_templates: (Aws, Arc<ClusterSource>, kube::Client, String),
    /// The live Price List to keep the prices fresh from, unless it is not asked.
    prices: Option<(Arc<OnDemandPrices>, PriceList)>,
}

/// The writers that drain in-flight work on shutdown.
struct Running {
    scaled_objects: tokio::task::JoinHandle<()>,
    scaled_jobs: tokio::task::JoinHandle<()>,
    job_schedules: tokio::task::JoinHandle<()>,
    node_classes: tokio::task::JoinHandle<()>,
    node_claims: tokio::task::JoinHandle<()>,
}

impl Writers {
    fn start(self, shutdown: &CancellationToken) -> Running {
        let (aws, joins, client, cluster) = self.launch_templates;
        // Deletes only what no class uses; nothing to drain on shutdown.
        drop(tokio::spawn(launch_templates::run(
            aws,
            joins,
            client,
            cluster,
            shutdown.clone(),
        )));
        // Status only; nothing to drain on shutdown.
        drop(tokio::spawn(trigger_auths::run(
            self.scaling.clone(),
            self.auth_changes.namespaced,
            shutdown.clone(),
        )));
        drop(tokio::spawn(trigger_auths::run_cluster(
            self.scaling.clone(),
            self.auth_changes.cluster,
            shutdown.clone(),
        )));
        drop(tokio::spawn(node_pools::run(
            self.node_pools,
            shutdown.clone(),
        )));
        // Stops with the others on shutdown: a pass only deletes NodeClaims, which their
        // finalizers then drain and terminate.
        drop(tokio::spawn(disruption::run(
            self.disruption,
            shutdown.clone(),
        )));
        // Likewise: a message only deletes NodeClaims, and one not handled comes back.
        if let Some(interruptions) = self.interruptions {
            drop(tokio::spawn(interruption::run(
                interruptions,
                shutdown.clone(),
            )));
        }
        // Only reads; nothing to drain on shutdown.
        if let Some((prices, price_list)) = self.prices {
            drop(tokio::spawn(
                prices.keep_fresh(price_list, shutdown.clone()),
            ));
        }
        // Stops with the others on shutdown; it holds nothing that needs draining.
        drop(tokio::spawn(provisioner::run(
            self.provisioner,
            shutdown.clone(),
        )));
        Running {
            scaled_objects: tokio::spawn(scaled_object::run(
                self.scaling.clone(),
                shutdown.clone(),
            )),
            scaled_jobs: tokio::spawn(scaled_job::run(self.scaling.clone(), shutdown.clone())),
            job_schedules: tokio::spawn(jobs::schedule_controller::run(
                self.scaling,
                shutdown.clone(),
            )),
            node_classes: tokio::spawn(node_classes::run(self.node_classes, shutdown.clone())),
            node_claims: tokio::spawn(node_claims::run(self.node_claims, shutdown.clone())),
        }
    }
}

impl Running {
    /// kube's controller holds shutdown until its first list succeeds, which never happens
    /// while the CRDs are missing; in-flight work gets a bounded grace period instead.
    async fn stop(self) {
        let controllers = async {
            let (objects, jobs, schedules, classes, node_claims) = tokio::join!(
                self.scaled_objects,
                self.scaled_jobs,
                self.job_schedules,
                self.node_classes,
                self.node_claims
            );
            node_claims.expect("the NodeClaim controller never panics");
            objects.expect("the ScaledObject controller never panics");
            classes.expect("the EC2NodeClass controller never panics");
            jobs.expect("the ScaledJob controller never panics");
            schedules.expect("the JobSchedule controller never panics");
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, controllers)
            .await
            .is_err()
        {
            warn!("the controllers did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
        }
    }
}

/// Builds a client from KUBECONFIG or the in-cluster config and checks that the API server
/// answers; returns the client, one for evictions, and the server's Kubernetes minor version
/// (`1.36`). The eviction client does not retry a 429 itself: a PodDisruptionBudget's "not
/// now" goes back to the drain, which asks again on its next pass, instead of holding the
/// NodeClaim's reconcile in the client's backoff for minutes.
async fn connect() -> Result<(kube::Client, kube::Client, String)> {
    let config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
    let url = config.cluster_url.to_string();
    let mut eviction_config = config.clone();
    eviction_config.default_retry = false;
    let evictions = kube::Client::try_from(eviction_config).map_err(Error::KubeClient)?;
    let client = kube::Client::try_from(config).map_err(Error::KubeClient)?;
    let version =
        client
            .apiserver_version()
            .await
            .map_err(|source| Error::ApiServerUnreachable {
                url: url.clone(),
                source,
            })?;
    info!(%url, version = %version.git_version, "connected to the Kubernetes API server");
    let minor = format!(
        "{}.{}",
        version.major,
        version
            .minor
            .trim_end_matches(|c: char| !c.is_ascii_digit())
    );
    Ok((client, evictions, minor))
}

type Served = tokio::task::JoinHandle<Result<()>>;

/// Binds before returning so a taken port fails start-up instead of a background task.
async fn serve(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> Result<Served> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|source| Error::Serve { addr, source })
    }))
}

/// The jobs API, over TLS when given a configuration, with each request's remote address for
/// the rate limits. Binds before returning, as [`serve`].
async fn serve_jobs(
    addr: SocketAddr,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<Served> {
    use axum::serve::ListenerExt;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    Ok(match tls {
        Some(config) => {
            let listener = jobs::tls::TlsListener::new(listener, config)
                .map_err(|source| Error::Bind { addr, source })?
                .tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
                    .map_err(|source| Error::Serve { addr, source })
            })
        }
        None => tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|source| Error::Serve { addr, source })
        }),
    })
}

async fn health_and_metrics(health: Served, scrape: Served) -> Result<()> {
    let (health, scrape) = tokio::join!(health, scrape);
    health.expect("health server never panics")?;
    scrape.expect("metrics server never panics")
}

async fn wait_for_shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    Ok(())
}
