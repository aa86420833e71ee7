//! The workload side (KEDA semantics): the arithmetic that turns trigger readings into replicas
//! and Jobs. Pure; the polling loops and executors that act on it live beside it.

pub mod jobs;
pub mod replicas;
