//! Provisioning against the real cluster and moto, each test with a NodePool of its own: pods
//! the scheduler marks Unschedulable become NodeClaims sized for them, shaped by their
//! constraints and held within the NodePool's limits; a NodeClaim launches an instance through
//! CreateFleet, falling back when an offering is out of capacity, and its Node registers and
//! runs the pods; deleting the NodeClaim or its Node terminates the instance and removes both;
//! a restart mid-launch launches nothing twice; a GPU pod gets a GPU type within a GPU limit;
//! a pod's zonal volume pins its NodeClaim to that zone; a pool that cannot launch says
//! why, beside a healthy one that launches; and a scale-out's nodes are launched before its
//! pods are pending.

pub mod ahead;
mod bootstrap;
mod capacity;
mod constraints;
mod devices;
mod end_to_end;
mod failover;
pub mod fixture;
mod node_deletion;
mod reasons;
mod restart;
mod unworkable;
mod volumes;
