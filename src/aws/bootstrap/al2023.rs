//! AL2023: nodeadm reads every `application/node.eks.aws` part of a MIME document and merges
//! the NodeConfigs in order, so the user's parts come first, unchanged, and Windlass' NodeConfig
//! last: the cluster and the settings Windlass owns win. A user's lone NodeConfig becomes a
//! NodeConfig part and any other lone user data a shell script part.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::mime::{self, Part};
use super::{BootstrapError, ClusterInfo, Input, NodeSettings, cluster_dns, user_parts};
use crate::apis::ec2_node_class::KubeletConfiguration;

pub const NODECONFIG_CONTENT_TYPE: &str = "application/node.eks.aws";
const SCRIPT_CONTENT_TYPE: &str = "text/x-shellscript; charset=\"us-ascii\"";

pub fn user_data(input: &Input, kubelet: &KubeletConfiguration) -> Result<String, BootstrapError> {
    let (cluster, node, user) = (input.cluster, input.node, input.user);
    let lone_type = match user {
        Some(data) if is_node_config(data) => NODECONFIG_CONTENT_TYPE,
        _ => SCRIPT_CONTENT_TYPE,
    };
    let mut parts = user_parts(user, lone_type)?;
    parts.push(Part::new(
        NODECONFIG_CONTENT_TYPE,
        node_config(cluster, kubelet, node, input.instance_store_raid0),
    ));
    Ok(mime::write(&parts)?)
}

fn is_node_config(data: &str) -> bool {
    serde_yaml::from_str::<Value>(data)
        .ok()
        .is_some_and(|v| v["kind"] == "NodeConfig")
}

/// Windlass' NodeConfig: the cluster, and the kubelet settings the class sets; nodeadm's
/// defaults (max pods from the ENI limits, EKS's kube-reserved) stand for the rest.
fn node_config(
    cluster: &ClusterInfo,
    kubelet: &KubeletConfiguration,
    node: &NodeSettings,
    instance_store_raid0: bool,
) -> String {
    let mut config = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            config.insert(key.to_owned(), value);
        }
    };
    let dns = cluster_dns(kubelet, cluster);
    if !dns.is_empty() {
        put("clusterDNS", json!(dns));
    }
    put("maxPods", json!(kubelet.max_pods));
    put("podsPerCore", json!(kubelet.pods_per_core));
    put("systemReserved", map(&kubelet.system_reserved));
    put("kubeReserved", map(&kubelet.kube_reserved));
    put("evictionHard", map(&kubelet.eviction_hard));
    put("evictionSoft", map(&kubelet.eviction_soft));
    put(
        "evictionSoftGracePeriod",
        map(&kubelet.eviction_soft_grace_period),
    );
    put(
        "evictionMaxPodGracePeriod",
        json!(kubelet.eviction_max_pod_grace_period),
    );
    put(
        "imageGCHighThresholdPercent",
        json!(kubelet.image_gc_high_threshold_percent),
    );
    put(
        "imageGCLowThresholdPercent",
        json!(kubelet.image_gc_low_threshold_percent),
    );
    put("cpuCFSQuota", json!(kubelet.cpu_cfs_quota));
    if !node.taints.is_empty() {
        let taints: Vec<Value> = node
            .taints
            .iter()
            .map(|t| {
                let mut taint = json!({"key": t.key, "effect": t.effect});
                if let Some(value) = &t.value {
                    taint["value"] = json!(value);
                }
                taint
            })
            .collect();
        put("registerWithTaints", json!(taints));
    }
    let mut kubelet_section = json!({});
    if !config.is_empty() {
        kubelet_section["config"] = Value::Object(config);
    }
    if !node.labels.is_empty() {
        kubelet_section["flags"] = json!([format!("--node-labels={}", node.labels_flag())]);
    }
    let mut document = json!({
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster.name,
                "apiServerEndpoint": cluster.endpoint,
                "certificateAuthority": cluster.ca_bundle,
                "cidr": cluster.service_cidr,
            },
            "kubelet": kubelet_section,
        }
    });
    if instance_store_raid0 {
        document["spec"]["instance"] = json!({"localStorage": {"strategy": "RAID0"}});
    }
    serde_yaml::to_string(&document).expect("a NodeConfig always serializes")
}

/// A map as a JSON object, or null (left out) when empty.
fn map<V: Serialize>(m: &BTreeMap<String, V>) -> Value {
    if m.is_empty() { Value::Null } else { json!(m) }
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
        assert_golden("al2023-bare.txt", &data);
    }

    #[test]
    fn kubelet_settings_go_into_the_config_and_a_users_script_comes_first() {
        let data = write(&kubelet(), Some("#!/bin/bash\necho hello\n")).unwrap();
        assert_golden("al2023-kubelet-and-script.txt", &data);
        let parts = mime::parse(&data).unwrap();
        assert_eq!(parts[0].media_type(), "text/x-shellscript");
        assert_eq!(parts[0].body, "#!/bin/bash\necho hello\n");
        assert_eq!(parts[1].media_type(), NODECONFIG_CONTENT_TYPE);
    }

    #[test]
    fn a_users_nodeconfig_and_mime_parts_are_kept_ahead_of_windlass_one() {
        let own = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  instance:\n    localStorage:\n      strategy: RAID0\n";
        let parts =
            mime::parse(&write(&KubeletConfiguration::default(), Some(own)).unwrap()).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].media_type(), NODECONFIG_CONTENT_TYPE);
        assert_eq!(parts[0].body, own);

        let document = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: text/cloud-config\n\nruncmd: []\n--//\nContent-Type: text/x-shellscript\n\necho two\n--//--\n";
        let parts =
            mime::parse(&write(&KubeletConfiguration::default(), Some(document)).unwrap()).unwrap();
        let types: Vec<String> = parts.iter().map(Part::media_type).collect();
        assert_eq!(
            types,
            [
                "text/cloud-config",
                "text/x-shellscript",
                NODECONFIG_CONTENT_TYPE
            ]
        );
    }

    #[test]
    fn raid0_asks_nodeadm_to_stripe_the_instance_store() {
        let (cluster, node) = (cluster(), node());
        let mut input = input(&cluster, None, &node, None);
        input.instance_store_raid0 = true;
        let data = super::user_data(&input, &KubeletConfiguration::default()).unwrap();
        let parts = mime::parse(&data).unwrap();
        let config: Value = serde_yaml::from_str(&parts[0].body).unwrap();
        assert_eq!(
            config["spec"]["instance"]["localStorage"]["strategy"],
            "RAID0"
        );
    }

    #[test]
    fn a_broken_mime_document_is_refused() {
        let error = write(
            &KubeletConfiguration::default(),
            Some("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\n\n--x\n\nbody\n"),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "userData's MIME document has no closing boundary --x--"
        );
    }
}
