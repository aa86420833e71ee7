//! The operator process: wiring every controller together (`run`), the probe and metrics
//! servers (`server`) and logging (`telemetry`).

pub mod run;
pub mod server;
pub mod telemetry;
