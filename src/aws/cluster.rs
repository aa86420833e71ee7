//! Where a node finds the cluster it joins: the API endpoint, CA bundle and Service CIDR from
//! the flags, or from EKS DescribeCluster for what the flags leave out, and the DNS address
//! from the `kube-system/kube-dns` Service. The first are read at the first launch and kept
//! (a failed read is tried again at the next); the DNS address is read again at each launch
//! until one is found, so a Service created or a Role granted later is picked up.

use aws_sdk_eks::error::ProvideErrorMetadata;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::bootstrap::ClusterInfo;
use super::sdk_errors::describe;
use crate::cloud::CloudError;

/// What `--cluster-endpoint`, `--cluster-ca-bundle` and `--cluster-service-cidr` gave.
#[derive(Clone, Debug, Default)]
pub struct ClusterFlags {
    pub endpoint: Option<String>,
    pub ca_bundle: Option<String>,
    pub service_cidr: Option<String>,
}

pub struct ClusterSource {
    name: String,
    flags: ClusterFlags,
    eks: aws_sdk_eks::Client,
    services: Api<Service>,
    resolved: OnceCell<Resolved>,
    dns: tokio::sync::Mutex<Option<String>>,
}

/// What the flags and DescribeCluster together said.
#[derive(Clone, Debug)]
struct Resolved {
    endpoint: String,
    ca_bundle: String,
    service_cidr: String,
}

const DNS_SERVICE: &str = "kube-dns";

impl ClusterSource {
    pub fn new(
        name: String,
        flags: ClusterFlags,
        eks: aws_sdk_eks::Client,
        client: kube::Client,
    ) -> Self {
        Self {
            name,
            flags,
            eks,
            services: Api::namespaced(client, "kube-system"),
            resolved: OnceCell::new(),
            dns: tokio::sync::Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<ClusterInfo, CloudError> {
        let resolved = self.resolved.get_or_try_init(|| self.resolve()).await?;
        let mut dns = self.dns.lock().await;
        if dns.is_none() {
            *dns = self.read_dns().await;
            if let Some(ip) = &*dns {
                info!(dns = %ip, "nodes are told the cluster's DNS address");
            }
        }
        Ok(ClusterInfo {
            name: self.name.clone(),
            endpoint: resolved.endpoint.clone(),
            ca_bundle: resolved.ca_bundle.clone(),
            service_cidr: resolved.service_cidr.clone(),
            dns: dns.clone(),
        })
    }

    /// Endpoint, CA bundle and Service CIDR, each from its flag or else DescribeCluster.
    async fn resolve(&self) -> Result<Resolved, CloudError> {
        let ClusterFlags {
            mut endpoint,
            mut ca_bundle,
            mut service_cidr,
        } = self.flags.clone();
        if endpoint.is_none() || ca_bundle.is_none() || service_cidr.is_none() {
            let described = self.describe_cluster().await?;
            endpoint = endpoint.or(described.endpoint);
            ca_bundle = ca_bundle.or(described.ca_bundle);
            service_cidr = service_cidr.or(described.service_cidr);
        }
        let missing = |what: &str| CloudError {
            call: "eks:DescribeCluster",
            code: None,
            message: format!(
                "EKS cluster {} reports no {what} yet; give it with --cluster-{what}",
                self.name
            ),
        };
        let resolved = Resolved {
            endpoint: endpoint.ok_or_else(|| missing("endpoint"))?,
            ca_bundle: ca_bundle.ok_or_else(|| missing("ca-bundle"))?,
            service_cidr: service_cidr.ok_or_else(|| missing("service-cidr"))?,
        };
        info!(endpoint = %resolved.endpoint, service_cidr = %resolved.service_cidr, "nodes join the cluster through these");
        Ok(resolved)
    }

    async fn describe_cluster(&self) -> Result<ClusterFlags, CloudError> {
        let output = self
            .eks
            .describe_cluster()
            .name(&self.name)
            .send()
            .await
            .map_err(|e| CloudError {
                call: "eks:DescribeCluster",
                code: e.code().map(str::to_owned),
                message: format!("cluster {}: {}", self.name, describe(&e)),
            })?;
        let cluster = output.cluster();
        let network = cluster.and_then(|c| c.kubernetes_network_config());
        Ok(ClusterFlags {
            endpoint: cluster.and_then(|c| c.endpoint()).map(str::to_owned),
            ca_bundle: cluster
                .and_then(|c| c.certificate_authority())
                .and_then(|ca| ca.data())
                .map(str::to_owned),
            service_cidr: network
                .and_then(|n| n.service_ipv4_cidr().or(n.service_ipv6_cidr()))
                .map(str::to_owned),
        })
    }

    /// The kube-dns Service's ClusterIP; without it nodeadm, Bottlerocket and bootstrap.sh
    /// derive the address from the Service CIDR, so a failed read is a warning, not a failed
    /// launch.
    async fn read_dns(&self) -> Option<String> {
        match self.services.get_opt(DNS_SERVICE).await {
            Ok(service) => {
                let ip = service
                    .and_then(|s| s.spec)
                    .and_then(|s| s.cluster_ip)
                    .filter(|ip| !ip.is_empty() && ip != "None");
                if ip.is_none() {
                    warn!(
                        "kube-system/{DNS_SERVICE} has no ClusterIP; nodes derive their DNS address from the Service CIDR"
                    );
                }
                ip
            }
            Err(error) => {
                warn!(%error, "reading kube-system/{DNS_SERVICE} failed; nodes derive their DNS address from the Service CIDR");
                None
            }
        }
    }
}
