//! EC2NodeClass: the AWS side of a node (subnets, security groups, AMI, IAM role, user data,
//! volumes, instance metadata), in Karpenter v1's shape. Status holds what the selectors resolved to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use super::node_pool::NodeSelectorRequirementWithMinValues;
use super::schema::bounded_string_map;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "windlass.dev",
    version = "v1alpha1",
    kind = "EC2NodeClass",
    shortname = "ec2nc",
    category = "windlass",
    status = "EC2NodeClassStatus",
    derive = "PartialEq",
    doc = "AWS settings for the nodes of one or more NodePools (Karpenter EC2NodeClass semantics).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.role) != has(self.instanceProfile)").message("exactly one of role or instanceProfile must be set").field_path(".role"))]
#[x_kube(validation = Rule::new("has(self.amiFamily) || self.amiSelectorTerms.exists(t, has(t.alias))").message("amiFamily is required when no amiSelectorTerm has an alias").field_path(".amiFamily"))]
#[x_kube(validation = Rule::new("!self.amiSelectorTerms.exists(t, has(t.alias)) || self.amiSelectorTerms.size() == 1").message("an amiSelectorTerm with an alias must be the only term").field_path(".amiSelectorTerms"))]
#[x_kube(validation = Rule::new("self.blockDeviceMappings.filter(m, m.rootVolume).size() <= 1").message("at most one blockDeviceMapping may be the rootVolume").field_path(".blockDeviceMappings"))]
#[x_kube(validation = Rule::new("!self.tags.exists(k, k.startsWith('windlass.dev/') || k.startsWith('kubernetes.io/cluster/'))").message("tags under windlass.dev/ and kubernetes.io/cluster/ are set by Windlass").field_path(".tags"))]
#[x_kube(validation = Rule::new("!has(self.amiFamily) || self.amiFamily == 'Custom' || !self.amiSelectorTerms.exists(t, has(t.alias)) || self.amiSelectorTerms.exists(t, has(t.alias) && ((self.amiFamily == 'AL2023' && t.alias.startsWith('al2023@')) || (self.amiFamily == 'AL2' && t.alias.startsWith('al2@')) || (self.amiFamily == 'Bottlerocket' && t.alias.startsWith('bottlerocket@'))))").message("amiFamily must be the alias's family, or Custom, when both are set").field_path(".amiFamily"))]
#[x_kube(validation = Rule::new("!has(self.kubelet) || !has(self.kubelet.podsPerCore) || !((has(self.amiFamily) && self.amiFamily == 'Bottlerocket') || self.amiSelectorTerms.exists(t, has(t.alias) && t.alias.startsWith('bottlerocket@')))").message("Bottlerocket has no pods-per-core setting: kubelet.podsPerCore cannot be used with it").field_path(".kubelet.podsPerCore"))]
#[x_kube(validation = Rule::new("!has(self.instanceStorePolicy) || !has(self.amiFamily) || self.amiFamily != 'Custom'").message("instanceStorePolicy is written into the family's bootstrap, which amiFamily Custom leaves to userData").field_path(".instanceStorePolicy"))]
pub struct EC2NodeClassSpec {
    /// Subnets to launch into, by tags or id; one per zone is used.
    #[schemars(length(min = 1, max = 30))]
    pub subnet_selector_terms: Vec<SubnetSelectorTerm>,
    /// Security groups for the nodes, by tags, id or name.
    #[schemars(length(min = 1, max = 30))]
    pub security_group_selector_terms: Vec<SecurityGroupSelectorTerm>,
    /// Images, by alias (`al2023@latest`, resolved through SSM parameters), id, name or tags.
    #[schemars(length(min = 1, max = 30))]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// The image family, which decides how the node is bootstrapped; the alias's family when
    /// an amiSelectorTerm has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami_family: Option<AmiFamily>,
    /// User data merged with the family's bootstrap: AL2 and AL2023 keep its MIME parts (or
    /// script) ahead of Windlass' part, Bottlerocket its TOML settings under Windlass'; with
    /// `Custom` it is the whole user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// An IAM role; Windlass manages an instance profile for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub role: Option<String>,
    /// An existing instance profile, instead of role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub instance_profile: Option<String>,
    /// Tags for instances, volumes and launch templates (EC2 allows 50, values up to 256).
    #[serde(default)]
    #[schemars(schema_with = "bounded_string_map::<50, 256>")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletConfiguration>,
    #[serde(default)]
    #[schemars(length(max = 50))]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_store_policy: Option<InstanceStorePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_monitoring: Option<bool>,
    #[serde(
        default,
        rename = "associatePublicIPAddress",
        skip_serializing_if = "Option::is_none"
    )]
    pub associate_public_ip_address: Option<bool>,
    #[serde(default)]
    pub metadata_options: MetadataOptions,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.id) != (has(self.tags) && self.tags.size() > 0)").message("a subnet term selects by exactly one of id or tags"))]
