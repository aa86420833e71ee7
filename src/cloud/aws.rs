//! The EC2 and SSM calls node classes need, behind one type: describe subnets, security groups
//! and images by selector term, and read SSM parameters. Answers are plain project types.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{Filter, InstanceTypeInfo, LocationType};

use crate::apis::ec2_node_class::{
    AmiSelectorTerm, ResolvedAmi, ResolvedSecurityGroup, ResolvedSubnet, SecurityGroupSelectorTerm,
    SubnetSelectorTerm,
};
use crate::provisioning::instance_types::{InstanceType, ON_DEMAND, Offering, SPOT, Shape};
use crate::provisioning::node_class::{kubernetes_arch, resolved_ami};

/// An instance type's shape and Kubernetes architecture as DescribeInstanceTypes reports them;
/// max pods follow the VPC CNI's ENI limits (110 when the network limits are not reported).
pub fn shape_of(info: &InstanceTypeInfo) -> Option<(Shape, &'static str)> {
    let arch = info
        .processor_info()?
        .supported_architectures()
        .iter()
        .find_map(|a| kubernetes_arch(a.as_str()))?;
    let vcpus = i64::from(info.v_cpu_info()?.default_v_cpus()?);
    let memory_mib = info.memory_info()?.size_in_mib()?;
    let network = info.network_info();
    let max_pods = match (
        network.and_then(|n| n.maximum_network_interfaces()),
        network.and_then(|n| n.ipv4_addresses_per_interface()),
    ) {
        (Some(enis), Some(ips)) => Shape::max_pods_for(i64::from(enis), i64::from(ips)),
        _ => 110,
    };
    Some((
        Shape {
            vcpus,
            memory_mib,
            max_pods,
        },
        arch,
    ))
}

#[derive(Debug, thiserror::Error)]
#[error("{call}: {message}")]
pub struct CloudError {
    pub call: &'static str,
    pub message: String,
}

fn failed<E: std::error::Error>(call: &'static str) -> impl FnOnce(E) -> CloudError {
    move |error| CloudError {
        call,
        message: DisplayErrorContext(error).to_string(),
    }
}

#[derive(Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
}

/// `tag:<key>` filters, one per tag; a `*` value means the key exists with any value.
fn tag_filters(tags: &std::collections::BTreeMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .map(|(key, value)| {
            if value == "*" {
                Filter::builder().name("tag-key").values(key).build()
            } else {
                Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build()
            }
        })
        .collect()
}

