//! Reads an instance's user data the way the node's own agent would: nodeadm's NodeConfig parts
//! (AL2023), Bottlerocket's TOML `settings.kubernetes`, or a call to `/etc/eks/bootstrap.sh`
//! (AL2). What it finds is what the kubelet would join with; user data that says none of this
//! leaves the node unjoined, as on EC2.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use windlass::apis::ec2_node_class::KubeletConfiguration;
use windlass::aws::bootstrap::mime;

/// The cluster a bootstrap joins and what its kubelet registers with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bootstrap {
    /// `AL2023`, `Bottlerocket` or `AL2`: which reader found it.
    pub family: &'static str,
    pub cluster: String,
    pub endpoint: String,
    pub ca_bundle: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub max_pods: Option<i64>,
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    pub eviction_hard: BTreeMap<String, String>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum NoBootstrap {
    #[error("the instance has no user data")]
    Empty,
    #[error("the user data is neither a NodeConfig, Bottlerocket settings nor a bootstrap.sh call")]
    Unrecognised,
    #[error("the {family} bootstrap lacks {missing}")]
    Incomplete {
        family: &'static str,
        missing: &'static str,
    },
    #[error("the {family} bootstrap is malformed: {reason}")]
    Malformed {
        family: &'static str,
        reason: String,
    },
}

pub fn read(user_data: &str) -> Result<Bootstrap, NoBootstrap> {
    if user_data.trim().is_empty() {
        return Err(NoBootstrap::Empty);
    }
    let bootstrap = if mime::is_mime(user_data) {
        let parts = mime::parse(user_data).map_err(|e| NoBootstrap::Malformed {
            family: "MIME",
            reason: e.to_string(),
        })?;
        let configs: Vec<&str> = parts
            .iter()
            .filter(|p| p.media_type() == "application/node.eks.aws")
            .map(|p| p.body.as_str())
            .collect();
        if configs.is_empty() {
            parts
                .iter()
                .find_map(|p| bootstrap_sh(&p.body).transpose())
                .transpose()?
                .ok_or(NoBootstrap::Unrecognised)?
        } else {
            node_configs(&configs)?
        }
    } else if let Ok(table) = user_data.parse::<toml::Table>() {
        bottlerocket(&table)?
    } else {
        bootstrap_sh(user_data)?.ok_or(NoBootstrap::Unrecognised)?
    };
    let family = bootstrap.family;
    for (value, missing) in [
        (&bootstrap.cluster, "the cluster name"),
        (&bootstrap.endpoint, "the API server endpoint"),
        (&bootstrap.ca_bundle, "the cluster CA"),
    ] {
        if value.is_empty() {
            return Err(NoBootstrap::Incomplete { family, missing });
        }
    }
    Ok(bootstrap)
}

impl Bootstrap {
    /// The kubelet settings it sets, as an EC2NodeClass would spell them: what the kubelet
    /// keeps back is then computed as for the class.
    pub fn kubelet(&self) -> KubeletConfiguration {
        let quantities = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect()
        };
        KubeletConfiguration {
            max_pods: self.max_pods.and_then(|p| i32::try_from(p).ok()),
            kube_reserved: quantities(&self.kube_reserved),
            system_reserved: quantities(&self.system_reserved),
            eviction_hard: self.eviction_hard.clone(),
            ..KubeletConfiguration::default()
        }
    }
}

