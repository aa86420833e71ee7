//! Bottlerocket reads its user data as TOML settings: the user's settings are kept and Windlass
//! sets `settings.kubernetes`' cluster, DNS and kubelet keys over them. Node labels and taints
//! merge with the user's, Windlass' winning per key.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::{BootstrapError, Input, cluster_dns};
use crate::apis::ec2_node_class::KubeletConfiguration;

pub fn user_data(input: &Input, kubelet: &KubeletConfiguration) -> Result<String, BootstrapError> {
    let (cluster, node, user) = (input.cluster, input.node, input.user);
    let mut document: Table = match user {
        Some(data) => data
            .parse()
            .map_err(|e: toml::de::Error| BootstrapError::Toml(e.message().to_owned()))?,
        None => Table::new(),
    };
    let kubernetes = table(
        table(&mut document, "settings", "settings")?,
        "kubernetes",
        "settings.kubernetes",
    )?;
    let mut set = |key: &str, value: Value| {
        kubernetes.insert(key.to_owned(), value);
    };
    set("cluster-name", cluster.name.clone().into());
    set("api-server", cluster.endpoint.clone().into());
    set("cluster-certificate", cluster.ca_bundle.clone().into());
    // A list needs a recent Bottlerocket; the first address is what every version reads.
    if let Some(dns) = cluster_dns(kubelet, cluster).first() {
        set("cluster-dns-ip", (*dns).into());
    }
    if let Some(max_pods) = kubelet.max_pods {
        set("max-pods", i64::from(max_pods).into());
    }
    let strings = |m: &BTreeMap<String, String>| {
        Value::Table(
            m.iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
        )
    };
    let quantities =
        |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            Value::Table(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.0.clone().into()))
                    .collect(),
            )
        };
    if !kubelet.system_reserved.is_empty() {
        set("system-reserved", quantities(&kubelet.system_reserved));
    }
    if !kubelet.kube_reserved.is_empty() {
        set("kube-reserved", quantities(&kubelet.kube_reserved));
    }
    if !kubelet.eviction_hard.is_empty() {
        set("eviction-hard", strings(&kubelet.eviction_hard));
    }
    if !kubelet.eviction_soft.is_empty() {
        set("eviction-soft", strings(&kubelet.eviction_soft));
    }
    if !kubelet.eviction_soft_grace_period.is_empty() {
        set(
            "eviction-soft-grace-period",
            strings(&kubelet.eviction_soft_grace_period),
        );
    }
    if let Some(seconds) = kubelet.eviction_max_pod_grace_period {
        set("eviction-max-pod-grace-period", i64::from(seconds).into());
    }
    // Bottlerocket's model takes these percentages as strings.
    if let Some(percent) = kubelet.image_gc_high_threshold_percent {
        set(
            "image-gc-high-threshold-percent",
            percent.to_string().into(),
        );
    }
    if let Some(percent) = kubelet.image_gc_low_threshold_percent {
        set("image-gc-low-threshold-percent", percent.to_string().into());
    }
    if let Some(enforced) = kubelet.cpu_cfs_quota {
        set("cpu-cfs-quota-enforced", enforced.into());
    }
    if !node.labels.is_empty() {
        let labels = table(kubernetes, "node-labels", "settings.kubernetes.node-labels")?;
        for (key, value) in &node.labels {
            labels.insert(key.clone(), value.clone().into());
        }
    }
    if !node.taints.is_empty() {
        let mut ours: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for taint in &node.taints {
            let value = format!(
                "{}:{}",
                taint.value.as_deref().unwrap_or_default(),
                taint.effect
            );
            ours.entry(&taint.key).or_default().push(value.into());
        }
        let taints = table(kubernetes, "node-taints", "settings.kubernetes.node-taints")?;
        for (key, values) in ours {
            taints.insert(key.to_owned(), Value::Array(values));
        }
    }
    if input.instance_store_raid0 {
        // Bottlerocket's own way: its API client makes the array and binds the kubelet's and
        // containerd's directories onto it, before either starts.
        let commands = table(
            table(&mut document, "settings", "settings")?,
            "bootstrap-commands",
            "settings.bootstrap-commands",
        )?;
        let command = |words: &[&str]| Value::Array(words.iter().map(|w| (*w).into()).collect());
        let mut mount = Table::new();
        mount.insert(
            "commands".into(),
            Value::Array(vec![
                command(&["apiclient", "ephemeral-storage", "init"]),
                command(&[
                    "apiclient",
                    "ephemeral-storage",
                    "bind",
                    "--dirs",
                    "/var/lib/containerd",
                    "/var/lib/kubelet",
                    "/var/log/pods",
                ]),
            ]),
        );
        mount.insert("mode".into(), "always".into());
        mount.insert("essential".into(), true.into());
        commands.insert("000-mount-instance-storage".into(), Value::Table(mount));
    }
    Ok(toml::to_string(&document).expect("a TOML table always serializes"))
}

