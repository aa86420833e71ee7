//! Windlass: SQS-driven workload autoscaling (KEDA semantics) and just-in-time EC2 nodes
//! (Karpenter semantics) in one Kubernetes controller.

pub mod apis;
pub mod aws;
pub mod cli;
pub mod cloud;
pub mod convert;
pub mod crdgen;
pub mod disruption;
pub mod error;
pub mod events;
pub mod failpoints;
pub mod jobs;
pub mod metrics;
pub mod nodeclaim;
pub mod nodepool;
pub mod operator;
pub mod provisioning;
pub mod scale_outs;
pub mod scaling;
pub mod scheduling;
pub mod simulate;
pub mod state;
pub mod status;
pub mod termination;
pub mod top;

pub use error::{Error, Result};
