//! The user data that makes an instance a node of the cluster, per AMI family, merged with the
//! class's own `userData`, without I/O: a nodeadm NodeConfig for AL2023 (`al2023`), TOML
//! settings for Bottlerocket (`bottlerocket`), `bootstrap.sh` arguments for AL2 (`al2`), and
//! the user's data untouched for `Custom`. Each carries the cluster (name, endpoint, CA,
//! service CIDR, DNS), the Node's labels and taints, and the class's kubelet settings.

mod al2;
mod al2023;
mod bottlerocket;
pub mod mime;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use kube::ResourceExt;
use serde::Serialize;

use crate::apis::ec2_node_class::{AmiFamily, EC2NodeClassSpec, KubeletConfiguration};
use crate::apis::labels::{CLUSTER_LABEL, UNREGISTERED_TAINT};
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;
use crate::scheduling::claim_labels;
use crate::scheduling::requirements::Requirements;

/// The cluster a node joins, as its bootstrap needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    pub name: String,
    /// The API server's URL.
    pub endpoint: String,
    /// The CA bundle (PEM), base64-encoded as EKS DescribeCluster returns it.
    pub ca_bundle: String,
    /// The Service CIDR, from which nodeadm derives the DNS address when none is given.
    pub service_cidr: String,
    /// The kube-dns Service's address, used unless the class sets `kubelet.clusterDNS`.
    pub dns: Option<String>,
}

/// What the kubelet registers its Node with: labels and taints (startup taints included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeSettings {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<NodeTaint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeTaint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

impl NodeSettings {
    /// The labels a kubelet may set on its own Node (the NodeRestriction admission plugin refuses
    /// other `kubernetes.io` and `k8s.io` keys; Windlass puts those on after registration), and
    /// the taints, in order, each (key, effect) once, after the unregistered taint that
    /// registration takes off.
    pub fn new<'a>(
        labels: &BTreeMap<String, String>,
        taints: impl IntoIterator<Item = &'a Taint>,
    ) -> Self {
        let labels = labels
            .iter()
            .filter(|(key, _)| kubelet_may_set(key) && key.as_str() != CLUSTER_LABEL)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut unique = vec![NodeTaint {
            key: UNREGISTERED_TAINT.to_owned(),
            value: None,
            effect: "NoExecute".to_owned(),
        }];
        for taint in taints {
            if !unique
                .iter()
                .any(|t| t.key == taint.key && t.effect == taint.effect)
            {
                unique.push(NodeTaint {
                    key: taint.key.clone(),
                    value: taint.value.clone().filter(|v| !v.is_empty()),
                    effect: taint.effect.clone(),
                });
            }
        }
        Self {
            labels,
            taints: unique,
        }
    }

    /// What a NodeClaim's Node registers with: its labels (its NodePool's) and all its taints.
    pub fn of_claim(claim: &NodeClaim) -> Self {
        Self::new(
            claim.labels(),
            claim.spec.taints.iter().chain(&claim.spec.startup_taints),
        )
    }

    /// What the Nodes of a NodePool's NodeClaims register with; the same as [`Self::of_claim`]
    /// for each of them while the pool is unchanged.
    pub fn of_pool(pool: &NodePool) -> Self {
        let template = &pool.spec.template;
        let requirements = Requirements::from_node_pool(&template.spec.requirements);
        let labels = claim_labels(&pool.name_any(), &template.metadata.labels, &requirements);
        Self::new(
            &labels,
            template
                .spec
                .taints
                .iter()
                .chain(&template.spec.startup_taints),
        )
    }

    /// `k=v,k2=v2`, the kubelet's `--node-labels`.
    fn labels_flag(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `k=v:Effect,k2:Effect`, the kubelet's `--register-with-taints`.
    fn taints_flag(&self) -> String {
        self.taints
            .iter()
            .map(|t| match &t.value {
                Some(value) => format!("{}={value}:{}", t.key, t.effect),
                None => format!("{}:{}", t.key, t.effect),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// NodeRestriction lets a kubelet set labels outside the `kubernetes.io` and `k8s.io` domains,
/// and inside them only under `kubelet.kubernetes.io/` and `node.kubernetes.io/`.
fn kubelet_may_set(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|allowed| prefix == *allowed || prefix.ends_with(&format!(".{allowed}")))
}

/// The families Windlass writes a bootstrap for (Windows is refused by the schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    AL2,
    AL2023,
    Bottlerocket,
    Custom,
}

/// The class's family: `Custom` when it says so (its alias then only picks the image), else
/// its alias's, else its `amiFamily` (the schema requires one of them and that they agree).
pub fn family(spec: &EC2NodeClassSpec) -> Family {
    if spec.ami_family == Some(AmiFamily::Custom) {
        return Family::Custom;
    }
    let alias = spec
        .ami_selector_terms
        .iter()
        .find_map(|t| t.alias.as_deref())
        .and_then(|alias| alias.split_once('@'))
        .map(|(family, _)| family);
    match (alias, spec.ami_family) {
        (Some("al2"), _) | (None, Some(AmiFamily::AL2)) => Family::AL2,
        (Some("bottlerocket"), _) | (None, Some(AmiFamily::Bottlerocket)) => Family::Bottlerocket,
        _ => Family::AL2023,
    }
}

/// Why a class's user data cannot be merged with its bootstrap; shown on the NodeClaim's
/// Launched condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Mime(#[from] mime::MimeError),
    #[error("userData is not TOML, as Bottlerocket reads it: {0}")]
    Toml(String),
    #[error("userData's {0} is not a TOML table")]
    NotATable(String),
}

/// The class's kubelet settings, with the cluster's DNS when the class names none.
fn cluster_dns<'a>(kubelet: &'a KubeletConfiguration, cluster: &'a ClusterInfo) -> Vec<&'a str> {
    if kubelet.cluster_dns.is_empty() {
        cluster.dns.iter().map(String::as_str).collect()
    } else {
        kubelet.cluster_dns.iter().map(String::as_str).collect()
    }
}

/// What a family's bootstrap is written from.
pub struct Input<'a> {
    pub cluster: &'a ClusterInfo,
    pub kubelet: Option<&'a KubeletConfiguration>,
    pub node: &'a NodeSettings,
    /// The class's `userData`.
    pub user: Option<&'a str>,
    /// `instanceStorePolicy: RAID0`: the instance's NVMe disks as one RAID0 array for the
    /// kubelet and containers.
    pub instance_store_raid0: bool,
}