pub struct SubnetSelectorTerm {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^subnet-[0-9a-z]+$"))]
    pub id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.id) ? 1 : 0) + (has(self.name) ? 1 : 0) + (has(self.tags) && self.tags.size() > 0 ? 1 : 0) == 1").message("a security group term selects by exactly one of id, name or tags"))]
pub struct SecurityGroupSelectorTerm {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^sg-[0-9a-z]+$"))]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.alias) || (!has(self.id) && !has(self.name) && !has(self.owner) && !has(self.ssmParameter) && !has(self.tags))").message("alias cannot be combined with other selectors").field_path(".alias"))]
#[x_kube(validation = Rule::new("has(self.alias) || has(self.id) || has(self.name) || has(self.ssmParameter) || has(self.tags) && self.tags.size() > 0").message("an amiSelectorTerm needs alias, id, name, ssmParameter or tags"))]
pub struct AmiSelectorTerm {
    /// `family@version`, e.g. `al2023@latest` or `bottlerocket@v1.20.0` (Windows aliases are
    /// refused: Windlass has no Windows bootstrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(al2|al2023|bottlerocket)@.+$"))]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ami-[0-9a-z]+$"))]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The AMI owner account or alias (`self`, `amazon`), with name or tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// An SSM parameter whose value is an AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
/// How a node of the family is bootstrapped. Windows is refused: Windlass writes no Windows
/// bootstrap yet. `Custom` launches with `userData` as it stands.
pub enum AmiFamily {
    AL2,
    AL2023,
    Bottlerocket,
    Custom,
}

/// Kubelet settings written into the family's bootstrap; they also decide what the simulation
/// and the NodeClaim's status count as allocatable (with `Custom`, only that: the user data
/// must tell the kubelet the same).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.imageGCHighThresholdPercent) || !has(self.imageGCLowThresholdPercent) || self.imageGCHighThresholdPercent > self.imageGCLowThresholdPercent").message("imageGCHighThresholdPercent must be greater than imageGCLowThresholdPercent"))]
#[x_kube(validation = Rule::new("!has(self.evictionSoft) || self.evictionSoft.all(k, has(self.evictionSoftGracePeriod) && k in self.evictionSoftGracePeriod)").message("each evictionSoft signal needs an evictionSoftGracePeriod: the kubelet does not start without one").field_path(".evictionSoft"))]
pub struct KubeletConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_pods: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub pods_per_core: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i32>,
    #[serde(
        default,
        rename = "imageGCHighThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_high_threshold_percent: Option<i32>,
    #[serde(
        default,
        rename = "imageGCLowThresholdPercent",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 100))]
    pub image_gc_low_threshold_percent: Option<i32>,
    #[serde(
        default,
        rename = "cpuCFSQuota",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_cfs_quota: Option<bool>,
    #[serde(default, rename = "clusterDNS", skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDeviceMapping {
    /// e.g. `/dev/xvda`.
    #[schemars(length(min = 1))]
    pub device_name: String,
    pub ebs: BlockDevice,
    /// This volume is the root volume (the image's own device is replaced).
    #[serde(default)]
    pub root_volume: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i64>,
    #[serde(default, rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(
        default,
        rename = "snapshotID",
        skip_serializing_if = "Option::is_none"
    )]
    pub snapshot_id: Option<String>,
    /// MiB/s, gp3 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 2000))]
    pub throughput: Option<i64>,
    /// Size as a quantity, e.g. `20Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Standard,
    Io1,
    Io2,
    Gp2,
    Sc1,
    St1,
    Gp3,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum InstanceStorePolicy {
    /// Combine local NVMe disks into one RAID0 volume for the kubelet and containers.
    RAID0,
}

/// Instance metadata service settings; the defaults are IMDSv2 only, one hop.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    #[serde(default = "default_enabled")]
    pub http_endpoint: Toggle,
    #[serde(default = "default_disabled", rename = "httpProtocolIPv6")]
    pub http_protocol_ipv6: Toggle,
    #[serde(default = "default_hop_limit")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: i32,
    #[serde(default = "default_http_tokens")]
    pub http_tokens: HttpTokens,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_endpoint: default_enabled(),
            http_protocol_ipv6: default_disabled(),
            http_put_response_hop_limit: default_hop_limit(),
            http_tokens: default_http_tokens(),
        }
    }
}

fn default_enabled() -> Toggle {
    Toggle::Enabled
}

fn default_disabled() -> Toggle {
    Toggle::Disabled
}

fn default_hop_limit() -> i32 {
    1
}

fn default_http_tokens() -> HttpTokens {
    HttpTokens::Required
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    Enabled,
    Disabled,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    Required,
    Optional,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResolvedSubnet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<ResolvedSecurityGroup>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<ResolvedAmi>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSubnet {
    pub id: String,
    pub zone: String,
    #[serde(default, rename = "zoneID", skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedSecurityGroup {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An image and the node requirements (architecture, ...) it is valid for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAmi {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
}
