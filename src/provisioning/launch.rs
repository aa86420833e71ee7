//! What one CreateFleet call for a NodeClaim asks for, without I/O: the launch template per
//! architecture, overrides of every candidate type in one subnet per allowed zone, the capacity
//! type, the ClientToken and the tags.

use std::collections::BTreeMap;

use super::instance_types::{ON_DEMAND, SPOT};
use super::requirements::Requirements;
use crate::apis::ec2_node_class::EC2NodeClassStatus;
use crate::apis::node_pool::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, ZONE_LABEL,
};
use crate::cloud::{CLUSTER_TAG, NODECLAIM_TAG, NODEPOOL_TAG};

/// One launch template and the (instance type, subnet) pairs launched with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateConfig {
    pub template_name: String,
    pub image_id: String,
    pub overrides: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetRequest {
    /// The NodeClaim's UID: a retried CreateFleet with the same token launches nothing new.
    pub client_token: String,
    pub capacity_type: &'static str,
    pub configs: Vec<TemplateConfig>,
    pub security_groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// Everything a NodeClaim's launch needs to know.
pub struct LaunchInput<'a> {
    pub cluster: &'a str,
    pub node_class: &'a str,
    pub claim_name: &'a str,
    pub claim_uid: &'a str,
    pub requirements: &'a Requirements,
    pub labels: &'a BTreeMap<String, String>,
    pub status: &'a EC2NodeClassStatus,
    pub class_tags: &'a BTreeMap<String, String>,
    /// Architecture of each candidate type, from DescribeInstanceTypes.
    pub architectures: &'a BTreeMap<String, &'static str>,
    /// Whether (capacity type, instance type, zone) recently ran out of capacity.
    pub unavailable: &'a dyn Fn(&str, &str, &str) -> bool,
}

/// The launch template of a node class for one architecture.
pub fn template_name(cluster: &str, node_class: &str, arch: &str) -> String {
    format!("windlass-{cluster}-{node_class}-{arch}")
}

pub fn fleet_request(input: &LaunchInput) -> Result<FleetRequest, String> {
    let requirements = input.requirements;
    let types: Vec<&String> = requirements
        .get(INSTANCE_TYPE_LABEL)
        .and_then(|r| r.finite_values())
        .map(|values| values.iter().collect())
        .unwrap_or_default();
    if types.is_empty() {
        return Err("the NodeClaim names no instance type".into());
    }
    let mut subnets: BTreeMap<&str, &str> = BTreeMap::new();
    for subnet in &input.status.subnets {
        if requirements.allows(ZONE_LABEL, &subnet.zone) {
            subnets
                .entry(subnet.zone.as_str())
                .or_insert(subnet.id.as_str());
        }
    }
    if subnets.is_empty() {
        return Err("no subnet of the EC2NodeClass is in an allowed zone".into());
    }
    // Spot when allowed and some spot offering is available; otherwise on-demand.
    let mut capacity_types = Vec::new();
    if requirements.allows(CAPACITY_TYPE_LABEL, SPOT) {
        capacity_types.push(SPOT);
    }
    if requirements.allows(CAPACITY_TYPE_LABEL, ON_DEMAND) {
        capacity_types.push(ON_DEMAND);
    }
    for capacity_type in capacity_types {
        let configs = configs_for(input, &types, &subnets, capacity_type);
        if !configs.is_empty() {
            return Ok(request(input, capacity_type, configs));
        }
    }
    Err(
        "no candidate offering is available: every one lacks an AMI for its architecture or \
         recently ran out of capacity"
            .into(),
    )
}

