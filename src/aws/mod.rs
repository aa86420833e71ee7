//! The only folder that knows AWS: the cloud boundary over EC2 (`cloud`), the SDK calls
//! (`client`) and their errors (`sdk_errors`), launch templates, fleet requests and what
//! a node's kubelet keeps back and writes to (`launch`), the nodes' user data per AMI family
//! (`bootstrap`) and the cluster it names (`cluster`), offerings that ran out of capacity
//! (`capacity`), the on-demand prices from the AWS Price List or bundled tables (`pricing`), the
//! EC2NodeClass controller (`nodeclass`) and the cleanup of launch templates no class uses
//! (`launch_templates`); every SDK client is built in `sdk_clients`;
//! plus the providerID format, shared with the test stack's node registrar.

pub mod bootstrap;
mod capacity;
pub mod client;
pub mod cloud;
pub mod cluster;
pub mod interruption;
mod launch;
pub mod launch_templates;
pub mod nodeclass;
pub mod pricing;
pub mod sdk_clients;
pub mod sdk_errors;

pub use client::{Aws, shape_of};
pub use cloud::AwsCloud;
pub use launch::kubelet_reservations;

use sha2::{Digest, Sha256};

/// The first `bytes` bytes of the SHA-256 of `data`, in hex: a stable short name part.
pub fn short_hash(data: &[u8], bytes: usize) -> String {
    Sha256::digest(data)[..bytes]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The providerID a kubelet on EC2 registers: `aws:///<zone>/<instance-id>`.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The instance id in an EC2 providerID, if it is one.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws:///")?;
    let (_zone, id) = rest.rsplit_once('/')?;
    id.starts_with("i-").then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_id_round_trips() {
        let id = provider_id("us-east-1a", "i-0abc");
        assert_eq!(id, "aws:///us-east-1a/i-0abc");
        assert_eq!(instance_id(&id), Some("i-0abc"));
        assert_eq!(instance_id("kwok://node-1"), None);
        assert_eq!(instance_id("aws:///us-east-1a/vol-1"), None);
    }
}
