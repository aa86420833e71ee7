//! What one CreateFleet call for a NodeClaim asks for, without I/O: the launch template per
//! architecture (image, security groups, user data, instance profile, block devices, metadata
//! options, tags), overrides of every candidate type in one subnet per allowed zone, the
//! capacity type, the ClientToken and the tags.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use kube_quantity::ParsedQuantity;
use serde::Serialize;

use super::bootstrap::{self, BootstrapError, ClusterInfo, NodeSettings};
use crate::apis::ec2_node_class::{
    BlockDeviceMapping, EC2NodeClassSpec, EC2NodeClassStatus, HttpTokens, InstanceStorePolicy,
    MetadataOptions, ResolvedAmi, Toggle,
};
use crate::apis::labels::{
    CAPACITY_TYPE_LABEL, CLUSTER_LABEL, INSTANCE_TYPE_LABEL, NODECLAIM_TAG, NODECLASS_TAG,
    NODEPOOL_LABEL, ZONE_LABEL,
};
use crate::scheduling::instance_types::{
    InstanceType, KubeletReservations, ON_DEMAND, Offering, SPOT, Storage,
};
use crate::scheduling::requirements::Requirements;
use crate::scheduling::{LAUNCH_CANDIDATES, cheapest_candidates};

/// One launch template and the (instance type, subnet) pairs launched with it.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateConfig {
    pub template_name: String,
    pub template: TemplateData,
    pub overrides: Vec<(String, String)>,
}

/// What a launch template holds. Its name carries a hash of this, so a changed node class or
/// image gets a new template instead of launching with the old one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemplateData {
    pub image_id: String,
    pub security_groups: Vec<String>,
    pub user_data: Option<String>,
    pub instance_profile: Option<String>,
    pub volumes: Vec<Volume>,
    pub http_endpoint: bool,
    pub http_protocol_ipv6: bool,
    pub http_put_response_hop_limit: i32,
    pub http_tokens_required: bool,
    pub detailed_monitoring: bool,
    /// `associatePublicIPAddress`: set on the primary interface, which then holds the groups.
    pub associate_public_ip_address: Option<bool>,
    /// For the template itself and the volumes it creates.
    pub tags: BTreeMap<String, String>,
}

/// An EBS volume of the template, its size in GiB as EC2 takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub device_name: String,
    pub size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub delete_on_termination: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FleetRequest {
    /// The NodeClaim's UID and a hash of what is asked: a CreateFleet retried as it was
    /// launches nothing new, and one asking for other offerings (after some ran out of
    /// capacity) is a new request, not an `IdempotentParameterMismatch`.
    pub client_token: String,
    pub capacity_type: &'static str,
    pub configs: Vec<TemplateConfig>,
    pub tags: BTreeMap<String, String>,
}

/// What a launch template is made from: the class as it stands, the cluster its nodes join
/// and the labels and taints they register with (their NodePool's).
pub struct TemplateInput<'a> {
    pub cluster: &'a str,
    pub node_class: &'a str,
    pub spec: &'a EC2NodeClassSpec,
    pub status: &'a EC2NodeClassStatus,
    pub joins: &'a ClusterInfo,
    pub node: &'a NodeSettings,
}

impl LaunchInput<'_> {
    fn template_input(&self) -> TemplateInput<'_> {
        TemplateInput {
            cluster: self.cluster,
            node_class: self.node_class,
            spec: self.spec,
            status: self.status,
            joins: self.joins,
            node: self.node,
        }
    }
}

/// Everything a NodeClaim's launch needs to know.
pub struct LaunchInput<'a> {
    pub cluster: &'a str,
    pub node_class: &'a str,
    pub claim_name: &'a str,
    pub claim_uid: &'a str,
    pub requirements: &'a Requirements,
    pub labels: &'a BTreeMap<String, String>,
    pub joins: &'a ClusterInfo,
    /// The labels and taints the Node registers with.
    pub node: &'a NodeSettings,
    pub spec: &'a EC2NodeClassSpec,
    pub status: &'a EC2NodeClassStatus,
    /// The region's instance types, with the offerings that recently ran out of capacity
    /// marked unavailable.
    pub catalog: &'a [InstanceType],
}