/// nodeadm merges its NodeConfigs in order: a later one's values win, its flags add.
fn node_configs(configs: &[&str]) -> Result<Bootstrap, NoBootstrap> {
    let family = "AL2023";
    let mut merged = Bootstrap {
        family,
        ..Bootstrap::default()
    };
    for config in configs {
        let document: Value = serde_yaml::from_str(config).map_err(|e| NoBootstrap::Malformed {
            family,
            reason: e.to_string(),
        })?;
        if document["kind"] != "NodeConfig" {
            continue;
        }
        let spec = &document["spec"];
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let cluster = &spec["cluster"];
        if let Some(name) = text(&cluster["name"]) {
            merged.cluster = name;
        }
        if let Some(endpoint) = text(&cluster["apiServerEndpoint"]) {
            merged.endpoint = endpoint;
        }
        if let Some(ca) = text(&cluster["certificateAuthority"]) {
            merged.ca_bundle = ca;
        }
        let kubelet = &spec["kubelet"]["config"];
        if let Some(max_pods) = kubelet["maxPods"].as_i64() {
            merged.max_pods = Some(max_pods);
        }
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default()
        };
        merged
            .kube_reserved
            .extend(strings(&kubelet["kubeReserved"]));
        merged
            .system_reserved
            .extend(strings(&kubelet["systemReserved"]));
        merged
            .eviction_hard
            .extend(strings(&kubelet["evictionHard"]));
        if let Some(taints) = kubelet.get("registerWithTaints") {
            merged.taints =
                serde_json::from_value(taints.clone()).map_err(|e| NoBootstrap::Malformed {
                    family,
                    reason: format!("registerWithTaints: {e}"),
                })?;
        }
        for flag in spec["kubelet"]["flags"].as_array().into_iter().flatten() {
            if let Some(labels) = flag.as_str().and_then(|f| f.strip_prefix("--node-labels=")) {
                merged.labels.extend(pairs(labels));
            }
        }
    }
    Ok(merged)
}

fn bottlerocket(document: &toml::Table) -> Result<Bootstrap, NoBootstrap> {
    let family = "Bottlerocket";
    let Some(kubernetes) = document
        .get("settings")
        .and_then(|s| s.get("kubernetes"))
        .and_then(|k| k.as_table())
    else {
        return Err(NoBootstrap::Unrecognised);
    };
    let text = |key: &str| {
        kubernetes
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let table = |key: &str| -> BTreeMap<String, String> {
        kubernetes
            .get(key)
            .and_then(|v| v.as_table())
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut taints = Vec::new();
    for (key, values) in kubernetes
        .get("node-taints")
        .and_then(|v| v.as_table())
        .into_iter()
        .flatten()
    {
        for value in values.as_array().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let (value, effect) = text
                .rsplit_once(':')
                .ok_or_else(|| NoBootstrap::Malformed {
                    family,
                    reason: format!("node-taints.{key} {text:?} is not value:Effect"),
                })?;
            taints.push(Taint {
                key: key.clone(),
                value: (!value.is_empty()).then(|| value.to_owned()),
                effect: effect.to_owned(),
                time_added: None,
            });
        }
    }
    Ok(Bootstrap {
        family,
        cluster: text("cluster-name"),
        endpoint: text("api-server"),
        ca_bundle: text("cluster-certificate"),
        labels: table("node-labels"),
        taints,
        max_pods: kubernetes.get("max-pods").and_then(|v| v.as_integer()),
        kube_reserved: table("kube-reserved"),
        system_reserved: table("system-reserved"),
        eviction_hard: table("eviction-hard"),
    })
}

/// The first `/etc/eks/bootstrap.sh` call in a script, if there is one.
fn bootstrap_sh(script: &str) -> Result<Option<Bootstrap>, NoBootstrap> {
    let family = "AL2";
    let Some(words) = script
        .lines()
        .filter_map(shlex::split)
        .find(|words| words.first().is_some_and(|w| w == "/etc/eks/bootstrap.sh"))
    else {
        return Ok(None);
    };
    let mut bootstrap = Bootstrap {
        family,
        ..Bootstrap::default()
    };
    let mut args = words.into_iter().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next().ok_or_else(|| NoBootstrap::Malformed {
                family,
                reason: format!("{arg} has no value"),
            })
        };
        match arg.as_str() {
            "--apiserver-endpoint" => bootstrap.endpoint = value()?,
            "--b64-cluster-ca" => bootstrap.ca_bundle = value()?,
            "--kubelet-extra-args" => kubelet_flags(&mut bootstrap, &value()?)?,
            // Every other bootstrap.sh option takes a value too.
            flag if flag.starts_with("--") => {
                value()?;
            }
            name => bootstrap.cluster = name.to_owned(),
        }
    }
    Ok(Some(bootstrap))
}

