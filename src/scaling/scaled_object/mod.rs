//! ScaledObjects: the HPA arithmetic and behavior policies (`replicas`, pure), the
//! scalingModifiers formula (`modifiers`, pure), who owns a target (`ownership`, pure) and the
//! controller with its polling loop (`controller`).

pub mod controller;
pub mod modifiers;
pub mod ownership;
pub mod replicas;

pub use controller::run;
