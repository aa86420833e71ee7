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

/// The install (`--cluster-name`) a NodeClaim belongs to, each install handling only its own;
/// also the tag on every instance and launch template it makes.
pub const CLUSTER_LABEL: &str = "windlass.dev/cluster";
/// Tags an instance with the NodeClaim it was launched for.
pub const NODECLAIM_TAG: &str = "windlass.dev/nodeclaim";
/// Names the EC2NodeClass on launch templates and the volumes they create.
pub const NODECLASS_TAG: &str = "windlass.dev/ec2nodeclass";
/// Set on a Node once Windlass has synced its NodeClaim's labels and taints onto it.
pub const REGISTERED_LABEL: &str = "windlass.dev/registered";
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