/// The launch template of a node class for one architecture and content.
pub fn template_name(cluster: &str, node_class: &str, arch: &str, data: &TemplateData) -> String {
    let json = serde_json::to_vec(data).expect("template data always serializes");
    let hash = crate::aws::short_hash(&json, 8);
    format!("windlass-{cluster}-{node_class}-{arch}-{hash}")
}

/// The image of the class's resolved ones a node of `arch` launches from.
fn image_for<'a>(status: &'a EC2NodeClassStatus, arch: &str) -> Option<&'a ResolvedAmi> {
    status.amis.iter().find(|ami| {
        ami.requirements
            .iter()
            .all(|r| r.values.iter().any(|v| v == arch))
    })
}

/// The names of the launch templates the class launches from as it stands: one per
/// architecture it has an image for and set of node settings (one per NodePool) it serves.
pub fn current_templates<'a>(
    input: &TemplateInput,
    nodes: impl IntoIterator<Item = &'a NodeSettings>,
) -> BTreeSet<String> {
    nodes
        .into_iter()
        .flat_map(|node| {
            let input = TemplateInput { node, ..*input };
            ["amd64", "arm64"].into_iter().filter_map(move |arch| {
                let image = image_for(input.status, arch)?;
                let data = template_data(&input, &image.id).ok()?;
                Some(template_name(input.cluster, input.node_class, arch, &data))
            })
        })
        .collect()
}

/// Why a NodeClaim cannot be launched as it stands; shown on its Launched condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("the NodeClaim names no instance type")]
    NoInstanceType,
    #[error("no subnet of the EC2NodeClass is in an allowed zone")]
    NoSubnetInZone,
    #[error(
        "no candidate offering is available: every one lacks an AMI for its architecture or recently ran out of capacity"
    )]
    NoOffering,
    #[error("blockDeviceMappings[{index}].ebs.volumeSize {size:?} is not a size")]
    VolumeSize { index: usize, size: String },
    #[error(transparent)]
    UserData(#[from] BootstrapError),
}

/// The template for one image: the node class's settings, with Windlass' default root volume
/// (20 GiB gp3, encrypted) when it names no block devices.
pub fn template_data(input: &TemplateInput, image_id: &str) -> Result<TemplateData, LaunchError> {
    let spec = input.spec;
    let volumes = if spec.block_device_mappings.is_empty() {
        vec![Volume {
            device_name: "/dev/xvda".into(),
            size_gib: Some(20),
            volume_type: Some("gp3".into()),
            encrypted: Some(true),
            delete_on_termination: Some(true),
            ..Volume::default()
        }]
    } else {
        spec.block_device_mappings
            .iter()
            .enumerate()
            .map(|(index, mapping)| volume(index, mapping))
            .collect::<Result<_, _>>()?
    };
    let MetadataOptions {
        http_endpoint,
        http_protocol_ipv6,
        http_put_response_hop_limit,
        http_tokens,
    } = spec.metadata_options.clone();
    let mut tags = spec.tags.clone();
    tags.insert(CLUSTER_LABEL.into(), input.cluster.to_owned());
    tags.insert(NODECLASS_TAG.into(), input.node_class.to_owned());
    Ok(TemplateData {
        image_id: image_id.to_owned(),
        security_groups: input
            .status
            .security_groups
            .iter()
            .map(|g| g.id.clone())
            .collect(),
        user_data: bootstrap::user_data(
            bootstrap::family(spec),
            &bootstrap::Input {
                cluster: input.joins,
                kubelet: spec.kubelet.as_ref(),
                node: input.node,
                user: spec.user_data.as_deref(),
                instance_store_raid0: spec.instance_store_policy
                    == Some(InstanceStorePolicy::RAID0),
            },
        )?,
        instance_profile: input.status.instance_profile.clone(),
        volumes,
        http_endpoint: http_endpoint == Toggle::Enabled,
        http_protocol_ipv6: http_protocol_ipv6 == Toggle::Enabled,
        http_put_response_hop_limit,
        http_tokens_required: http_tokens == HttpTokens::Required,
        detailed_monitoring: spec.detailed_monitoring.unwrap_or(false),
        associate_public_ip_address: spec.associate_public_ip_address,
        tags,
    })
}

