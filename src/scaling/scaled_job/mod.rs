//! ScaledJobs: KEDA's strategies for how many Jobs to create (`strategy`, pure), counting
//! finished Jobs into the status counters (`accounting`, pure), the watched Jobs and pods the
//! polls read (`store`), and the controller with its polling loop (`controller`).

pub mod accounting;
pub mod controller;
pub mod store;
pub mod strategy;

pub use controller::run;
