//! Provisioning (Karpenter's provisioner): pods the kube-scheduler marked Unschedulable are
//! batched (`batcher`) and planned by the scheduling simulation, and the NodeClaims the plan
//! needs are created (`provisioner`). Launching them is `nodeclaim`'s work.

pub mod batcher;
pub mod provisioner;
