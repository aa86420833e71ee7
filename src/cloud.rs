//! The boundary between the node controllers and the cloud they launch into, as Karpenter's
//! CloudProvider: the provisioner asks it for instance types, the NodeClaim controller asks it
//! to create, find and delete the instance behind a NodeClaim. `aws::AwsCloud` is the only
//! implementation Windlass runs; `cloud::fake` is an in-memory one for the controllers' unit
//! tests.

use std::future::Future;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_claim::NodeClaim;
use crate::scheduling::instance_types::{InstanceType, TypeFacts};

/// An instance launched for a NodeClaim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// What the kubelet registers as the Node's `spec.providerID`.
    pub provider_id: String,
    /// The NodeClaim it was launched for, as its tags say.
    pub claim: Option<String>,
    pub instance_type: String,
    pub zone: String,
    pub image_id: Option<String>,
    /// Where it was launched: drift compares them with what its EC2NodeClass resolves now.
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
}

/// What `create` launched (or found already launched) for a NodeClaim.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    pub instance: Instance,
    pub capacity_type: String,
    /// Shape, Kubernetes architecture and hardware of its instance type, when the cloud
    /// reports them.
    pub facts: Option<TypeFacts>,
}

/// A cloud API call that failed, as one readable line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message}")]
pub struct CloudError {
    pub call: &'static str,
    /// The service's error code, when it answered with one (`InvalidSubnetID.NotFound`).
    pub code: Option<String>,
    pub message: String,
}

/// Why `create` launched nothing. Each but `Api` is the NodeClaim's Launched condition; `Api`
/// is a failed call, retried.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("EC2NodeClass {0} is missing or not Ready")]
    NodeClassNotReady(String),
    /// What the node's bootstrap must name (the cluster's endpoint, CA, Service CIDR) is not
    /// known: the flags leave it out and the cloud could not say.
    #[error("cannot tell the node which cluster to join: {0}")]
    ClusterUnknown(CloudError),
    /// The NodeClaim and its node class leave nothing to ask the cloud for.
    #[error(transparent)]
    NoLaunchOption(Box<dyn std::error::Error + Send + Sync>),
    /// The cloud was asked and launched nothing: out of capacity, or it refused every option.
    #[error("{0}")]
    LaunchedNothing(String),
    /// A subnet, security group or image the node class resolved to is gone from the cloud:
    /// its status is out of date until it is resolved again.
    #[error("EC2NodeClass {class} resolved to something that is gone: {cause}")]
    NodeClassOutdated { class: String, cause: String },
    #[error(transparent)]
    Api(#[from] CloudError),
}

impl CreateError {
    /// The Launched condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            CreateError::NodeClassNotReady(_) => "NodeClassNotReady",
            CreateError::ClusterUnknown(_) => "ClusterUnknown",
            CreateError::NoLaunchOption(_) => "NoLaunchOption",
            CreateError::LaunchedNothing(_) => "LaunchFailed",
            CreateError::NodeClassOutdated { .. } => "NodeClassOutdated",
            CreateError::Api(_) => "CloudError",
        }
    }
}

pub trait CloudProvider: Send + Sync + 'static {
    /// Launches one instance for `claim` from its Ready node class, or returns the one already
    /// launched for it: calling it again for the same NodeClaim never launches a second.
    fn create(
        &self,
        claim: &NodeClaim,
        class: &EC2NodeClass,
    ) -> impl Future<Output = Result<Launched, CreateError>> + Send;

    /// The pending or running instance launched for the NodeClaim named `claim`, if any.
    fn get(&self, claim: &str)
    -> impl Future<Output = Result<Option<Instance>, CloudError>> + Send;

    /// Every pending or running instance this install launched.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Terminates the instance behind `provider_id`; one already gone is not an error.
    fn delete(&self, provider_id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Every instance type the cloud offers, each offering marked available or not (one that
    /// just ran out of capacity is not).
    fn instance_types(&self) -> impl Future<Output = Result<Vec<InstanceType>, CloudError>> + Send;
}

#[cfg(test)]
pub mod fake;