/// The table under `key`, made when missing; `path` names it in the error.
fn table<'a>(
    parent: &'a mut Table,
    key: &str,
    path: &str,
) -> Result<&'a mut Table, BootstrapError> {
    parent
        .entry(key)
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| BootstrapError::NotATable(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_golden, cluster, input, kubelet, node};
    use super::*;

    fn write(kubelet: &KubeletConfiguration, user: Option<&str>) -> Result<String, BootstrapError> {
        super::super::tests::write(super::user_data, kubelet, user)
    }

    #[test]
    fn a_bare_class_gets_the_cluster_labels_and_taints() {
        let data = write(&KubeletConfiguration::default(), None).unwrap();
        assert_golden("bottlerocket-bare.toml", &data);
    }

    #[test]
    fn the_users_settings_are_kept_and_windlass_wins_where_both_set_a_key() {
        let user = r#"
[settings.host-containers.admin]
enabled = true

[settings.kubernetes]
cluster-name = "someone-else"
allowed-unsafe-sysctls = ["net.core.somaxconn"]

[settings.kubernetes.node-labels]
team = "web"
tier = "gold"

[settings.kubernetes.node-taints]
special = ["true:NoSchedule"]
"#;
        let data = write(&kubelet(), Some(user)).unwrap();
        assert_golden("bottlerocket-kubelet-and-user.toml", &data);
        let parsed: Table = data.parse().unwrap();
        let kubernetes = parsed["settings"]["kubernetes"].as_table().unwrap();
        assert_eq!(kubernetes["cluster-name"].as_str(), Some("prod"));
        assert_eq!(kubernetes["node-labels"]["team"].as_str(), Some("data"));
        assert_eq!(kubernetes["node-labels"]["tier"].as_str(), Some("gold"));
        assert!(kubernetes["node-taints"].get("special").is_some());
        assert_eq!(kubernetes["max-pods"].as_integer(), Some(42));
        assert!(
            parsed["settings"]["host-containers"]["admin"]["enabled"]
                .as_bool()
                .unwrap()
        );
    }

    #[test]
    fn raid0_binds_the_kubelet_and_containerd_onto_the_instance_store() {
        let (cluster, node) = (cluster(), node());
        let mut input = input(&cluster, None, &node, None);
        input.instance_store_raid0 = true;
        let parsed: Table = super::user_data(&input, &KubeletConfiguration::default())
            .unwrap()
            .parse()
            .unwrap();
        let mount = &parsed["settings"]["bootstrap-commands"]["000-mount-instance-storage"];
        assert_eq!(mount["commands"][1][2].as_str(), Some("bind"));
        assert_eq!(mount["mode"].as_str(), Some("always"));
        assert_eq!(mount["essential"].as_bool(), Some(true));
    }

    #[test]
    fn user_data_that_is_not_toml_or_misplaces_a_table_is_refused() {
        let bare = KubeletConfiguration::default();
        let error = write(&bare, Some("#!/bin/bash\necho hi")).unwrap_err();
        assert!(matches!(error, BootstrapError::Toml(_)), "{error}");
        let error = write(&bare, Some("[settings]\nkubernetes = 1\n")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "userData's settings.kubernetes is not a TOML table"
        );
    }
}
