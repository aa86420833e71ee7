//! AL2: cloud-init runs the parts of a MIME document in order, so the user's parts come first,
//! unchanged, and last a script that calls the image's `/etc/eks/bootstrap.sh` with the cluster
//! and the kubelet's flags. A user's lone script becomes a part of its own.

use super::mime::{self, Part};
use super::{BootstrapError, Input, cluster_dns, user_parts};
use crate::apis::ec2_node_class::KubeletConfiguration;

const SCRIPT_CONTENT_TYPE: &str = "text/x-shellscript; charset=\"us-ascii\"";

pub fn user_data(input: &Input, kubelet: &KubeletConfiguration) -> Result<String, BootstrapError> {
    let user = input.user;
    let mut parts = user_parts(user, SCRIPT_CONTENT_TYPE)?;
    parts.push(Part::new(SCRIPT_CONTENT_TYPE, script(input, kubelet)));
    Ok(mime::write(&parts)?)
}

fn script(input: &Input, kubelet: &KubeletConfiguration) -> String {
    let (cluster, node) = (input.cluster, input.node);
    let mut args: Vec<String> = vec![
        "/etc/eks/bootstrap.sh".into(),
        cluster.name.clone(),
        "--apiserver-endpoint".into(),
        cluster.endpoint.clone(),
        "--b64-cluster-ca".into(),
        cluster.ca_bundle.clone(),
    ];
    // bootstrap.sh derives the DNS address from the Service CIDR when none is given.
    if cluster.service_cidr.contains(':') {
        args.extend(["--ip-family".to_owned(), "ipv6".to_owned()]);
        args.extend([
            "--service-ipv6-cidr".to_owned(),
            cluster.service_cidr.clone(),
        ]);
    } else {
        args.extend([
            "--service-ipv4-cidr".to_owned(),
            cluster.service_cidr.clone(),
        ]);
    }
    let dns = cluster_dns(kubelet, cluster);
    if !dns.is_empty() {
        args.extend(["--dns-cluster-ip".to_owned(), dns.join(",")]);
    }
    if input.instance_store_raid0 {
        args.extend(["--local-disks".to_owned(), "raid0".to_owned()]);
    }
    let mut flags: Vec<String> = Vec::new();
    if !node.labels.is_empty() {
        flags.push(format!("--node-labels={}", node.labels_flag()));
    }
    if !node.taints.is_empty() {
        flags.push(format!("--register-with-taints={}", node.taints_flag()));
    }
    if let Some(max_pods) = kubelet.max_pods {
        // bootstrap.sh otherwise writes its own max pods over the flag.
        args.extend(["--use-max-pods".to_owned(), "false".to_owned()]);
        flags.push(format!("--max-pods={max_pods}"));
    }
    let pairs = |m: &std::collections::BTreeMap<String, String>, separator: &str| {
        m.iter()
            .map(|(k, v)| format!("{k}{separator}{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let quantities = |m: &std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", v.0))
            .collect::<Vec<_>>()
            .join(",")
    };
    if let Some(per_core) = kubelet.pods_per_core {
        flags.push(format!("--pods-per-core={per_core}"));
    }
    if !kubelet.system_reserved.is_empty() {
        flags.push(format!(
            "--system-reserved={}",
            quantities(&kubelet.system_reserved)
        ));
    }
    if !kubelet.kube_reserved.is_empty() {
        flags.push(format!(
            "--kube-reserved={}",
            quantities(&kubelet.kube_reserved)
        ));
    }
    if !kubelet.eviction_hard.is_empty() {
        flags.push(format!(
            "--eviction-hard={}",
            pairs(&kubelet.eviction_hard, "<")
        ));
    }
    if !kubelet.eviction_soft.is_empty() {
        flags.push(format!(
            "--eviction-soft={}",
            pairs(&kubelet.eviction_soft, "<")
        ));
    }
    if !kubelet.eviction_soft_grace_period.is_empty() {
        flags.push(format!(
            "--eviction-soft-grace-period={}",
            pairs(&kubelet.eviction_soft_grace_period, "=")
        ));
    }
    if let Some(seconds) = kubelet.eviction_max_pod_grace_period {
        flags.push(format!("--eviction-max-pod-grace-period={seconds}"));
    }
    if let Some(percent) = kubelet.image_gc_high_threshold_percent {
        flags.push(format!("--image-gc-high-threshold={percent}"));
    }
    if let Some(percent) = kubelet.image_gc_low_threshold_percent {
        flags.push(format!("--image-gc-low-threshold={percent}"));
    }
    if let Some(enforced) = kubelet.cpu_cfs_quota {
        flags.push(format!("--cpu-cfs-quota={enforced}"));
    }
    if !flags.is_empty() {
        args.extend(["--kubelet-extra-args".to_owned(), flags.join(" ")]);
    }
    let command = shlex::try_join(args.iter().map(String::as_str))
        .expect("bootstrap arguments hold no NUL byte");
    format!("#!/bin/bash -xe\n{command}\n")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_golden, kubelet};
    use super::*;

    fn write(kubelet: &KubeletConfiguration, user: Option<&str>) -> Result<String, BootstrapError> {
        super::super::tests::write(super::user_data, kubelet, user)
    }

    #[test]
    fn a_bare_class_calls_bootstrap_sh_with_the_cluster_labels_and_taints() {
        let data = write(&KubeletConfiguration::default(), None).unwrap();
        assert_golden("al2-bare.txt", &data);
    }

    #[test]
    fn kubelet_settings_become_flags_and_the_users_script_runs_first() {
        let data = write(&kubelet(), Some("#!/bin/bash\necho hello\n")).unwrap();
        assert_golden("al2-kubelet-and-script.txt", &data);
        let parts = mime::parse(&data).unwrap();
        assert_eq!(parts[0].body, "#!/bin/bash\necho hello\n");
        let words = shlex::split(parts[1].body.lines().nth(1).unwrap()).unwrap();
        let extra = &words[words
            .iter()
            .position(|w| w == "--kubelet-extra-args")
            .unwrap()
            + 1];
        assert!(extra.contains("--max-pods=42"), "{extra}");
        assert!(
            extra.contains("--eviction-hard=memory.available<5%"),
            "{extra}"
        );
        assert!(words.windows(2).any(|w| w == ["--use-max-pods", "false"]));
    }
}