/// What a class's nodes' kubelets keep back from pods, and the filesystem they write to.
pub fn kubelet_reservations(spec: &EC2NodeClassSpec) -> KubeletReservations {
    KubeletReservations::of(spec.kubelet.as_ref(), storage(spec))
}

/// Where a class's nodes keep pods' ephemeral storage, as the kubelet will size it: the
/// instance store under RAID0 (on types that have one), else the volume marked `rootVolume`,
/// else Bottlerocket's data volume (`/dev/xvdb`), else `/dev/xvda`, else a Custom class's last
/// volume, else the default 20 GiB root volume. A volume without a size (or an invalid one,
/// which the launch refuses) counts as the default.
fn storage(spec: &EC2NodeClassSpec) -> Storage {
    let mappings = &spec.block_device_mappings;
    let family = bootstrap::family(spec);
    let on = |device: &str| mappings.iter().find(|m| m.device_name == device);
    let mapping = mappings
        .iter()
        .find(|m| m.root_volume)
        .or_else(|| {
            (family == bootstrap::Family::Bottlerocket)
                .then(|| on("/dev/xvdb"))
                .flatten()
        })
        .or_else(|| on("/dev/xvda"))
        .or_else(|| {
            (family == bootstrap::Family::Custom)
                .then(|| mappings.last())
                .flatten()
        });
    let root_volume = mapping
        .and_then(|m| volume(0, m).ok())
        .and_then(|v| v.size_gib)
        .map(|gib| i64::from(gib) << 30);
    Storage {
        root_volume,
        instance_store_raid0: spec.instance_store_policy == Some(InstanceStorePolicy::RAID0),
    }
}

