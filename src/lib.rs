//! Windlass: SQS-driven workload autoscaling (KEDA semantics) and just-in-time EC2 nodes
//! (Karpenter semantics) in one Kubernetes controller.

pub mod apis;
pub mod cli;
pub mod cloud;
pub mod crdgen;
pub mod error;
pub mod events;
pub mod jobs;
pub mod metrics;
pub mod provisioning;
pub mod run;
pub mod scaling;
pub mod server;
pub mod simulate;
pub mod state;
pub mod telemetry;

pub use error::{Error, Result};
