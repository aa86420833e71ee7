//! TriggerAuthentication and ClusterTriggerAuthentication: where a trigger's AWS credentials come
//! from (pod identity, Secrets, or the target's environment). The cluster-scoped kind reads its
//! Secrets from the controller's namespace. Status lists the ScaledObjects and ScaledJobs that
//! use each one and whether their credentials resolved.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "TriggerAuthentication",
    namespaced,
    shortname = "ta",
    category = "windlass",
    status = "TriggerAuthenticationStatus",
    derive = "PartialEq",
    doc = "Credentials for the triggers of ScaledObjects and ScaledJobs in one namespace.",
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        json_path = ".status.scaledobjects",
        priority = 1
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        json_path = ".status.scaledjobs",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_identity: Option<PodIdentity>,
    /// Parameters read from keys of Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_target_ref: Vec<SecretTargetRef>,
    /// Parameters read from the scale target's container environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvTargetRef>,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "ClusterTriggerAuthentication",
    shortname = "cta",
    category = "windlass",
    status = "TriggerAuthenticationStatus",
    derive = "PartialEq",
    doc = "Credentials for triggers in any namespace; Secrets are read from the controller's namespace.",
    printcolumn(
        name = "Provider",
        type_ = "string",
        json_path = ".spec.podIdentity.provider"
    ),
    printcolumn(
        name = "ScaledObjects",
        type_ = "string",
        json_path = ".status.scaledobjects",
        priority = 1
    ),
    printcolumn(
        name = "ScaledJobs",
        type_ = "string",
        json_path = ".status.scaledjobs",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterTriggerAuthenticationSpec {
    #[serde(flatten)]
    pub authentication: TriggerAuthenticationSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.roleArn) || self.identityOwner != 'workload'").message("roleArn cannot be combined with identityOwner workload: the workload's own role is used").field_path(".roleArn"))]
#[x_kube(validation = Rule::new("!has(self.externalID) || has(self.roleArn)").message("externalID needs roleArn").field_path(".externalID"))]
#[x_kube(validation = Rule::new("self.provider != 'none' || !has(self.roleArn)").message("roleArn needs provider aws or aws-eks-pod-identity").field_path(".roleArn"))]
pub struct PodIdentity {
    pub provider: PodIdentityProvider,
    /// A role to assume on top of the base identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,
    /// The external ID the role's trust policy requires.
    #[serde(
        default,
        rename = "externalID",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// Whose identity is the base: the controller's (`keda`, KEDA's name for the operator) or the
    /// scale target's service account (`workload`).
    #[serde(default)]
    pub identity_owner: IdentityOwner,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodIdentityProvider {
    /// No pod identity; credentials come from Secrets or env.
    #[serde(rename = "none")]
    None,
    /// IAM Roles for Service Accounts (web identity), as KEDA's `aws` provider.
    #[serde(rename = "aws")]
    Aws,
    /// EKS Pod Identity associations.
    #[serde(rename = "aws-eks-pod-identity")]
    AwsEksPodIdentity,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum IdentityOwner {
    #[default]
    Keda,
    Workload,
}

/// The AWS authentication parameters the SQS trigger reads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AwsAuthParameter {
    #[serde(rename = "awsAccessKeyID")]
    AccessKeyId,
    #[serde(rename = "awsSecretAccessKey")]
    SecretAccessKey,
    #[serde(rename = "awsSessionToken")]
    SessionToken,
    #[serde(rename = "awsRoleArn")]
    RoleArn,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTargetRef {
    pub parameter: AwsAuthParameter,
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvTargetRef {
    pub parameter: AwsAuthParameter,
    /// The environment variable's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The container to read; the scale target's first container if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAuthenticationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The ScaledObjects using it, comma-separated and sorted (KEDA's `status.scaledobjects`);
    /// `namespace/name` on a ClusterTriggerAuthentication.
    #[serde(
        default,
        rename = "scaledobjects",
        skip_serializing_if = "String::is_empty"
    )]
    pub scaled_objects: String,
    /// The ScaledJobs using it, as `scaledobjects` (KEDA's `status.scaledjobs`).
    #[serde(
        default,
        rename = "scaledjobs",
        skip_serializing_if = "String::is_empty"
    )]
    pub scaled_jobs: String,
    /// Each object using it and whether its credentials resolved. Each install writes the
    /// entries of the namespaces it watches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "namespace", "name"]))]
    pub users: Vec<AuthenticationUser>,
}

/// A ScaledObject or ScaledJob whose triggers take their credentials from the authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationUser {
    pub kind: UserKind,
    pub namespace: String,
    pub name: String,
    /// Whether the credentials resolved for it when its triggers were last set up.
    pub resolved: bool,
    /// Why they did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum UserKind {
    ScaledObject,
    ScaledJob,
}