fn volume(index: usize, mapping: &BlockDeviceMapping) -> Result<Volume, LaunchError> {
    let ebs = &mapping.ebs;
    let size_gib = match &ebs.volume_size {
        None => None,
        Some(quantity) => {
            let bytes = ParsedQuantity::try_from(quantity)
                .ok()
                .and_then(|q| q.to_bytes_f64())
                .filter(|bytes| *bytes > 0.0)
                .ok_or_else(|| LaunchError::VolumeSize {
                    index,
                    size: quantity.0.clone(),
                })?;
            Some((bytes / f64::from(1 << 30)).ceil() as i32)
        }
    };
    let volume_type = ebs.volume_type.map(|t| {
        serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    Ok(Volume {
        device_name: mapping.device_name.clone(),
        size_gib,
        volume_type,
        iops: ebs.iops.map(|v| v as i32),
        throughput: ebs.throughput.map(|v| v as i32),
        encrypted: ebs.encrypted,
        kms_key_id: ebs.kms_key_id.clone(),
        snapshot_id: ebs.snapshot_id.clone(),
        delete_on_termination: ebs.delete_on_termination,
    })
}

/// The CreateFleet call for a NodeClaim: spot when allowed and some candidate has a spot
/// offering left, else on-demand; of the claim's candidates, the `LAUNCH_CANDIDATES` cheapest
/// with an offering left in an allowed zone (keeping the claim's `minValues`), so a claim whose
/// cheapest types ran out of capacity launches from the next ones.
pub fn fleet_request(input: &LaunchInput) -> Result<FleetRequest, LaunchError> {
    let requirements = input.requirements;
    let Some(claimed) = requirements
        .get(INSTANCE_TYPE_LABEL)
        .and_then(|r| r.finite_values())
        .filter(|names| !names.is_empty())
    else {
        return Err(LaunchError::NoInstanceType);
    };
    let mut subnets: BTreeMap<&str, &str> = BTreeMap::new();
    for subnet in &input.status.subnets {
        if requirements.allows(ZONE_LABEL, &subnet.zone) {
            subnets
                .entry(subnet.zone.as_str())
                .or_insert(subnet.id.as_str());
        }
    }
    if subnets.is_empty() {
        return Err(LaunchError::NoSubnetInZone);
    }
    let mut capacity_types = Vec::new();
    if requirements.allows(CAPACITY_TYPE_LABEL, SPOT) {
        capacity_types.push(SPOT);
    }
    if requirements.allows(CAPACITY_TYPE_LABEL, ON_DEMAND) {
        capacity_types.push(ON_DEMAND);
    }
    for capacity_type in capacity_types {
        let ranked = ranked_types(input, claimed, &subnets, capacity_type);
        let offered = cheapest_candidates(&ranked, requirements, input.catalog, LAUNCH_CANDIDATES);
        let configs = configs_for(input, &offered, &subnets, capacity_type)?;
        if !configs.is_empty() {
            return Ok(request(input, capacity_type, configs));
        }
    }
    Err(LaunchError::NoOffering)
}

/// The catalog indices of the `claimed` types the class has an image for and with an available
/// `capacity_type` offering in one of the zones, by the price of the cheapest such offering; a
/// type with no known price last.
fn ranked_types(
    input: &LaunchInput,
    claimed: &BTreeSet<String>,
    subnets: &BTreeMap<&str, &str>,
    capacity_type: &str,
) -> Vec<usize> {
    let mut ranked: Vec<(usize, f64)> = input
        .catalog
        .iter()
        .enumerate()
        .filter(|(_, it)| claimed.contains(&it.name) && image_for(input.status, &it.arch).is_some())
        .filter_map(|(i, it)| {
            let mut open = it
                .offerings
                .iter()
                .filter(|o| is_open(o, capacity_type) && subnets.contains_key(o.zone.as_str()))
                .peekable();
            open.peek()?;
            let price = open.filter_map(|o| o.price).fold(f64::INFINITY, f64::min);
            Some((i, price))
        })
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
    ranked.into_iter().map(|(i, _)| i).collect()
}

/// Whether EC2 may launch the offering as `capacity_type`: it did not just run out.
fn is_open(offering: &Offering, capacity_type: &str) -> bool {
    offering.available && offering.capacity_type == capacity_type
}

/// One template config per architecture: each offered type in each zone it has an available
/// `capacity_type` offering in, through that zone's subnet.
fn configs_for(
    input: &LaunchInput,
    offered: &[usize],
    subnets: &BTreeMap<&str, &str>,
    capacity_type: &str,
) -> Result<Vec<TemplateConfig>, LaunchError> {
    let mut configs: BTreeMap<&str, TemplateConfig> = BTreeMap::new();
    for &i in offered {
        let instance_type = &input.catalog[i];
        let arch = instance_type.arch.as_str();
        let Some(image) = image_for(input.status, arch) else {
            continue;
        };
        for (zone, subnet) in subnets {
            let open = instance_type
                .offerings
                .iter()
                .any(|o| is_open(o, capacity_type) && o.zone == *zone);
            if !open {
                continue;
            }
            let config = match configs.entry(arch) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let template = template_data(&input.template_input(), &image.id)?;
                    entry.insert(TemplateConfig {
                        template_name: template_name(
                            input.cluster,
                            input.node_class,
                            arch,
                            &template,
                        ),
                        template,
                        overrides: Vec::new(),
                    })
                }
            };
            config
                .overrides
                .push((instance_type.name.clone(), (*subnet).to_owned()));
        }
    }
    Ok(configs.into_values().collect())
}

