//! NodePool status: capacity in use, node count and conditions.

pub mod status;

pub use status::{NodePools, run};
