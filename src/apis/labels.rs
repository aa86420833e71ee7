//! Every label, annotation, tag and finalizer key Windlass reads or writes, in one place, with
//! the well-known Kubernetes labels the node side uses beside them.

/// Label naming the NodePool a node belongs to (Karpenter's `karpenter.sh/nodepool`); also a
/// tag on the instances launched for the pool.
pub const NODEPOOL_LABEL: &str = "windlass.dev/nodepool";
/// Label for `spot` / `on-demand` (Karpenter's `karpenter.sh/capacity-type`).
pub const CAPACITY_TYPE_LABEL: &str = "windlass.dev/capacity-type";
pub const INSTANCE_FAMILY_LABEL: &str = "windlass.dev/instance-family";
pub const INSTANCE_CPU_LABEL: &str = "windlass.dev/instance-cpu";
pub const INSTANCE_MEMORY_LABEL: &str = "windlass.dev/instance-memory";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const ARCH_LABEL: &str = "kubernetes.io/arch";
pub const OS_LABEL: &str = "kubernetes.io/os";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Zone keys a volume's topology may name instead of `topology.kubernetes.io/zone`: the EBS CSI
/// driver's, and the legacy beta label of in-tree EBS volumes. Read as the zone.
pub const VOLUME_ZONE_ALIASES: [&str; 2] = [
    "topology.ebs.csi.aws.com/zone",
    "failure-domain.beta.kubernetes.io/zone",
];
/// Region keys a volume's topology may name (in-tree EBS volumes name both zone and region).
/// Every node Windlass launches is in the one region it launches in, so they narrow nothing.
pub const VOLUME_REGION_KEYS: [&str; 2] = [
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];
/// The StorageClass annotations that make a class the default, the GA key and the beta one.
pub const DEFAULT_STORAGE_CLASS_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// Karpenter's labels for what a node's instance type is, which Windlass sets too, so that a
/// NodePool or pod written for Karpenter keeps its meaning.
pub const INSTANCE_CATEGORY_LABEL: &str = "karpenter.k8s.aws/instance-category";
pub const INSTANCE_GENERATION_LABEL: &str = "karpenter.k8s.aws/instance-generation";
pub const INSTANCE_SIZE_LABEL: &str = "karpenter.k8s.aws/instance-size";
pub const INSTANCE_GPU_COUNT_LABEL: &str = "karpenter.k8s.aws/instance-gpu-count";
pub const INSTANCE_GPU_NAME_LABEL: &str = "karpenter.k8s.aws/instance-gpu-name";
pub const INSTANCE_GPU_MANUFACTURER_LABEL: &str = "karpenter.k8s.aws/instance-gpu-manufacturer";
/// Memory of one GPU, MiB.
pub const INSTANCE_GPU_MEMORY_LABEL: &str = "karpenter.k8s.aws/instance-gpu-memory";
/// Total NVMe instance store, GiB.
pub const INSTANCE_LOCAL_NVME_LABEL: &str = "karpenter.k8s.aws/instance-local-nvme";
/// Baseline network bandwidth, Mbit/s.
pub const INSTANCE_NETWORK_BANDWIDTH_LABEL: &str = "karpenter.k8s.aws/instance-network-bandwidth";
pub const INSTANCE_HYPERVISOR_LABEL: &str = "karpenter.k8s.aws/instance-hypervisor";
pub const INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL: &str =
    "karpenter.k8s.aws/instance-encryption-in-transit-supported";

/// Karpenter's key for each label that Windlass also has under a `windlass.dev/` key. Windlass
/// reads either key as the same requirement and puts both on its Nodes.
pub const KARPENTER_ALIASES: [(&str, &str); 5] = [
    (NODEPOOL_LABEL, "karpenter.sh/nodepool"),
    (CAPACITY_TYPE_LABEL, "karpenter.sh/capacity-type"),
    (INSTANCE_FAMILY_LABEL, "karpenter.k8s.aws/instance-family"),
    (INSTANCE_CPU_LABEL, "karpenter.k8s.aws/instance-cpu"),
    (INSTANCE_MEMORY_LABEL, "karpenter.k8s.aws/instance-memory"),
];