fn request(
    input: &LaunchInput,
    capacity_type: &'static str,
    configs: Vec<TemplateConfig>,
) -> FleetRequest {
    let mut tags = input.spec.tags.clone();
    tags.insert("Name".into(), input.claim_name.to_owned());
    tags.insert(CLUSTER_LABEL.into(), input.cluster.to_owned());
    tags.insert(
        format!("kubernetes.io/cluster/{}", input.cluster),
        "owned".into(),
    );
    tags.insert(NODECLAIM_TAG.into(), input.claim_name.to_owned());
    if let Some(pool) = input.labels.get(NODEPOOL_LABEL) {
        tags.insert(NODEPOOL_LABEL.into(), pool.clone());
    }
    // In name order: a retry after a fresh catalog read may rank the same offerings otherwise.
    let asked: BTreeSet<String> = configs
        .iter()
        .flat_map(|config| {
            config.overrides.iter().map(|(instance_type, subnet)| {
                format!("{} {instance_type}@{subnet}", config.template_name)
            })
        })
        .collect();
    let asked = format!(
        "{capacity_type} {}",
        asked.into_iter().collect::<Vec<_>>().join(",")
    );
    FleetRequest {
        client_token: format!(
            "{}-{}",
            input.claim_uid,
            crate::aws::short_hash(asked.as_bytes(), 8)
        ),
        capacity_type,
        configs,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use crate::apis::ec2_node_class::{ResolvedSecurityGroup, ResolvedSubnet};
    use crate::aws::nodeclass::rules::resolved_ami;
    use crate::scheduling::instance_types::Shape;
    use crate::scheduling::requirements::Requirement;

    fn spec() -> EC2NodeClassSpec {
        serde_json::from_value(serde_json::json!({
            "subnetSelectorTerms": [{"id": "subnet-a"}],
            "securityGroupSelectorTerms": [{"id": "sg-1"}],
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
        }))
        .unwrap()
    }

    #[test]
    fn a_classs_storage_is_the_volume_its_kubelet_writes_to() {
        let with = |extra: serde_json::Value| {
            let mut value = serde_json::to_value(spec()).unwrap();
            value
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            storage(&serde_json::from_value(value).unwrap())
        };
        let gib = |n: i64| Some(n << 30);
        assert_eq!(with(serde_json::json!({})), Storage::default());
        assert_eq!(
            with(serde_json::json!({"blockDeviceMappings": [
                {"deviceName": "/dev/xvda", "ebs": {"volumeSize": "30Gi"}},
                {"deviceName": "/dev/xvdc", "rootVolume": true, "ebs": {"volumeSize": "100Gi"}}
            ]}))
            .root_volume,
            gib(100),
            "rootVolume wins"
        );
        let two = serde_json::json!([
            {"deviceName": "/dev/xvda", "ebs": {"volumeSize": "4Gi"}},
            {"deviceName": "/dev/xvdb", "ebs": {"volumeSize": "80Gi"}}
        ]);
        assert_eq!(
            with(serde_json::json!({"blockDeviceMappings": two})).root_volume,
            gib(4)
        );
        assert_eq!(
            with(serde_json::json!({"blockDeviceMappings": two,
                "amiSelectorTerms": [{"alias": "bottlerocket@latest"}]}))
            .root_volume,
            gib(80),
            "Bottlerocket's pods write to its data volume"
        );
        assert_eq!(
            with(serde_json::json!({"amiFamily": "Custom", "amiSelectorTerms": [{"id": "ami-1"}],
                "blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"volumeSize": "60Gi"}}]}))
            .root_volume,
            gib(60),
            "a Custom class's last volume"
        );
        assert!(with(serde_json::json!({"instanceStorePolicy": "RAID0"})).instance_store_raid0);
    }

    fn status() -> EC2NodeClassStatus {
        let subnet = |id: &str, zone: &str| ResolvedSubnet {
            id: id.into(),
            zone: zone.into(),
            zone_id: None,
        };
        EC2NodeClassStatus {
            subnets: vec![
                subnet("subnet-a", "z-a"),
                subnet("subnet-a2", "z-a"),
                subnet("subnet-b", "z-b"),
            ],
            security_groups: vec![ResolvedSecurityGroup {
                id: "sg-1".into(),
                name: None,
            }],
            amis: vec![
                resolved_ami("ami-x86", None, "amd64"),
                resolved_ami("ami-arm", None, "arm64"),
            ],
            ..EC2NodeClassStatus::default()
        }
    }

    #[test]
    fn one_subnet_per_zone_and_one_template_per_architecture() {
        let mut requirements = Requirements::default();
        requirements.add(
            INSTANCE_TYPE_LABEL,
            Requirement::one_of(["m5.large", "m6g.large", "gpu.huge"]),
        );
        requirements.add(CAPACITY_TYPE_LABEL, Requirement::one_of([ON_DEMAND]));
        let catalog = catalog(&[("m5.large", "amd64", 0.096), ("m6g.large", "arm64", 0.077)]);
        let labels = BTreeMap::from([(NODEPOOL_LABEL.to_owned(), "default".to_owned())]);
        let request = fleet_request(&LaunchInput {
            cluster: "prod",
            node_class: "default",
            claim_name: "default-abcde",
            claim_uid: "uid-1",
            requirements: &requirements,
            labels: &labels,
            joins: &joins(),
            node: &NodeSettings::default(),
            spec: &spec(),
            status: &status(),
            catalog: &catalog,
        })
        .unwrap();
        assert!(
            request.client_token.starts_with("uid-1-"),
            "{}",
            request.client_token
        );
        assert_eq!(request.capacity_type, ON_DEMAND);
        assert_eq!(request.configs.len(), 2);
        let amd = &request.configs[0];
        assert!(
            amd.template_name
                .starts_with("windlass-prod-default-amd64-"),
            "{}",
            amd.template_name
        );
        assert_eq!(amd.template.image_id, "ami-x86");
        assert_eq!(amd.template.security_groups, ["sg-1"]);
        assert_ne!(amd.template_name, request.configs[1].template_name);
        assert_eq!(
            amd.overrides,
            [
                ("m5.large".to_owned(), "subnet-a".to_owned()),
                ("m5.large".to_owned(), "subnet-b".to_owned())
            ]
        );
        assert_eq!(request.tags[CLUSTER_LABEL], "prod");
        assert_eq!(request.tags[NODEPOOL_LABEL], "default");
        assert_eq!(request.tags[NODECLAIM_TAG], "default-abcde");
    }

    #[test]
    fn spot_when_allowed_and_zones_narrow_the_subnets() {
        let mut requirements = Requirements::default();
        requirements.add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m5.large"]));
        requirements.add(ZONE_LABEL, Requirement::one_of(["z-b"]));
        let catalog = catalog(&[("m5.large", "amd64", 0.096)]);
        let input = LaunchInput {
            cluster: "prod",
            node_class: "default",
            claim_name: "c",
            claim_uid: "u",
            requirements: &requirements,
            labels: &BTreeMap::new(),
            joins: &JOINS,
            node: &NODE,
            spec: &spec(),
            status: &status(),
            catalog: &catalog,
        };
        let request = fleet_request(&input).unwrap();
        assert_eq!(request.capacity_type, SPOT);
        assert_eq!(
            request.configs[0].overrides,
            [("m5.large".to_owned(), "subnet-b".to_owned())]
        );
        let mut nowhere = requirements.clone();
        nowhere.add(ZONE_LABEL, Requirement::one_of(["z-c"]));
        let error = fleet_request(&LaunchInput {
            requirements: &nowhere,
            ..input
        })
        .unwrap_err();
        assert_eq!(error, LaunchError::NoSubnetInZone);
    }

    fn input<'a>(
        spec: &'a EC2NodeClassSpec,
        status: &'a EC2NodeClassStatus,
        requirements: &'a Requirements,
        catalog: &'a [InstanceType],
    ) -> LaunchInput<'a> {
        LaunchInput {
            cluster: "prod",
            node_class: "default",
            claim_name: "c",
            claim_uid: "u",
            requirements,
            labels: &EMPTY,
            joins: &JOINS,
            node: &NODE,
            spec,
            status,
            catalog,
        }
    }

    /// Types with an on-demand and a spot offering (at a third of the price) in z-a and z-b.
    fn catalog(types: &[(&str, &str, f64)]) -> Vec<InstanceType> {
        types
            .iter()
            .map(|&(name, arch, price)| {
                let offerings = ["z-a", "z-b"]
                    .into_iter()
                    .flat_map(|zone| {
                        [(ON_DEMAND, price), (SPOT, price / 3.0)].map(|(capacity_type, price)| {
                            Offering {
                                zone: zone.into(),
                                capacity_type: capacity_type.into(),
                                price: Some(price),
                                available: true,
                            }
                        })
                    })
                    .collect();
                InstanceType::new(name, arch, Shape::default(), offerings)
            })
            .collect()
    }

    fn out_of_capacity(catalog: &mut [InstanceType], capacity_type: &str, names: &[String]) {
        for instance_type in catalog.iter_mut().filter(|it| names.contains(&it.name)) {
            for offering in &mut instance_type.offerings {
                if offering.capacity_type == capacity_type {
                    offering.available = false;
                }
            }
        }
    }

    fn offered(request: &FleetRequest) -> Vec<&str> {
        let mut names: Vec<&str> = request
            .configs
            .iter()
            .flat_map(|c| c.overrides.iter().map(|(name, _)| name.as_str()))
            .collect();
        names.dedup();
        names
    }

    #[test]
    fn a_launch_offers_the_cheapest_sixty_left_and_falls_back_to_the_next() {
        let types: Vec<(String, f64)> = (0..100)
            .map(|i| (format!("m5.s{i:03}"), 100.0 - f64::from(i)))
            .collect();
        let rows: Vec<(&str, &str, f64)> = types
            .iter()
            .map(|(name, price)| (name.as_str(), "amd64", *price))
            .collect();
        let mut catalog = catalog(&rows);
        // Cheapest first: the claim and the catalog list them in name order, dearest first.
        let names: Vec<String> = types.iter().rev().map(|(name, _)| name.clone()).collect();
        let mut requirements = Requirements::default();
        requirements.add(
            INSTANCE_TYPE_LABEL,
            Requirement::one_of(names.iter().cloned()),
        );
        requirements.add(CAPACITY_TYPE_LABEL, Requirement::one_of([ON_DEMAND]));
        let (spec, status) = (spec(), status());
        let first = fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap();
        assert_eq!(offered(&first), names[..LAUNCH_CANDIDATES]);
        assert_eq!(
            first.configs[0].overrides.len(),
            2 * LAUNCH_CANDIDATES,
            "one per zone"
        );

        out_of_capacity(&mut catalog, ON_DEMAND, &names[..LAUNCH_CANDIDATES]);
        let next = fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap();
        assert_eq!(offered(&next), names[LAUNCH_CANDIDATES..]);
        assert_ne!(
            next.client_token, first.client_token,
            "another request, another token"
        );
        let again = fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap();
        assert_eq!(
            again.client_token, next.client_token,
            "the same request retried"
        );

        out_of_capacity(&mut catalog, ON_DEMAND, &names);
        assert_eq!(
            fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap_err(),
            LaunchError::NoOffering
        );
    }

    #[test]
    fn spot_out_of_capacity_everywhere_launches_on_demand_from_the_cheapest() {
        let mut catalog = catalog(&[
            ("m5.xlarge", "amd64", 0.192),
            ("m5.large", "amd64", 0.096),
            ("gone.large", "amd64", 0.01),
        ]);
        let mut requirements = Requirements::default();
        requirements.add(
            INSTANCE_TYPE_LABEL,
            Requirement::one_of(["m5.large", "m5.xlarge", "m6i.large"]),
        );
        let (spec, status) = (spec(), status());
        let spot = fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap();
        assert_eq!(spot.capacity_type, SPOT);
        assert_eq!(
            offered(&spot),
            ["m5.large", "m5.xlarge"],
            "by price; a type not in the catalog, or not in the claim, is not offered"
        );
        out_of_capacity(
            &mut catalog,
            SPOT,
            &["m5.large".to_owned(), "m5.xlarge".to_owned()],
        );
        let on_demand = fleet_request(&input(&spec, &status, &requirements, &catalog)).unwrap();
        assert_eq!(on_demand.capacity_type, ON_DEMAND);
        assert_eq!(offered(&on_demand), ["m5.large", "m5.xlarge"]);
    }

    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    static NODE: NodeSettings = NodeSettings {
        labels: BTreeMap::new(),
        taints: Vec::new(),
    };
    static JOINS: std::sync::LazyLock<ClusterInfo> = std::sync::LazyLock::new(joins);

    fn joins() -> ClusterInfo {
        ClusterInfo {
            name: "prod".into(),
            endpoint: "https://prod.example".into(),
            ca_bundle: "Q0E=".into(),
            service_cidr: "10.100.0.0/16".into(),
            dns: None,
        }
    }

    #[test]
    fn the_template_defaults_to_an_encrypted_gp3_root_and_imdsv2() {
        let requirements = Requirements::default();
        let (spec, status) = (spec(), status());
        let data = template_data(
            &input(&spec, &status, &requirements, &[]).template_input(),
            "ami-1",
        )
        .unwrap();
        assert_eq!(
            data.volumes,
            [Volume {
                device_name: "/dev/xvda".into(),
                size_gib: Some(20),
                volume_type: Some("gp3".into()),
                encrypted: Some(true),
                delete_on_termination: Some(true),
                ..Volume::default()
            }]
        );
        assert!(data.http_endpoint && data.http_tokens_required && !data.http_protocol_ipv6);
        assert_eq!(data.http_put_response_hop_limit, 1);
        assert_eq!(data.tags[CLUSTER_LABEL], "prod");
        assert_eq!(data.tags[NODECLASS_TAG], "default");
        assert_eq!(data.instance_profile, None);
    }

    #[test]
    fn the_template_bootstraps_the_node_into_the_cluster_and_its_name_follows_the_pools_settings() {
        let requirements = Requirements::default();
        let (spec, status) = (spec(), status());
        let base = input(&spec, &status, &requirements, &[]);
        let data = template_data(&base.template_input(), "ami-1").unwrap();
        let user_data = data.user_data.clone().unwrap();
        assert!(user_data.contains("kind: NodeConfig"), "{user_data}");
        assert!(
            user_data.contains("apiServerEndpoint: https://prod.example"),
            "{user_data}"
        );
        let labelled = NodeSettings::new(
            &BTreeMap::from([("team".to_owned(), "data".to_owned())]),
            &[],
        );
        let other = template_data(
            &TemplateInput {
                node: &labelled,
                ..base.template_input()
            },
            "ami-1",
        )
        .unwrap();
        assert!(
            other
                .user_data
                .clone()
                .unwrap()
                .contains("--node-labels=team=data")
        );
        assert_ne!(
            template_name("prod", "default", "amd64", &data),
            template_name("prod", "default", "amd64", &other),
        );
        let current = current_templates(&base.template_input(), [&NODE, &labelled]);
        assert_eq!(
            current.len(),
            4,
            "two pools' settings, two architectures: {current:?}"
        );
    }

    #[test]
    fn the_template_carries_the_node_class_settings_and_its_name_follows_them() {
        let requirements = Requirements::default();
        let mut spec: EC2NodeClassSpec = serde_json::from_value(serde_json::json!({
            "subnetSelectorTerms": [{"id": "subnet-a"}],
            "securityGroupSelectorTerms": [{"id": "sg-1"}],
            "amiSelectorTerms": [{"id": "ami-1"}],
            "amiFamily": "Custom",
            "userData": "echo hello",
            "tags": {"team": "data"},
            "detailedMonitoring": true,
            "associatePublicIPAddress": false,
            "blockDeviceMappings": [{"deviceName": "/dev/xvdb", "rootVolume": true,
                "ebs": {"volumeSize": "100G", "volumeType": "io2", "iops": 4000, "encrypted": true, "kmsKeyID": "key-1"}}],
            "metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 2, "httpProtocolIPv6": "enabled"}
        }))
        .unwrap();
        let mut status = status();
        status.instance_profile = Some("nodes".into());
        let data = template_data(
            &input(&spec, &status, &requirements, &[]).template_input(),
            "ami-1",
        )
        .unwrap();
        assert_eq!(data.user_data.as_deref(), Some("echo hello"));
        assert_eq!(data.instance_profile.as_deref(), Some("nodes"));
        assert!(data.detailed_monitoring);
        assert_eq!(data.associate_public_ip_address, Some(false));
        assert_eq!(data.tags["team"], "data");
        assert_eq!(
            data.volumes,
            [Volume {
                device_name: "/dev/xvdb".into(),
                size_gib: Some(94),
                volume_type: Some("io2".into()),
                iops: Some(4000),
                encrypted: Some(true),
                kms_key_id: Some("key-1".into()),
                ..Volume::default()
            }],
            "100G is 93.1 GiB, rounded up"
        );
        assert!(!data.http_tokens_required && data.http_protocol_ipv6);
        assert_eq!(data.http_put_response_hop_limit, 2);

        let name = template_name("prod", "default", "amd64", &data);
        assert_eq!(
            name,
            template_name("prod", "default", "amd64", &data.clone())
        );
        let mut other_image = data.clone();
        other_image.image_id = "ami-2".into();
        assert_ne!(
            name,
            template_name("prod", "default", "amd64", &other_image)
        );

        spec.block_device_mappings[0].ebs.volume_size = Some(Quantity("lots".into()));
        let error = template_data(
            &input(&spec, &status, &requirements, &[]).template_input(),
            "ami-1",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "blockDeviceMappings[0].ebs.volumeSize \"lots\" is not a size"
        );
    }
}
