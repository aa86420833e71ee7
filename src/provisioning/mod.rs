//! Provisioning (Karpenter's provisioner): pods the kube-scheduler marked Unschedulable are
//! batched (`batcher`), the problem is built from the cluster (`problem`, pure), the scheduling
//! simulation plans it, and the NodeClaims the plan needs are built (`claims`, pure) and
//! created (`provisioner`). Launching them is `nodeclaim`'s work. A scale-out's demand is
//! planned at once, ahead of its pods being pending (`ahead`, pure).

pub mod ahead;
pub mod batcher;
pub mod claims;
pub mod problem;
pub mod provisioner;