/// The key Windlass reads `key` as: the `windlass.dev/` key for a Karpenter alias, else `key`.
pub fn canonical(key: &str) -> &str {
    // Read on every requirement lookup: most keys are not Karpenter's.
    if !key.starts_with("karpenter.") {
        return key;
    }
    KARPENTER_ALIASES
        .iter()
        .find(|(_, alias)| *alias == key)
        .map_or(key, |(own, _)| own)
}

/// Adds Karpenter's key beside each `windlass.dev/` key that has one, for labels a Node carries.
pub fn add_karpenter_aliases(labels: &mut std::collections::BTreeMap<String, String>) {
    for (own, alias) in KARPENTER_ALIASES {
        if let Some(value) = labels.get(own).cloned() {
            labels.insert(alias.to_owned(), value);
        }
    }
}

/// Adds the `windlass.dev/` key beside each Karpenter alias a Node carries without it (a node
/// Karpenter launched, say), so the simulation reads its labels by one key.
pub fn add_own_keys(labels: &mut std::collections::BTreeMap<String, String>) {
    for (own, alias) in KARPENTER_ALIASES {
        if !labels.contains_key(own)
            && let Some(value) = labels.get(alias).cloned()
        {
            labels.insert(own.to_owned(), value);
        }
    }
}

/// The install (`--cluster-name`) a NodeClaim belongs to, each install handling only its own;
/// also the tag on every instance and launch template it makes.
pub const CLUSTER_LABEL: &str = "windlass.dev/cluster";
/// Tags an instance with the NodeClaim it was launched for.
pub const NODECLAIM_TAG: &str = "windlass.dev/nodeclaim";
/// Names the EC2NodeClass on launch templates and the volumes they create.
pub const NODECLASS_TAG: &str = "windlass.dev/ec2nodeclass";
/// Set on a Node once Windlass has synced its NodeClaim's labels and taints onto it.
pub const REGISTERED_LABEL: &str = "windlass.dev/registered";
/// The NoExecute taint every kubelet Windlass bootstraps registers its Node with, taken off
/// when the NodeClaim records the Node (Karpenter's `karpenter.sh/unregistered`): no pod binds
/// to a Node its NodeClaim does not yet know, where the provisioner would see the claim's room
/// as free beside a Node with pods on it.
pub const UNREGISTERED_TAINT: &str = "windlass.dev/unregistered";
/// On NodeClaims and their Nodes: the instance is terminated before they go.
pub const TERMINATION_FINALIZER: &str = "windlass.dev/termination";
/// Pods with this annotation set to `"true"` block voluntary disruption of their node.
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "windlass.dev/do-not-disrupt";
/// Karpenter's annotation of the same meaning, honoured so ported workloads keep their
/// protection.
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The NoSchedule taint on a node being drained.
pub const DISRUPTED_TAINT: &str = "windlass.dev/disrupted";
/// On NodeClaims: the hash of the NodePool template they were made from (drift).
pub const NODEPOOL_HASH_ANNOTATION: &str = "windlass.dev/nodepool-hash";
/// On NodeClaims: the hash of the EC2NodeClass spec they were made from (drift).
pub const NODECLASS_HASH_ANNOTATION: &str = "windlass.dev/ec2nodeclass-hash";
/// On NodeClaims launched to take the pods of one being disrupted: that one's name.
pub const REPLACES_ANNOTATION: &str = "windlass.dev/replaces";
/// On a NodeClaim being replaced: why (`drifted`, `expired`), until it is deleted.
pub const DISRUPTION_ANNOTATION: &str = "windlass.dev/disruption";
/// On a NodeClaim being replaced: its replacements' names, comma-separated.
pub const REPLACED_BY_ANNOTATION: &str = "windlass.dev/replaced-by";
/// `"false"` on a ScaledObject or ScaledJob: its scale-outs launch no capacity ahead of its
/// pods; they wait to be pending like any other pod.
pub const DEMAND_AWARE_ANNOTATION: &str = "windlass.dev/demand-aware";

/// On ScaledObjects: the target's replicas are restored before the object goes.
pub const SCALED_OBJECT_FINALIZER: &str = "windlass.dev/scaledobject";
/// Labels every Job (and its pods) with the ScaledJob that made it.
pub const SCALED_JOB_LABEL: &str = "windlass.dev/scaled-job";
/// The ScaledJob generation a Job was made from, for rollouts.
pub const SCALED_JOB_GENERATION_LABEL: &str = "windlass.dev/scaled-job-generation";

