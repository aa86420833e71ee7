//! The cloud side of node provisioning: the AWS calls (`aws`), and the tags that mark what
//! Windlass launched, shared by the launcher, garbage collection and the test stack's node
//! registrar.

pub mod aws;

/// The cluster an instance (or launch template) belongs to.
pub const CLUSTER_TAG: &str = "windlass.dev/cluster";
/// The NodePool an instance was launched for.
pub const NODEPOOL_TAG: &str = "windlass.dev/nodepool";
/// The NodeClaim an instance was launched for.
pub const NODECLAIM_TAG: &str = "windlass.dev/nodeclaim";
/// Names the EC2NodeClass on launch templates and the volumes they create.
pub const NODECLASS_TAG: &str = "windlass.dev/ec2nodeclass";

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
