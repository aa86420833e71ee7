//! The NodeClaim lifecycle: launch through CreateFleet, registration, initialization,
//! liveness, and termination on delete.

pub mod controller;

pub use controller::{NodeClaims, run};