/// One template config per architecture: each available (type, one subnet per zone) pair.
fn configs_for(
    input: &LaunchInput,
    types: &[&String],
    subnets: &BTreeMap<&str, &str>,
    capacity_type: &str,
) -> Vec<TemplateConfig> {
    let mut configs: BTreeMap<&str, TemplateConfig> = BTreeMap::new();
    for name in types {
        let Some(arch) = input.architectures.get(name.as_str()) else {
            continue;
        };
        let Some(image) = input.status.amis.iter().find(|ami| {
            ami.requirements
                .iter()
                .all(|r| r.values.iter().any(|v| v == arch))
        }) else {
            continue;
        };
        for (zone, subnet) in subnets {
            if (input.unavailable)(capacity_type, name, zone) {
                continue;
            }
            configs
                .entry(arch)
                .or_insert_with(|| TemplateConfig {
                    template_name: template_name(input.cluster, input.node_class, arch),
                    image_id: image.id.clone(),
                    overrides: Vec::new(),
                })
                .overrides
                .push(((*name).clone(), (*subnet).to_owned()));
        }
    }
    configs.into_values().collect()
}

fn request(
    input: &LaunchInput,
    capacity_type: &'static str,
    configs: Vec<TemplateConfig>,
) -> FleetRequest {
    let mut tags = input.class_tags.clone();
    tags.insert("Name".into(), input.claim_name.to_owned());
    tags.insert(CLUSTER_TAG.into(), input.cluster.to_owned());
    tags.insert(
        format!("kubernetes.io/cluster/{}", input.cluster),
        "owned".into(),
    );
    tags.insert(NODECLAIM_TAG.into(), input.claim_name.to_owned());
    if let Some(pool) = input.labels.get(NODEPOOL_LABEL) {
        tags.insert(NODEPOOL_TAG.into(), pool.clone());
    }
    FleetRequest {
        client_token: input.claim_uid.to_owned(),
        capacity_type,
        configs,
        security_groups: input
            .status
            .security_groups
            .iter()
            .map(|g| g.id.clone())
            .collect(),
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::ec2_node_class::{ResolvedSecurityGroup, ResolvedSubnet};
    use crate::provisioning::node_class::resolved_ami;
    use crate::provisioning::requirements::Requirement;

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
        let architectures = BTreeMap::from([
            ("m5.large".to_owned(), "amd64"),
            ("m6g.large".to_owned(), "arm64"),
        ]);
        let labels = BTreeMap::from([(NODEPOOL_LABEL.to_owned(), "default".to_owned())]);
        let request = fleet_request(&LaunchInput {
            cluster: "prod",
            node_class: "default",
            claim_name: "default-abcde",
            claim_uid: "uid-1",
            requirements: &requirements,
            labels: &labels,
            status: &status(),
            class_tags: &BTreeMap::new(),
            architectures: &architectures,
            unavailable: &|_, _, _| false,
        })
        .unwrap();
        assert_eq!(request.client_token, "uid-1");
        assert_eq!(request.capacity_type, ON_DEMAND);
        assert_eq!(request.configs.len(), 2);
        let amd = &request.configs[0];
        assert_eq!(amd.template_name, "windlass-prod-default-amd64");
        assert_eq!(amd.image_id, "ami-x86");
        assert_eq!(
            amd.overrides,
            [
                ("m5.large".to_owned(), "subnet-a".to_owned()),
                ("m5.large".to_owned(), "subnet-b".to_owned())
            ]
        );
        assert_eq!(request.tags[CLUSTER_TAG], "prod");
        assert_eq!(request.tags[NODEPOOL_TAG], "default");
        assert_eq!(request.tags[NODECLAIM_TAG], "default-abcde");
    }

    #[test]
    fn spot_when_allowed_and_zones_narrow_the_subnets() {
        let mut requirements = Requirements::default();
        requirements.add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m5.large"]));
        requirements.add(ZONE_LABEL, Requirement::one_of(["z-b"]));
        let architectures = BTreeMap::from([("m5.large".to_owned(), "amd64")]);
        let input = LaunchInput {
            cluster: "prod",
            node_class: "default",
            claim_name: "c",
            claim_uid: "u",
            requirements: &requirements,
            labels: &BTreeMap::new(),
            status: &status(),
            class_tags: &BTreeMap::new(),
            architectures: &architectures,
            unavailable: &|_, _, _| false,
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
        assert!(error.contains("allowed zone"), "{error}");
    }
}
