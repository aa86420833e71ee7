//! ScaledObjects: the HPA arithmetic and behavior policies (`replicas`, pure) and the
//! controller with its polling loop (`controller`).

pub mod controller;
pub mod replicas;

pub use controller::run;