fn kubelet_flags(bootstrap: &mut Bootstrap, flags: &str) -> Result<(), NoBootstrap> {
    let malformed = |reason: String| NoBootstrap::Malformed {
        family: "AL2",
        reason,
    };
    for flag in shlex::split(flags).ok_or_else(|| malformed(format!("{flags:?}")))? {
        let Some((name, value)) = flag.split_once('=') else {
            continue;
        };
        match name {
            "--node-labels" => bootstrap.labels.extend(pairs(value)),
            "--register-with-taints" => {
                for taint in value.split(',') {
                    let (key_value, effect) = taint
                        .rsplit_once(':')
                        .ok_or_else(|| malformed(format!("taint {taint:?}")))?;
                    let (key, value) = match key_value.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_owned())),
                        None => (key_value, None),
                    };
                    bootstrap.taints.push(Taint {
                        key: key.to_owned(),
                        value,
                        effect: effect.to_owned(),
                        time_added: None,
                    });
                }
            }
            "--max-pods" => {
                bootstrap.max_pods = Some(
                    value
                        .parse()
                        .map_err(|_| malformed(format!("--max-pods={value}")))?,
                )
            }
            "--kube-reserved" => bootstrap.kube_reserved.extend(pairs(value)),
            "--system-reserved" => bootstrap.system_reserved.extend(pairs(value)),
            "--eviction-hard" => bootstrap.eviction_hard.extend(
                value
                    .split(',')
                    .filter_map(|p| p.split_once('<'))
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            _ => {}
        }
    }
    Ok(())
}

/// `k=v,k2=v2`.
fn pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use windlass::scheduling::instance_types::{KubeletReservations, Shape, Storage};

    use super::*;

    const AL2023: &str =
        include_str!("../../../src/aws/bootstrap/testdata/al2023-kubelet-and-script.txt");
    const BOTTLEROCKET: &str =
        include_str!("../../../src/aws/bootstrap/testdata/bottlerocket-kubelet-and-user.toml");
    const AL2: &str =
        include_str!("../../../src/aws/bootstrap/testdata/al2-kubelet-and-script.txt");

    #[test]
    fn every_family_windlass_writes_reads_back_the_same() {
        for (data, family) in [
            (AL2023, "AL2023"),
            (BOTTLEROCKET, "Bottlerocket"),
            (AL2, "AL2"),
        ] {
            let bootstrap = read(data).unwrap();
            assert_eq!(bootstrap.family, family);
            assert_eq!(bootstrap.cluster, "prod");
            assert_eq!(
                bootstrap.endpoint,
                "https://ABC.gr7.us-east-1.eks.amazonaws.com"
            );
            assert_eq!(bootstrap.ca_bundle, "Q0EtREFUQQ==");
            assert_eq!(bootstrap.labels["team"], "data", "{family}");
            assert_eq!(bootstrap.labels["windlass.dev/nodepool"], "default");
            assert_eq!(bootstrap.max_pods, Some(42), "{family}");
            let keys: Vec<&str> = bootstrap.taints.iter().map(|t| t.key.as_str()).collect();
            assert!(
                keys.contains(&"dedicated") && keys.contains(&"node.cilium.io/agent-not-ready"),
                "{family}: {keys:?}"
            );
            let m5_large = Shape {
                vcpus: 2,
                memory_mib: 8192,
                max_pods: 29,
                ..Shape::default()
            };
            let reserved = KubeletReservations::of(Some(&bootstrap.kubelet()), Storage::default())
                .for_shape(&m5_large);
            assert_eq!(reserved.system_millicpu, 100, "{family}");
            assert_eq!(reserved.kube_memory, Some(300 << 20), "{family}");
            assert_eq!(
                reserved.eviction_memory,
                Some((8i64 << 30) / 20 + 1),
                "{family}: 5%"
            );
        }
    }

    #[test]
    fn user_data_that_joins_nothing_is_not_a_bootstrap() {
        assert_eq!(read(""), Err(NoBootstrap::Empty));
        assert_eq!(
            read("#!/bin/bash\necho hello\n"),
            Err(NoBootstrap::Unrecognised)
        );
        assert_eq!(
            read("[settings.kubernetes]\ncluster-name = \"prod\"\n"),
            Err(NoBootstrap::Incomplete {
                family: "Bottlerocket",
                missing: "the API server endpoint"
            })
        );
        let no_config = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/x-shellscript\n\necho hi\n--b--\n";
        assert_eq!(read(no_config), Err(NoBootstrap::Unrecognised));
    }
}