/// Annotation prefix for the pause and activation switches (KEDA's `autoscaling.keda.sh/`).
pub const ANNOTATION_PREFIX: &str = "autoscaling.windlass.dev/";
/// `"true"` stops scaling and leaves the replicas where they are.
pub const PAUSED_ANNOTATION: &str = "autoscaling.windlass.dev/paused";
/// A replica count to hold while paused.
pub const PAUSED_REPLICAS_ANNOTATION: &str = "autoscaling.windlass.dev/paused-replicas";
/// `"true"` allows scaling out only.
pub const PAUSED_SCALE_IN_ANNOTATION: &str = "autoscaling.windlass.dev/paused-scale-in";
/// `"true"` allows scaling in only.
pub const PAUSED_SCALE_OUT_ANNOTATION: &str = "autoscaling.windlass.dev/paused-scale-out";
/// `"true"` treats the object as active whatever the triggers say.
pub const FORCE_ACTIVATION_ANNOTATION: &str = "autoscaling.windlass.dev/force-activation";
/// KEDA's prefix for the same switches: a manifest written for KEDA keeps its pause and
/// activation switches without `windlass convert`.
pub const KEDA_ANNOTATION_PREFIX: &str = "autoscaling.keda.sh/";

/// The value of the switch `key` (an `autoscaling.windlass.dev/` key), or else of KEDA's
/// spelling of it. Windlass's own key wins when both are set: it is the one written for
/// Windlass, so a KEDA annotation left over from a port cannot override it.
pub fn autoscaling_annotation<'a>(
    annotations: &'a std::collections::BTreeMap<String, String>,
    key: &str,
) -> Option<&'a String> {
    annotations.get(key).or_else(|| {
        let switch = key.strip_prefix(ANNOTATION_PREFIX)?;
        annotations.get(&format!("{KEDA_ANNOTATION_PREFIX}{switch}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn keda_switches_read_as_windlass_switches_and_windlass_wins_over_keda() {
        let keda = BTreeMap::from([
            ("autoscaling.keda.sh/paused".to_owned(), "true".to_owned()),
            (
                "autoscaling.keda.sh/paused-replicas".to_owned(),
                "2".to_owned(),
            ),
        ]);
        assert_eq!(
            autoscaling_annotation(&keda, PAUSED_ANNOTATION).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            autoscaling_annotation(&keda, PAUSED_SCALE_IN_ANNOTATION),
            None
        );
        let mut both = keda.clone();
        both.insert(PAUSED_REPLICAS_ANNOTATION.to_owned(), "5".to_owned());
        assert_eq!(
            autoscaling_annotation(&both, PAUSED_REPLICAS_ANNOTATION).map(String::as_str),
            Some("5")
        );
        assert_eq!(
            autoscaling_annotation(&keda, "windlass.dev/do-not-disrupt"),
            None,
            "only autoscaling switches have a KEDA spelling"
        );
    }

    #[test]
    fn karpenter_keys_read_as_windlass_keys_and_are_written_beside_them() {
        assert_eq!(canonical("karpenter.sh/capacity-type"), CAPACITY_TYPE_LABEL);
        assert_eq!(canonical("karpenter.sh/nodepool"), NODEPOOL_LABEL);
        assert_eq!(
            canonical("karpenter.k8s.aws/instance-family"),
            INSTANCE_FAMILY_LABEL
        );
        assert_eq!(
            canonical(INSTANCE_GPU_COUNT_LABEL),
            INSTANCE_GPU_COUNT_LABEL
        );
        assert_eq!(canonical("team"), "team");

        let mut labels = BTreeMap::from([
            (CAPACITY_TYPE_LABEL.to_owned(), "spot".to_owned()),
            ("team".to_owned(), "data".to_owned()),
        ]);
        add_karpenter_aliases(&mut labels);
        assert_eq!(labels["karpenter.sh/capacity-type"], "spot");
        assert_eq!(labels.len(), 3);

        let mut karpenters =
            BTreeMap::from([("karpenter.k8s.aws/instance-cpu".to_owned(), "4".to_owned())]);
        add_own_keys(&mut karpenters);
        assert_eq!(karpenters[INSTANCE_CPU_LABEL], "4");
    }
}
