//! Command-line interface. Every flag has an environment fallback so the chart can set it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "windlass",
    version,
    about = "SQS-driven autoscaling and just-in-time EC2 nodes for Kubernetes"
)]
pub struct Cli {
    /// Log format; the level and filters come from RUST_LOG (default `info`).
    #[arg(long, global = true, env = "WINDLASS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster from KUBECONFIG or the in-cluster config.
    Run(Box<RunArgs>),
    /// Write the CustomResourceDefinitions generated from the Rust types.
    Crdgen(CrdgenArgs),
    /// Print the jobs API's OpenAPI document (committed as docs/openapi.json).
    Openapi,
    /// Print the NodeClaims Windlass would launch for pending pods, with instance types and
    /// $/hour, from YAML files alone: no cluster, no AWS.
    Simulate(SimulateArgs),
    /// Print a region's on-demand prices from the live AWS Price List, in the format of the
    /// bundled tables (src/aws/pricing/data/<region>.tsv); needs AWS credentials. With
    /// `--bundled`, print the table Windlass falls back to instead, offline.
    Prices(PricesArgs),
    /// A live view of every ScaledObject, ScaledJob and NodePool in the cluster from
    /// KUBECONFIG; `q` or Ctrl-C quits. When stdout is not a terminal it prints one table and
    /// exits.
    Top(TopArgs),
    /// Rewrite KEDA and Karpenter manifests (ScaledObject, ScaledJob, TriggerAuthentication,
    /// ClusterTriggerAuthentication, NodePool, Provisioner, EC2NodeClass, AWSNodeTemplate) as
    /// Windlass manifests on stdout; every dropped field is a warning on stderr.
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
pub struct PricesArgs {
    /// The region to price (the SDK's region, from AWS_REGION or the profile, if unset).
    #[arg(long, env = "WINDLASS_PRICES_REGION")]
    pub region: Option<String>,
    /// Print the bundled table of `--region` (us-east-1's for a region without one) instead of
    /// asking the Price List: what `windlass run` plans with when the Price List cannot answer.
    #[arg(long, env = "WINDLASS_PRICES_BUNDLED", requires = "region", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub bundled: bool,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// When stdout is not a terminal, keep printing: a new table whenever something changed
    /// (at most one a second) until interrupted.
    #[arg(long, env = "WINDLASS_TOP_WATCH")]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// YAML files to convert, `-` for stdin; repeat the flag for several files. Objects of other
    /// kinds pass through unchanged.
    #[arg(
        short = 'f',
        long = "filename",
        env = "WINDLASS_CONVERT_FILES",
        value_delimiter = ',',
        required = true
    )]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// YAML files with Pods, Deployments, Jobs, StatefulSets, ReplicaSets, DaemonSets and
    /// NodePools; repeat the flag for several files.
    #[arg(
        short = 'f',
        long = "filename",
        env = "WINDLASS_SIMULATE_FILES",
        value_delimiter = ',',
        required = true
    )]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address for Prometheus metrics (`/metrics`).
    #[arg(long, env = "WINDLASS_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Serve KEDA's metric families (`keda_scaler_metrics_value`, `keda_scaler_active`, …,
    /// with KEDA's names and labels) on `/metrics` beside Windlass's own, so dashboards and
    /// alerts written for KEDA keep working; `--keda-metrics=false` serves `windlass_*` only.
    #[arg(long, env = "WINDLASS_KEDA_METRICS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub keda_metrics: bool,

    /// Address for the liveness and readiness probes (`/healthz`, `/readyz`).
    #[arg(long, env = "WINDLASS_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,

    /// Handle ScaledObjects, ScaledJobs and JobSchedules in this namespace only, and provision
    /// only for its pending pods (all namespaces if unset), so several installs can share a
    /// cluster.
    #[arg(long, env = "WINDLASS_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// The SQS queue (URL or name) EventBridge delivers EC2 interruption events to: spot
    /// interruptions, scheduled changes and stopped instances drain their nodes ahead of the
    /// loss. Not watched when unset.
    #[arg(long, env = "WINDLASS_INTERRUPTION_QUEUE")]
    pub interruption_queue: Option<String>,

    /// Address for the jobs API (`POST /jobs`, `GET /jobs/stats`).
    #[arg(long, env = "WINDLASS_JOBS_ADDR", default_value = "0.0.0.0:8082")]
    pub jobs_addr: SocketAddr,

    /// A static bearer token the jobs API accepts, with full access (for local use). The API
    /// is served when this or `--jobs-kubernetes-auth` is set.
    #[arg(long, env = "WINDLASS_JOBS_TOKEN", hide_env_values = true)]
    pub jobs_token: Option<String>,

    /// Accept Kubernetes tokens (ServiceAccount tokens) on the jobs API, authenticated by a
    /// TokenReview; each request is authorized by a SubjectAccessReview in its namespace.
    #[arg(long, env = "WINDLASS_JOBS_KUBERNETES_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub jobs_kubernetes_auth: bool,

    /// PEM certificate chain (leaf first) the jobs API serves TLS with; needs `--jobs-tls-key`.
    #[arg(long, env = "WINDLASS_JOBS_TLS_CERT")]
    pub jobs_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--jobs-tls-cert`.
    #[arg(long, env = "WINDLASS_JOBS_TLS_KEY")]
    pub jobs_tls_key: Option<std::path::PathBuf>,

    /// Serve the jobs API over plain HTTP; without it, the API needs `--jobs-tls-cert`.
    #[arg(long, env = "WINDLASS_JOBS_PLAIN_HTTP", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub jobs_plain_http: bool,

    /// Jobs API requests per second each caller may make, sustained.
    #[arg(long, env = "WINDLASS_JOBS_RATE_LIMIT", default_value_t = 20.0, value_parser = positive_rate)]
    pub jobs_rate_limit: f64,

    /// Jobs API requests each caller may make at once after a lull.
    #[arg(long, env = "WINDLASS_JOBS_RATE_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs_rate_burst: u32,

    /// The cluster's name: tags the instances Windlass launches and labels its NodeClaims; an
    /// install handles only NodeClaims labelled with its own name.
    #[arg(long, env = "WINDLASS_CLUSTER_NAME", default_value = "windlass")]
    pub cluster_name: String,

    /// The API server URL nodes join; from EKS DescribeCluster for `--cluster-name` if unset.
    #[arg(long, env = "WINDLASS_CLUSTER_ENDPOINT")]
    pub cluster_endpoint: Option<String>,

    /// The cluster's CA bundle, base64-encoded PEM, for nodes to trust the API server; from EKS
    /// DescribeCluster if unset.
    #[arg(long, env = "WINDLASS_CLUSTER_CA_BUNDLE")]
    pub cluster_ca_bundle: Option<String>,

    /// The cluster's Service CIDR, written into the nodes' bootstrap; from EKS DescribeCluster
    /// if unset.
    #[arg(long, env = "WINDLASS_CLUSTER_SERVICE_CIDR")]
    pub cluster_service_cidr: Option<String>,

    /// A batch of pending pods is planned once no new pod arrived for this long.
    #[arg(long, env = "WINDLASS_BATCH_IDLE_DURATION", default_value = "1s", value_parser = duration)]
    pub batch_idle_duration: std::time::Duration,

    /// A batch of pending pods is planned at the latest this long after it opened.
    #[arg(long, env = "WINDLASS_BATCH_MAX_DURATION", default_value = "10s", value_parser = duration)]
    pub batch_max_duration: std::time::Duration,

    /// The namespace Windlass runs in; ClusterTriggerAuthentications read Secrets from it.
    #[arg(long, env = "WINDLASS_NAMESPACE", default_value = "windlass")]
    pub namespace: String,

    /// Run the writers only while holding the leader Lease, so replicas of one install never
    /// act twice; `--leader-elect=false` for a single process.
    #[arg(long, env = "WINDLASS_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// The leader Lease's name; installs that share a namespace need different names.
    #[arg(
        long,
        env = "WINDLASS_LEADER_ELECT_LEASE_NAME",
        default_value = "windlass-leader-election"
    )]
    pub leader_elect_lease_name: String,

    /// The leader Lease's namespace (`--namespace` if unset).
    #[arg(long, env = "WINDLASS_LEADER_ELECT_LEASE_NAMESPACE")]
    pub leader_elect_lease_namespace: Option<String>,

    /// How long a leader keeps the Lease without renewing it: a standby takes over at most
    /// this long after the leader dies. The leader renews a third of it before expiry.
    #[arg(long, env = "WINDLASS_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub leader_elect_lease_duration: std::time::Duration,

    /// The share of an instance type's listed memory the simulation expects its VM to keep
    /// from the kubelet (0.075 is 7.5%, Karpenter's default); raise it if launched Nodes
    /// report less memory than planned.
    #[arg(long, env = "WINDLASS_VM_MEMORY_OVERHEAD_PERCENT", default_value = "0.075", value_parser = share)]
    pub vm_memory_overhead_percent: f64,

    /// The cluster has no route to the AWS Price List (an isolated VPC): on-demand prices come
    /// from the bundled tables only, and the Price List is never asked.
    #[arg(long, env = "WINDLASS_ISOLATED_VPC", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub isolated_vpc: bool,

    /// Consolidation may replace spot nodes by cheaper spot ones (Karpenter's
    /// `SpotToSpotConsolidation` feature gate): a single spot node only when at least 15 spot
    /// types are cheaper. Off, consolidation deletes spot nodes but never replaces them by spot.
    #[arg(long, env = "WINDLASS_SPOT_TO_SPOT_CONSOLIDATION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub spot_to_spot_consolidation: bool,
}

#[derive(Debug, Args)]
pub struct CrdgenArgs {
    /// Directory to write one `<plural>.yaml` per kind into; all of them go to stdout if unset.
    #[arg(long, env = "WINDLASS_CRDGEN_OUT")]
    pub out: Option<PathBuf>,
}

/// A duration such as `1s`, `500ms` or `2m`.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 1s or 500ms: {e}"))?;
    std::time::Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

/// A rate above 0 (requests per second).
fn positive_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number like 20 or 0.5"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err(format!("{text:?} is not above 0"))
    }
}

/// A share from 0 up to (not including) 1.
fn share(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number like 0.075"))?;
    if (0.0..1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!(
            "{text} is not a share from 0 up to 1 (0.075 is 7.5%)"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_fallback() {
        let command = Cli::command();
        let mut checked = 0;
        for sub in std::iter::once(&command).chain(command.get_subcommands()) {
            for arg in sub
                .get_arguments()
                .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
            {
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("--{} has no env fallback", arg.get_id()));
                assert!(
                    env.to_string_lossy().starts_with("WINDLASS_"),
                    "--{}",
                    arg.get_id()
                );
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} flags found");
    }

    #[test]
    fn run_defaults_to_standard_ports() {
        let cli = Cli::try_parse_from(["windlass", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert_eq!(args.metrics_addr.port(), 8080);
        assert_eq!(args.batch_idle_duration, std::time::Duration::from_secs(1));
        assert_eq!(args.batch_max_duration, std::time::Duration::from_secs(10));
        assert_eq!(args.health_addr.port(), 8081);
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(args.leader_elect);
        assert_eq!(args.vm_memory_overhead_percent, 0.075);
        assert_eq!(args.leader_elect_lease_name, "windlass-leader-election");
        assert_eq!(
            args.leader_elect_lease_duration,
            std::time::Duration::from_secs(15)
        );
    }

    #[test]
    fn spot_to_spot_consolidation_is_off_unless_asked_for() {
        let spot_to_spot = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("expected run")
            };
            args.spot_to_spot_consolidation
        };
        assert!(!spot_to_spot(&["windlass", "run"]));
        assert!(spot_to_spot(&[
            "windlass",
            "run",
            "--spot-to-spot-consolidation"
        ]));
        assert!(!spot_to_spot(&[
            "windlass",
            "run",
            "--spot-to-spot-consolidation=false"
        ]));
    }

    #[test]
    fn live_pricing_is_on_unless_the_vpc_is_isolated() {
        let isolated = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("expected run")
            };
            args.isolated_vpc
        };
        assert!(!isolated(&["windlass", "run"]));
        assert!(isolated(&["windlass", "run", "--isolated-vpc"]));
        assert!(isolated(&["windlass", "run", "--isolated-vpc=true"]));
        assert!(!isolated(&["windlass", "run", "--isolated-vpc=false"]));
    }

    #[test]
    fn prices_takes_a_region_or_the_sdks() {
        let region = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Prices(args) => args.region,
            _ => panic!("expected prices"),
        };
        assert_eq!(
            region(&["windlass", "prices", "--region", "eu-west-1"]).as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region(&["windlass", "prices"]), None);
    }

    #[test]
    fn bundled_prices_need_a_region() {
        let bundled = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Prices(args)) => Ok(args.bundled),
            Ok(_) => panic!("expected prices"),
            Err(error) => Err(error.kind()),
        };
        assert_eq!(
            bundled(&["windlass", "prices", "--bundled", "--region", "us-east-1"]),
            Ok(true)
        );
        assert_eq!(
            bundled(&["windlass", "prices", "--region", "us-east-1"]),
            Ok(false)
        );
        assert_eq!(
            bundled(&["windlass", "prices", "--bundled"]),
            Err(clap::error::ErrorKind::MissingRequiredArgument)
        );
    }

    #[test]
    fn keda_metrics_are_served_unless_turned_off() {
        let keda_metrics = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Run(args) = cli.command else {
                panic!("expected run")
            };
            args.keda_metrics
        };
        assert!(keda_metrics(&["windlass", "run"]));
        assert!(keda_metrics(&["windlass", "run", "--keda-metrics"]));
        assert!(!keda_metrics(&["windlass", "run", "--keda-metrics=false"]));
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        let cli = Cli::try_parse_from(["windlass", "run", "--leader-elect=false"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        assert!(!args.leader_elect);
    }

    #[test]
    fn vm_memory_overhead_is_a_share_below_one() {
        let parse = |value: &str| {
            Cli::try_parse_from(["windlass", "run", "--vm-memory-overhead-percent", value])
                .map(|cli| match cli.command {
                    Command::Run(args) => args.vm_memory_overhead_percent,
                    _ => unreachable!(),
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("0.1"), Ok(0.1));
        assert_eq!(parse("0"), Ok(0.0));
        for bad in ["1", "7.5", "lots"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("vm-memory-overhead-percent"), "{error}");
        }
    }
}
