//! Test support for the local stack, never started by `windlass run`: plays the node agent and
//! kubelet joining. For each running EC2 instance tagged for this cluster it reads the user data
//! back from EC2 and, once the instance has been up for the boot delay, creates the Node a
//! kubelet bootstrapped by it would register: only if the user data joins this cluster (its
//! name, API endpoint and CA), with the labels, taints, max pods and reservations it sets. It
//! deletes that Node when the instance is gone. kwok then keeps the Node Ready and runs its pods;
//! for the images `--run-image` names, the registrar runs the container's binary itself.

mod bootstrap;
mod containers;
mod node;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceType};
use clap::Parser;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};
use windlass::apis::labels::CLUSTER_LABEL;
use windlass::aws::instance_id;

use bootstrap::Bootstrap;
use containers::LocalImage;
use node::{Instance, REGISTERED_FOR_LABEL, Shape};
use windlass::aws::shape_of;

#[derive(Debug, Parser)]
#[command(
    name = "windlass-node-registrar",
    about = "Plays the kubelet joining for instances in the local stack"
)]
struct Args {
    /// Register instances tagged windlass.dev/cluster=<this>.
    #[arg(long, env = "WINDLASS_CLUSTER_NAME")]
    cluster_name: String,
    /// Seconds between an instance's launch and its Node appearing.
    #[arg(
        long,
        env = "WINDLASS_REGISTRAR_BOOT_DELAY_SECONDS",
        default_value_t = 2
    )]
    boot_delay_seconds: u64,
    /// The API server a bootstrap must name to join; any if unset.
    #[arg(long, env = "WINDLASS_CLUSTER_ENDPOINT")]
    cluster_endpoint: Option<String>,
    /// The CA bundle (base64 PEM) a bootstrap must carry to join; any if unset.
    #[arg(long, env = "WINDLASS_CLUSTER_CA_BUNDLE")]
    cluster_ca_bundle: Option<String>,
    /// Milliseconds between passes.
    #[arg(
        long,
        env = "WINDLASS_REGISTRAR_INTERVAL_MILLIS",
        default_value_t = 500
    )]
    interval_millis: u64,
    /// The share of an instance type's listed memory its VM keeps from the kubelet.
    #[arg(
        long,
        env = "WINDLASS_VM_MEMORY_OVERHEAD_PERCENT",
        default_value_t = windlass::scheduling::instance_types::DEFAULT_VM_MEMORY_OVERHEAD
    )]
    vm_memory_overhead_percent: f64,
    /// `IMAGE=PATH`: on the Nodes it registered, pods of image IMAGE (any tag) annotated
    /// `windlass.dev/test-outcome: run` run the local binary PATH, and end by its exit code.
    #[arg(
        long = "run-image",
        env = "WINDLASS_REGISTRAR_RUN_IMAGES",
        value_delimiter = ','
    )]
    run_images: Vec<LocalImage>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Registrar {
    cluster: String,
    endpoint: Option<String>,
    ca_bundle: Option<String>,
    boot_delay: Duration,
    ec2: aws_sdk_ec2::Client,
    nodes: Api<Node>,
    /// Instances whose user data joins no node to this cluster, reported once each.
    unjoined: HashSet<String>,
    /// Shape and Kubernetes architecture per instance type.
    shapes: HashMap<String, (Shape, &'static str)>,
    vm_memory_overhead: f64,
    pods: Api<Pod>,
    run_images: Vec<LocalImage>,
    /// The uids of the pods whose container runs (or ran) here.
    started: HashSet<String>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .expect("first provider");
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = Client::try_default().await?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut registrar = Registrar {
        cluster: args.cluster_name,
        endpoint: args.cluster_endpoint,
        ca_bundle: args.cluster_ca_bundle,
        boot_delay: Duration::from_secs(args.boot_delay_seconds),
        ec2: aws_sdk_ec2::Client::new(&aws),
        nodes: Api::all(client.clone()),
        unjoined: HashSet::new(),
        shapes: HashMap::new(),
        vm_memory_overhead: args.vm_memory_overhead_percent,
        pods: Api::all(client),
        run_images: args.run_images,
        started: HashSet::new(),
    };
    info!(cluster = %registrar.cluster, "registering Nodes for instances");
    let mut interval = tokio::time::interval(Duration::from_millis(args.interval_millis));
    loop {
        tokio::select! {
            _ = interval.tick() => {
                if let Err(error) = registrar.pass().await {
                    warn!(%error, "registration pass failed; retrying");
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

impl Registrar {
    async fn pass(&mut self) -> Result<(), BoxError> {
        let running = self.running_instances().await?;
        let selector = format!("{REGISTERED_FOR_LABEL}={}", self.cluster);
        let registered = self
            .nodes
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut registered_ids = HashSet::new();
        let node_names: HashSet<String> = registered
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if !self.run_images.is_empty() {
            containers::start_runs(&self.pods, &node_names, &self.run_images, &mut self.started)
                .await?;
        }
        for existing in registered {
            let id = existing
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instance_id)
                .map(str::to_owned);
            match id {
                Some(id) if running.iter().any(|(i, _)| i.id == id) => {
                    registered_ids.insert(id);
                }
                _ => {
                    let name = existing.metadata.name.clone().unwrap_or_default();
                    info!(node = %name, "instance is gone; deleting its Node");
                    self.nodes.delete(&name, &DeleteParams::default()).await?;
                }
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        for (instance, launched_at) in running {
            if registered_ids.contains(&instance.id)
                || launched_at + self.boot_delay.as_secs() > now
            {
                continue;
            }
            if self.unjoined.contains(&instance.id) {
                continue;
            }
            let bootstrap = match self.bootstrap(&instance.id).await? {
                Ok(bootstrap) => bootstrap,
                Err(reason) => {
                    warn!(instance = %instance.id, %reason, "the instance joins no node to this cluster");
                    self.unjoined.insert(instance.id.clone());
                    continue;
                }
            };
            let (shape, arch) = self.shape(&instance.instance_type).await?;
            let disks = self.disks(&instance).await?;
            let node = node::node(&instance, &shape, arch, &bootstrap, &disks, &self.cluster);
            match self.nodes.create(&PostParams::default(), &node).await {
                Ok(created) => {
                    info!(node = ?created.metadata.name, instance = %instance.id, "registered Node")
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// What the instance's user data bootstraps, if it joins this cluster.
    async fn bootstrap(&self, instance: &str) -> Result<Result<Bootstrap, String>, BoxError> {
        let attribute = self
            .ec2
            .describe_instance_attribute()
            .instance_id(instance)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await?;
        let encoded = attribute
            .user_data()
            .and_then(|v| v.value())
            .unwrap_or_default();
        let user_data = String::from_utf8(aws_smithy_types::base64::decode(encoded)?)?;
        let bootstrap = match bootstrap::read(&user_data) {
            Ok(bootstrap) => bootstrap,
            Err(reason) => return Ok(Err(reason.to_string())),
        };
        if bootstrap.cluster != self.cluster {
            return Ok(Err(format!(
                "its bootstrap joins cluster {:?}",
                bootstrap.cluster
            )));
        }
        if self
            .endpoint
            .as_ref()
            .is_some_and(|e| *e != bootstrap.endpoint)
        {
            return Ok(Err(format!(
                "its bootstrap names API server {:?}",
                bootstrap.endpoint
            )));
        }
        if self
            .ca_bundle
            .as_ref()
            .is_some_and(|ca| *ca != bootstrap.ca_bundle)
        {
            return Ok(Err("its bootstrap carries another cluster CA".to_owned()));
        }
        Ok(Ok(bootstrap))
    }

    /// The sizes of the instance's EBS volumes in bytes, by device name: the kubelet's
    /// filesystem is one of them.
    async fn disks(&self, instance: &Instance) -> Result<BTreeMap<String, i64>, BoxError> {
        if instance.volumes.is_empty() {
            return Ok(BTreeMap::new());
        }
        let described = self
            .ec2
            .describe_volumes()
            .set_volume_ids(Some(instance.volumes.values().cloned().collect()))
            .send()
            .await?;
        let size_of = |id: &str| {
            described
                .volumes()
                .iter()
                .find(|v| v.volume_id() == Some(id))
                .and_then(|v| v.size())
                .map(|gib| i64::from(gib) << 30)
        };
        Ok(instance
            .volumes
            .iter()
            .filter_map(|(device, id)| Some((device.clone(), size_of(id)?)))
            .collect())
    }

    /// Running instances of this cluster, with their launch time in Unix seconds.
    async fn running_instances(&self) -> Result<Vec<(Instance, u64)>, BoxError> {
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{CLUSTER_LABEL}"))
                    .values(&self.cluster)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .into_paginator()
            .send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            for instance in page?.reservations().iter().flat_map(|r| r.instances()) {
                let (Some(id), Some(instance_type), Some(zone)) = (
                    instance.instance_id(),
                    instance.instance_type(),
                    instance.placement().and_then(|p| p.availability_zone()),
                ) else {
                    continue;
                };
                let launched_at = instance.launch_time().map_or(0, |t| t.secs().max(0) as u64);
                instances.push((
                    Instance {
                        id: id.to_owned(),
                        instance_type: instance_type.as_str().to_owned(),
                        zone: zone.to_owned(),
                        private_dns_name: instance.private_dns_name().map(str::to_owned),
                        spot: instance
                            .instance_lifecycle()
                            .is_some_and(|l| l.as_str() == "spot"),
                        volumes: instance
                            .block_device_mappings()
                            .iter()
                            .filter_map(|m| {
                                Some((
                                    m.device_name()?.to_owned(),
                                    m.ebs()?.volume_id()?.to_owned(),
                                ))
                            })
                            .collect(),
                    },
                    launched_at,
                ));
            }
        }
        Ok(instances)
    }

    /// The type's shape and architecture; a kubelet reports the architecture of the CPU it
    /// runs on, which the instance type decides.
    async fn shape(&mut self, instance_type: &str) -> Result<(Shape, &'static str), BoxError> {
        if let Some(shape) = self.shapes.get(instance_type) {
            return Ok(*shape);
        }
        let described = self
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await?;
        let info = described
            .instance_types()
            .first()
            .ok_or_else(|| format!("unknown instance type {instance_type}"))?;
        let shape = shape_of(info, self.vm_memory_overhead)
            .ok_or_else(|| format!("instance type {instance_type} has no usable shape"))?;
        self.shapes.insert(instance_type.to_owned(), shape);
        Ok(shape)
    }
}
