//! The operator process: wiring every controller together (`run`), leader election among
//! replicas (`leader`), the probe and metrics servers (`server`) and logging (`telemetry`).

pub mod leader;
pub mod run;
pub mod server;
pub mod telemetry;