/// The user data to launch with: the family's bootstrap merged with the class's `userData`.
pub fn user_data(family: Family, input: &Input) -> Result<Option<String>, BootstrapError> {
    let default = KubeletConfiguration::default();
    let kubelet = input.kubelet.unwrap_or(&default);
    Ok(match family {
        Family::AL2023 => Some(al2023::user_data(input, kubelet)?),
        Family::Bottlerocket => Some(bottlerocket::user_data(input, kubelet)?),
        Family::AL2 => Some(al2::user_data(input, kubelet)?),
        Family::Custom => input.user.map(str::to_owned),
    })
}

/// The user's data as MIME parts, a lone script or config becoming one part of `content_type`
/// (a lone `#cloud-config` one of cloud-init's own type, which it would not run as a script).
fn user_parts(user: Option<&str>, content_type: &str) -> Result<Vec<mime::Part>, BootstrapError> {
    Ok(match user.filter(|u| !u.trim().is_empty()) {
        None => Vec::new(),
        Some(data) if mime::is_mime(data) => mime::parse(data)?,
        Some(data) if data.trim_start().starts_with("#cloud-config") => {
            vec![mime::Part::new(
                "text/cloud-config; charset=\"us-ascii\"",
                data,
            )]
        }
        Some(data) => vec![mime::Part::new(content_type, data)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares `actual` with `testdata/<name>`; `UPDATE_GOLDEN=1` writes it instead.
    pub fn assert_golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/aws/bootstrap/testdata")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(actual, expected, "{name} differs from its golden file");
    }

    pub fn cluster() -> ClusterInfo {
        ClusterInfo {
            name: "prod".into(),
            endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
            ca_bundle: "Q0EtREFUQQ==".into(),
            service_cidr: "172.20.0.0/16".into(),
            dns: Some("172.20.0.10".into()),
        }
    }

    pub fn node() -> NodeSettings {
        let taint = |key: &str, value: Option<&str>, effect: &str| Taint {
            key: key.into(),
            value: value.map(str::to_owned),
            effect: effect.into(),
            time_added: None,
        };
        NodeSettings::new(
            &BTreeMap::from([
                ("team".to_owned(), "data".to_owned()),
                ("windlass.dev/nodepool".to_owned(), "default".to_owned()),
                ("windlass.dev/cluster".to_owned(), "prod".to_owned()),
                ("node-role.kubernetes.io/worker".to_owned(), "".to_owned()),
                (
                    "node.kubernetes.io/lifecycle".to_owned(),
                    "normal".to_owned(),
                ),
            ]),
            &[
                taint("dedicated", Some("jobs"), "NoSchedule"),
                taint("node.cilium.io/agent-not-ready", None, "NoExecute"),
                taint("dedicated", Some("jobs"), "NoSchedule"),
            ],
        )
    }

    pub fn input<'a>(
        cluster: &'a ClusterInfo,
        kubelet: Option<&'a KubeletConfiguration>,
        node: &'a NodeSettings,
        user: Option<&'a str>,
    ) -> Input<'a> {
        Input {
            cluster,
            kubelet,
            node,
            user,
            instance_store_raid0: false,
        }
    }

    /// A family's writer called with the shared cluster and node.
    pub fn write(
        family: fn(&Input, &KubeletConfiguration) -> Result<String, BootstrapError>,
        kubelet: &KubeletConfiguration,
        user: Option<&str>,
    ) -> Result<String, BootstrapError> {
        let (cluster, node) = (cluster(), node());
        family(&input(&cluster, None, &node, user), kubelet)
    }

    pub fn kubelet() -> KubeletConfiguration {
        serde_json::from_value(serde_json::json!({
            "maxPods": 42,
            "systemReserved": {"cpu": "100m", "memory": "200Mi"},
            "kubeReserved": {"memory": "300Mi"},
            "evictionHard": {"memory.available": "5%"},
            "evictionSoft": {"memory.available": "10%"},
            "evictionSoftGracePeriod": {"memory.available": "1m"},
            "evictionMaxPodGracePeriod": 60,
            "imageGCHighThresholdPercent": 80,
            "imageGCLowThresholdPercent": 60,
            "cpuCFSQuota": false
        }))
        .unwrap()
    }

    #[test]
    fn the_kubelet_registers_as_unregistered_with_each_taint_once_and_only_labels_it_may_set() {
        let node = node();
        assert_eq!(
            node.labels.keys().collect::<Vec<_>>(),
            [
                "node.kubernetes.io/lifecycle",
                "team",
                "windlass.dev/nodepool"
            ]
        );
        assert_eq!(
            node.taints_flag(),
            "windlass.dev/unregistered:NoExecute,dedicated=jobs:NoSchedule,\
             node.cilium.io/agent-not-ready:NoExecute",
            "no pod binds before registration takes the first one off"
        );
        assert!(kubelet_may_set("example.com/x"));
        assert!(!kubelet_may_set("kubernetes.io/hostname"));
        assert!(!kubelet_may_set("foo.k8s.io/x"));
        assert!(kubelet_may_set("kubelet.kubernetes.io/x"));
    }

    #[test]
    fn the_family_is_the_aliass_else_the_declared_one() {
        let spec = |terms: serde_json::Value, family: Option<&str>| -> EC2NodeClassSpec {
            let mut value = serde_json::json!({
                "subnetSelectorTerms": [{"id": "subnet-a"}],
                "securityGroupSelectorTerms": [{"id": "sg-1"}],
                "amiSelectorTerms": terms,
            });
            if let Some(family) = family {
                value["amiFamily"] = family.into();
            }
            serde_json::from_value(value).unwrap()
        };
        let alias = |a: &str| serde_json::json!([{"alias": a}]);
        let id = serde_json::json!([{"id": "ami-1"}]);
        assert_eq!(family(&spec(alias("al2023@latest"), None)), Family::AL2023);
        assert_eq!(
            family(&spec(alias("bottlerocket@v1.26.0"), None)),
            Family::Bottlerocket
        );
        assert_eq!(family(&spec(alias("al2@latest"), None)), Family::AL2);
        assert_eq!(family(&spec(id.clone(), Some("Custom"))), Family::Custom);
        assert_eq!(
            family(&spec(alias("al2023@latest"), Some("Custom"))),
            Family::Custom,
            "the alias picks the image, the user data is the user's"
        );
        assert_eq!(
            family(&spec(id.clone(), Some("Bottlerocket"))),
            Family::Bottlerocket
        );
        assert_eq!(family(&spec(id, Some("AL2023"))), Family::AL2023);
    }

    #[test]
    fn a_lone_cloud_config_stays_cloud_config() {
        let parts = user_parts(Some("#cloud-config\nruncmd: []\n"), "text/x-shellscript").unwrap();
        assert_eq!(parts[0].media_type(), "text/cloud-config");
        let parts = user_parts(Some("echo hi\n"), "text/x-shellscript").unwrap();
        assert_eq!(parts[0].media_type(), "text/x-shellscript");
    }

    #[test]
    fn custom_keeps_the_users_data_byte_for_byte() {
        let user = "#!/bin/bash\necho hello\n";
        let (cluster, node) = (cluster(), node());
        let mut input = input(&cluster, None, &node, Some(user));
        assert_eq!(
            user_data(Family::Custom, &input).unwrap(),
            Some(user.to_owned())
        );
        input.user = None;
        assert_eq!(user_data(Family::Custom, &input).unwrap(), None);
    }
}