impl Aws {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
        }
    }

    pub async fn subnets(
        &self,
        term: &SubnetSelectorTerm,
    ) -> Result<Vec<ResolvedSubnet>, CloudError> {
        let mut request = self
            .ec2
            .describe_subnets()
            .set_filters(Some(tag_filters(&term.tags)));
        if let Some(id) = &term.id {
            request = request.subnet_ids(id);
        }
        let output = request.send().await.map_err(failed("DescribeSubnets"))?;
        Ok(output
            .subnets()
            .iter()
            .filter_map(|subnet| {
                Some(ResolvedSubnet {
                    id: subnet.subnet_id()?.to_owned(),
                    zone: subnet.availability_zone()?.to_owned(),
                    zone_id: subnet.availability_zone_id().map(str::to_owned),
                })
            })
            .collect())
    }

    pub async fn security_groups(
        &self,
        term: &SecurityGroupSelectorTerm,
    ) -> Result<Vec<ResolvedSecurityGroup>, CloudError> {
        let mut filters = tag_filters(&term.tags);
        if let Some(name) = &term.name {
            filters.push(Filter::builder().name("group-name").values(name).build());
        }
        let mut request = self
            .ec2
            .describe_security_groups()
            .set_filters(Some(filters));
        if let Some(id) = &term.id {
            request = request.group_ids(id);
        }
        let output = request
            .send()
            .await
            .map_err(failed("DescribeSecurityGroups"))?;
        Ok(output
            .security_groups()
            .iter()
            .filter_map(|group| {
                Some(ResolvedSecurityGroup {
                    id: group.group_id()?.to_owned(),
                    name: group.group_name().map(str::to_owned),
                })
            })
            .collect())
    }

    /// Images matching a non-alias term, each with its creation date for ordering.
    pub async fn images(
        &self,
        term: &AmiSelectorTerm,
    ) -> Result<Vec<(ResolvedAmi, String)>, CloudError> {
        if let Some(parameter) = &term.ssm_parameter {
            let Some(id) = self.parameter(parameter).await? else {
                return Ok(Vec::new());
            };
            return self
                .describe_images(Some(&id), &AmiSelectorTerm::default())
                .await;
        }
        self.describe_images(term.id.as_deref(), term).await
    }

    async fn describe_images(
        &self,
        id: Option<&str>,
        term: &AmiSelectorTerm,
    ) -> Result<Vec<(ResolvedAmi, String)>, CloudError> {
        let mut filters = tag_filters(&term.tags);
        if let Some(name) = &term.name {
            filters.push(Filter::builder().name("name").values(name).build());
        }
        let mut request = self.ec2.describe_images().set_filters(Some(filters));
        if let Some(id) = id {
            request = request.image_ids(id);
        }
        if let Some(owner) = &term.owner {
            request = request.owners(owner);
        }
        let output = request.send().await.map_err(failed("DescribeImages"))?;
        Ok(output
            .images()
            .iter()
            .filter_map(|image| {
                let arch = kubernetes_arch(image.architecture()?.as_str())?;
                let ami = resolved_ami(image.image_id()?, image.name().map(str::to_owned), arch);
                Some((ami, image.creation_date().unwrap_or_default().to_owned()))
            })
            .collect())
    }

    /// The region's instance types with an on-demand price in `prices`, each offered on-demand
    /// and spot (at the on-demand price, its ceiling) in every zone that offers it. Types
    /// without a price are left out: the launch orders candidates by price.
    pub async fn instance_catalog(
        &self,
        prices: &HashMap<String, f64>,
    ) -> Result<Vec<InstanceType>, CloudError> {
        let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut offerings = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(LocationType::AvailabilityZone)
            .into_paginator()
            .send();
        while let Some(page) = offerings.next().await {
            let page = page.map_err(failed("DescribeInstanceTypeOfferings"))?;
            for offering in page.instance_type_offerings() {
                if let (Some(name), Some(zone)) = (offering.instance_type(), offering.location()) {
                    zones
                        .entry(name.as_str().to_owned())
                        .or_default()
                        .push(zone.to_owned());
                }
            }
        }
        let mut catalog = Vec::new();
        let mut types = self.ec2.describe_instance_types().into_paginator().send();
        while let Some(page) = types.next().await {
            let page = page.map_err(failed("DescribeInstanceTypes"))?;
            for info in page.instance_types() {
                let Some(name) = info.instance_type().map(|t| t.as_str().to_owned()) else {
                    continue;
                };
                let (Some(price), Some((shape, arch)), Some(zones)) =
                    (prices.get(&name), shape_of(info), zones.get(&name))
                else {
                    continue;
                };
                let offerings = zones
                    .iter()
                    .flat_map(|zone| {
                        [ON_DEMAND, SPOT].map(|capacity_type| Offering {
                            zone: zone.clone(),
                            capacity_type: capacity_type.to_owned(),
                            price: *price,
                            available: true,
                        })
                    })
                    .collect();
                catalog.push(InstanceType::new(&name, arch, shape, offerings));
            }
        }
        catalog.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(catalog)
    }

    /// An SSM parameter's value; `None` if it does not exist.
    pub async fn parameter(&self, name: &str) -> Result<Option<String>, CloudError> {
        match self.ssm.get_parameter().name(name).send().await {
            Ok(output) => Ok(output
                .parameter()
                .and_then(|p| p.value())
                .map(str::to_owned)),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(error) => Err(failed("GetParameter")(error)),
        }
    }
}
