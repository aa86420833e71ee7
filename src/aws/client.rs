//! The EC2 and SSM calls node classes need, behind one type: describe subnets, security groups
//! and images by selector term, and read SSM parameters. Answers are plain project types.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::create_fleet::CreateFleetOutput;
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, EphemeralNvmeSupport, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceType, InstanceTypeInfo,
    LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateInstanceMetadataProtocolIpv6,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplatesMonitoringRequest, LocationType,
    NetworkCardInfo, NetworkInfo, OnDemandOptionsRequest, RequestLaunchTemplateData, ResourceType,
    SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest, VolumeType,
};

use crate::apis::ec2_node_class::{
    AmiSelectorTerm, ResolvedAmi, ResolvedSecurityGroup, ResolvedSubnet, SecurityGroupSelectorTerm,
    SubnetSelectorTerm,
};
use crate::apis::labels::{CLUSTER_LABEL, NODECLAIM_TAG, NODECLASS_TAG};
use crate::aws::launch::{FleetRequest, TemplateConfig};
use crate::aws::nodeclass::rules::{kubernetes_arch, resolved_ami};
use crate::aws::{provider_id, sdk_clients};
use crate::cloud::{CloudError, Instance};
use crate::scheduling::instance_types::{
    self, Devices, ON_DEMAND, Offering, SPOT, Shape, TypeFacts,
};

/// One of EC2's per-override CreateFleet errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetError {
    pub code: String,
    pub message: String,
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
}

#[derive(Clone, Debug)]
pub struct FleetOutcome {
    pub instance: Option<Instance>,
    pub errors: Vec<FleetError>,
}

/// An instance as DescribeInstances reports it; `None` without an id, type or zone.
fn launched_instance(instance: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = instance.instance_id()?;
    let zone = instance.placement()?.availability_zone()?;
    let claim = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(NODECLAIM_TAG))
        .and_then(|t| t.value())
        .map(str::to_owned);
    Some(Instance {
        id: id.to_owned(),
        provider_id: provider_id(zone, id),
        claim,
        instance_type: instance.instance_type()?.as_str().to_owned(),
        zone: zone.to_owned(),
        image_id: instance.image_id().map(str::to_owned),
        subnet_id: instance.subnet_id().map(str::to_owned),
        security_group_ids: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .map(str::to_owned)
            .collect(),
    })
}

/// The per-override errors of a CreateFleet answer, each with the type and subnet it was for.
fn fleet_errors(output: &CreateFleetOutput) -> Vec<FleetError> {
    output
        .errors()
        .iter()
        .map(|e| {
            let overrides = e
                .launch_template_and_overrides()
                .and_then(|l| l.overrides());
            FleetError {
                code: e.error_code().unwrap_or("error").to_owned(),
                message: e.error_message().unwrap_or_default().to_owned(),
                instance_type: overrides
                    .and_then(|o| o.instance_type())
                    .map(|t| t.as_str().to_owned()),
                subnet: overrides.and_then(|o| o.subnet_id()).map(str::to_owned),
            }
        })
        .collect()
}

/// Standard base64, which EC2 requires for user data.
fn base64_encode(bytes: &[u8]) -> String {
    aws_smithy_types::base64::encode(bytes)
}

/// An instance type's shape and Kubernetes architecture as DescribeInstanceTypes reports them;
/// max pods follow the VPC CNI's ENI limits as EKS computes them, from the default network
/// card's interfaces (a type with several cards reports the sum in
/// `maximumNetworkInterfaces`), and are 110 when the network limits are not reported. The VM
/// keeps `vm_memory_overhead` (a share) of the listed memory.
pub fn shape_of(info: &InstanceTypeInfo, vm_memory_overhead: f64) -> Option<(Shape, &'static str)> {
    let arch = info
        .processor_info()?
        .supported_architectures()
        .iter()
        .find_map(|a| kubernetes_arch(a.as_str()))?;
    let vcpus = i64::from(info.v_cpu_info()?.default_v_cpus()?);
    let memory_mib = info.memory_info()?.size_in_mib()?;
    let network = info.network_info();
    let default_card = network
        .and_then(default_network_card)
        .and_then(|card| card.maximum_network_interfaces());
    let max_pods = match (
        default_card.or_else(|| network.and_then(|n| n.maximum_network_interfaces())),
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
            memory_overhead_mib: Shape::memory_overhead_mib(memory_mib, arch, vm_memory_overhead),
            devices: devices_of(info),
            instance_store_gb: info
                .instance_storage_info()
                .and_then(|s| s.total_size_in_gb()),
        },
        arch,
    ))
}

/// The devices a type's device plugins advertise: its GPUs by maker, Neuron devices and their
/// cores, and EFA interfaces.
fn devices_of(info: &InstanceTypeInfo) -> Devices {
    let gpus = |maker: &str| -> i64 {
        info.gpu_info()
            .map(|g| g.gpus())
            .unwrap_or_default()
            .iter()
            .filter(|gpu| gpu.manufacturer() == Some(maker))
            .map(|gpu| i64::from(gpu.count().unwrap_or(0)))
            .sum()
    };
    let neuron_devices = info
        .neuron_info()
        .map(|n| n.neuron_devices())
        .unwrap_or_default();
    let count =
        |device: &aws_sdk_ec2::types::NeuronDeviceInfo| i64::from(device.count().unwrap_or(0));
    Devices {
        nvidia_gpu: gpus("NVIDIA"),
        amd_gpu: gpus("AMD"),
        neuron: neuron_devices.iter().map(count).sum(),
        neuron_core: neuron_devices
            .iter()
            .map(|d| count(d) * i64::from(d.core_info().and_then(|c| c.count()).unwrap_or(0)))
            .sum(),
        efa: info
            .network_info()
            .and_then(|n| n.efa_info())
            .and_then(|e| e.maximum_efa_interfaces())
            .map_or(0, i64::from),
    }
}

/// The network card a type's primary interface is on: what the VPC CNI counts ENIs on.
fn default_network_card(network: &NetworkInfo) -> Option<&NetworkCardInfo> {
    let index = network.default_network_card_index().unwrap_or(0);
    network
        .network_cards()
        .iter()
        .find(|card| card.network_card_index().unwrap_or(0) == index)
}

/// What DescribeInstanceTypes says of a type's GPUs, instance store, network and hypervisor,
/// read as Karpenter reads it: GPU labels only when the type has one model of GPU, instance
/// store only when it is NVMe.
pub fn hardware_of(info: &InstanceTypeInfo) -> instance_types::Hardware {
    let gpu = match info.gpu_info().map(|g| g.gpus()) {
        Some([gpu]) => Some(instance_types::Gpu {
            name: gpu.name().unwrap_or_default().to_owned(),
            manufacturer: gpu.manufacturer().unwrap_or_default().to_owned(),
            count: i64::from(gpu.count().unwrap_or(0)),
            memory_mib: i64::from(gpu.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0)),
        }),
        _ => None,
    };
    let local_nvme_gib = info
        .instance_storage_info()
        .filter(|s| s.nvme_support() != Some(&EphemeralNvmeSupport::Unsupported))
        .and_then(|s| s.total_size_in_gb());
    let network = info.network_info();
    // Whole Mbit/s, so that Gt and Lt can compare them.
    let network_bandwidth_mbps = network
        .and_then(default_network_card)
        .and_then(|card| card.baseline_bandwidth_in_gbps())
        .map(|gbps| (gbps * 1000.0).round() as i64);
    instance_types::Hardware {
        gpu,
        local_nvme_gib,
        network_bandwidth_mbps,
        hypervisor: info.hypervisor().map(|h| h.as_str().to_owned()),
        encryption_in_transit: network.and_then(|n| n.encryption_in_transit_supported()),
    }
}

/// Shape, architecture and hardware of a type, when it has a usable shape.
pub fn facts_of(info: &InstanceTypeInfo, vm_memory_overhead: f64) -> Option<TypeFacts> {
    let (shape, arch) = shape_of(info, vm_memory_overhead)?;
    Some(TypeFacts {
        shape,
        arch,
        hardware: hardware_of(info),
    })
}

fn failed<E, R>(call: &'static str) -> impl FnOnce(SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |error| CloudError {
        call,
        code: error.code().map(str::to_owned),
        message: super::sdk_errors::describe(&error),
    }
}

#[derive(Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    /// The share of a type's memory its Nodes will not report.
    vm_memory_overhead: f64,
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
            ec2: sdk_clients::ec2(config),
            ssm: sdk_clients::ssm(config),
            iam: sdk_clients::iam(config),
            vm_memory_overhead: instance_types::DEFAULT_VM_MEMORY_OVERHEAD,
        }
    }

    /// The same, sizing instance types with `share` of their memory kept by the VM.
    pub fn with_vm_memory_overhead(mut self, share: f64) -> Self {
        self.vm_memory_overhead = share;
        self
    }

    /// Makes instance profile `name` exist, tagged with `tags`, holding `role` and no other
    /// role (a profile holds at most one). A role that does not exist is an error naming it.
    pub async fn ensure_instance_profile(
        &self,
        name: &str,
        role: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), CloudError> {
        let profile = match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(output) => output.instance_profile,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                let tags = tags
                    .iter()
                    .map(|(key, value)| {
                        aws_sdk_iam::types::Tag::builder()
                            .key(key)
                            .value(value)
                            .build()
                            .expect("key and value are set")
                    })
                    .collect();
                self.iam
                    .create_instance_profile()
                    .instance_profile_name(name)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(failed("CreateInstanceProfile"))?
                    .instance_profile
            }
            Err(error) => return Err(failed("GetInstanceProfile")(error)),
        };
        let held: Vec<String> = profile
            .map(|p| p.roles.into_iter().map(|r| r.role_name).collect())
            .unwrap_or_default();
        for other in held.iter().filter(|held| *held != role) {
            self.iam
                .remove_role_from_instance_profile()
                .instance_profile_name(name)
                .role_name(other)
                .send()
                .await
                .map_err(failed("RemoveRoleFromInstanceProfile"))?;
        }
        if !held.iter().any(|held| held == role) {
            match self
                .iam
                .add_role_to_instance_profile()
                .instance_profile_name(name)
                .role_name(role)
                .send()
                .await
            {
                Ok(_) => {}
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_no_such_entity_exception()) =>
                {
                    return Err(CloudError {
                        call: "AddRoleToInstanceProfile",
                        code: Some("NoSuchEntity".into()),
                        message: format!("IAM role {role} does not exist"),
                    });
                }
                Err(error) => return Err(failed("AddRoleToInstanceProfile")(error)),
            }
        }
        Ok(())
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
    /// and spot in every zone that offers it. Spot is priced from the current spot price
    /// history, or at the on-demand price (its ceiling) where there is none. A type without an
    /// on-demand price is kept, tried after every priced one.
    pub async fn instance_catalog(
        &self,
        prices: &HashMap<String, f64>,
    ) -> Result<Vec<instance_types::InstanceType>, CloudError> {
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
        let spot_prices = self.spot_prices().await?;
        let mut catalog = Vec::new();
        let mut types = self.ec2.describe_instance_types().into_paginator().send();
        while let Some(page) = types.next().await {
            let page = page.map_err(failed("DescribeInstanceTypes"))?;
            for info in page.instance_types() {
                let Some(name) = info.instance_type().map(|t| t.as_str().to_owned()) else {
                    continue;
                };
                let (Some(facts), Some(zones)) =
                    (facts_of(info, self.vm_memory_overhead), zones.get(&name))
                else {
                    continue;
                };
                // A type missing from the price table stays usable, tried after the priced ones.
                let price = prices.get(&name).copied();
                let offerings = zones
                    .iter()
                    .flat_map(|zone| {
                        let spot = spot_prices
                            .get(&(name.clone(), zone.clone()))
                            .copied()
                            .or(price);
                        [(ON_DEMAND, price), (SPOT, spot)].map(|(capacity_type, price)| Offering {
                            zone: zone.clone(),
                            capacity_type: capacity_type.to_owned(),
                            price,
                            available: true,
                        })
                    })
                    .collect();
                catalog.push(
                    instance_types::InstanceType::new(&name, facts.arch, facts.shape, offerings)
                        .with_hardware(&facts.hardware),
                );
            }
        }
        catalog.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(catalog)
    }

    /// The current Linux spot price of each (instance type, zone).
    async fn spot_prices(&self) -> Result<HashMap<(String, String), f64>, CloudError> {
        let mut prices = HashMap::new();
        let mut pages = self
            .ec2
            .describe_spot_price_history()
            .product_descriptions("Linux/UNIX")
            .start_time(aws_smithy_types::DateTime::from(
                std::time::SystemTime::now(),
            ))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed("DescribeSpotPriceHistory"))?;
            for entry in page.spot_price_history() {
                let (Some(name), Some(zone), Some(price)) = (
                    entry.instance_type(),
                    entry.availability_zone(),
                    entry.spot_price().and_then(|p| p.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                prices.insert((name.as_str().to_owned(), zone.to_owned()), price);
            }
        }
        Ok(prices)
    }

    /// Shape, architecture and hardware of the named instance types.
    pub async fn type_facts(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, TypeFacts>, CloudError> {
        let types: Vec<InstanceType> = names
            .iter()
            .map(|n| InstanceType::from(n.as_str()))
            .collect();
        let output = self
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(types))
            .send()
            .await
            .map_err(failed("DescribeInstanceTypes"))?;
        Ok(output
            .instance_types()
            .iter()
            .filter_map(|info| {
                Some((
                    info.instance_type()?.as_str().to_owned(),
                    facts_of(info, self.vm_memory_overhead)?,
                ))
            })
            .collect())
    }

    /// Creates the launch template unless it exists; its name is a hash of its content, so an
    /// existing one is always the same.
    pub async fn ensure_launch_template(&self, config: &TemplateConfig) -> Result<(), CloudError> {
        let template = &config.template;
        let tags = |resource: ResourceType| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(ec2_tags(&template.tags)))
                .build()
        };
        let volumes = template
            .volumes
            .iter()
            .map(|volume| {
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(&volume.device_name)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .set_volume_size(volume.size_gib)
                            .set_volume_type(volume.volume_type.as_deref().map(VolumeType::from))
                            .set_iops(volume.iops)
                            .set_throughput(volume.throughput)
                            .set_encrypted(volume.encrypted)
                            .set_kms_key_id(volume.kms_key_id.clone())
                            .set_snapshot_id(volume.snapshot_id.clone())
                            .set_delete_on_termination(volume.delete_on_termination)
                            .build(),
                    )
                    .build()
            })
            .collect();
        let metadata = LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .http_endpoint(if template.http_endpoint {
                LaunchTemplateInstanceMetadataEndpointState::Enabled
            } else {
                LaunchTemplateInstanceMetadataEndpointState::Disabled
            })
            .http_protocol_ipv6(if template.http_protocol_ipv6 {
                LaunchTemplateInstanceMetadataProtocolIpv6::Enabled
            } else {
                LaunchTemplateInstanceMetadataProtocolIpv6::Disabled
            })
            .http_put_response_hop_limit(template.http_put_response_hop_limit)
            .http_tokens(if template.http_tokens_required {
                LaunchTemplateHttpTokensState::Required
            } else {
                LaunchTemplateHttpTokensState::Optional
            })
            .build();
        let volume_tags = LaunchTemplateTagSpecificationRequest::builder()
            .resource_type(ResourceType::Volume)
            .set_tags(Some(ec2_tags(&template.tags)))
            .build();
        let data = RequestLaunchTemplateData::builder().image_id(&template.image_id);
        let data = match template.associate_public_ip_address {
            // EC2 takes a public address only on an interface, which then holds the groups.
            Some(public) => data.network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(public)
                    .set_groups(Some(template.security_groups.clone()))
                    .build(),
            ),
            None => data.set_security_group_ids(Some(template.security_groups.clone())),
        };
        let data = data
            .set_user_data(
                template
                    .user_data
                    .as_deref()
                    .map(|data| base64_encode(data.as_bytes())),
            )
            .set_iam_instance_profile(template.instance_profile.as_ref().map(|name| {
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(name)
                    .build()
            }))
            .set_block_device_mappings(Some(volumes))
            .metadata_options(metadata)
            .monitoring(
                LaunchTemplatesMonitoringRequest::builder()
                    .enabled(template.detailed_monitoring)
                    .build(),
            )
            .tag_specifications(volume_tags);
        match self
            .ec2
            .create_launch_template()
            .launch_template_name(&config.template_name)
            .launch_template_data(data.build())
            .tag_specifications(tags(ResourceType::LaunchTemplate))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .code()
                    .is_some_and(|code| code.contains("AlreadyExists")) =>
            {
                Ok(())
            }
            Err(error) => Err(failed("CreateLaunchTemplate")(error)),
        }
    }

    /// One CreateFleet `instant` call for one instance; the instance, or the errors EC2 gave.
    pub async fn create_fleet(&self, request: &FleetRequest) -> Result<FleetOutcome, CloudError> {
        let configs = request
            .configs
            .iter()
            .map(|config| {
                FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(&config.template_name)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(
                        config
                            .overrides
                            .iter()
                            .map(|(instance_type, subnet)| {
                                FleetLaunchTemplateOverridesRequest::builder()
                                    .instance_type(InstanceType::from(instance_type.as_str()))
                                    .subnet_id(subnet)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .collect();
        let spot = request.capacity_type == SPOT;
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(ec2_tags(&request.tags)))
            .build();
        let mut call = self
            .ec2
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(&request.client_token)
            .set_launch_template_configs(Some(configs))
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(if spot {
                        DefaultTargetCapacityType::Spot
                    } else {
                        DefaultTargetCapacityType::OnDemand
                    })
                    .build(),
            )
            .tag_specifications(tags);
        call = if spot {
            call.spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            )
        } else {
            call.on_demand_options(
                OnDemandOptionsRequest::builder()
                    .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            )
        };
        let output = call.send().await.map_err(failed("CreateFleet"))?;
        let instance_id = output
            .instances()
            .iter()
            .flat_map(|i| i.instance_ids())
            .next()
            .cloned();
        let errors = fleet_errors(&output);
        let Some(instance_id) = instance_id else {
            return Ok(FleetOutcome {
                instance: None,
                errors,
            });
        };
        let described = self
            .ec2
            .describe_instances()
            .instance_ids(&instance_id)
            .send()
            .await
            .map_err(failed("DescribeInstances"))?;
        let instance = described
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(launched_instance);
        Ok(FleetOutcome { instance, errors })
    }

    /// The pending or running instance launched for a NodeClaim, if there is one: a launch
    /// whose answer was lost (a crash, a timeout) is found here instead of launched again.
    pub async fn instance_for_claim(
        &self,
        cluster: &str,
        claim: &str,
    ) -> Result<Option<Instance>, CloudError> {
        Ok(self
            .instances(cluster, Some(claim))
            .await?
            .into_iter()
            .next())
    }

    /// The pending or running instances tagged for `cluster` (and for `claim`, if given).
    pub async fn instances(
        &self,
        cluster: &str,
        claim: Option<&str>,
    ) -> Result<Vec<Instance>, CloudError> {
        let filter = |name: &str, value: &str| Filter::builder().name(name).values(value).build();
        let mut request = self
            .ec2
            .describe_instances()
            .filters(filter(&format!("tag:{CLUSTER_LABEL}"), cluster))
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            );
        if let Some(claim) = claim {
            request = request.filters(filter(&format!("tag:{NODECLAIM_TAG}"), claim));
        }
        let mut pages = request.into_paginator().send();
        let mut instances = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed("DescribeInstances"))?;
            instances.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(launched_instance),
            );
        }
        Ok(instances)
    }

    /// The launch templates tagged for `cluster`.
    pub async fn launch_templates(
        &self,
        cluster: &str,
    ) -> Result<Vec<super::launch_templates::LaunchTemplate>, CloudError> {
        let mut pages = self
            .ec2
            .describe_launch_templates()
            .filters(
                Filter::builder()
                    .name(format!("tag:{CLUSTER_LABEL}"))
                    .values(cluster)
                    .build(),
            )
            .into_paginator()
            .send();
        let mut templates = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed("DescribeLaunchTemplates"))?;
            templates.extend(page.launch_templates().iter().filter_map(|t| {
                Some(super::launch_templates::LaunchTemplate {
                    name: t.launch_template_name()?.to_owned(),
                    node_class: t
                        .tags()
                        .iter()
                        .find(|tag| tag.key() == Some(NODECLASS_TAG))
                        .and_then(|tag| tag.value())
                        .map(str::to_owned),
                    created: t
                        .create_time()
                        .and_then(|at| jiff::Timestamp::from_second(at.secs()).ok()),
                })
            }));
        }
        Ok(templates)
    }

    /// Deletes a launch template; one that is already gone is not an error.
    pub async fn delete_launch_template(&self, name: &str) -> Result<(), CloudError> {
        match self
            .ec2
            .delete_launch_template()
            .launch_template_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.code().is_some_and(|code| code.contains("NotFound")) => Ok(()),
            Err(error) => Err(failed("DeleteLaunchTemplate")(error)),
        }
    }

    /// Terminates an instance; one that is already gone is not an error.
    pub async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        match self
            .ec2
            .terminate_instances()
            .instance_ids(instance_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .code()
                    .is_some_and(|code| code == "InvalidInstanceID.NotFound") =>
            {
                Ok(())
            }
            Err(error) => Err(failed("TerminateInstances")(error)),
        }
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

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(key, value)| Tag::builder().key(key).value(value).build())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        ArchitectureType, CreateFleetError, FleetLaunchTemplateOverrides,
        LaunchTemplateAndOverridesResponse, MemoryInfo, NetworkCardInfo, NetworkInfo, Placement,
        ProcessorInfo, VCpuInfo,
    };

    fn info(arch: ArchitectureType, network: Option<(i32, i32)>) -> InstanceTypeInfo {
        let mut info = InstanceTypeInfo::builder()
            .instance_type(InstanceType::M5Large)
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::I386)
                    .supported_architectures(arch)
                    .build(),
            )
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(2).build())
            .memory_info(MemoryInfo::builder().size_in_mib(8192).build());
        if let Some((enis, ips)) = network {
            info = info.network_info(
                NetworkInfo::builder()
                    .maximum_network_interfaces(enis)
                    .ipv4_addresses_per_interface(ips)
                    .build(),
            );
        }
        info.build()
    }

    #[test]
    fn an_instance_type_has_its_shape_and_kubernetes_architecture() {
        let shape = |vcpus, memory_mib, max_pods, memory_overhead_mib| Shape {
            vcpus,
            memory_mib,
            max_pods,
            memory_overhead_mib,
            ..Shape::default()
        };
        assert_eq!(
            shape_of(&info(ArchitectureType::X8664, Some((3, 10))), 0.075),
            Some((shape(2, 8192, 29, 615), "amd64")),
            "7.5% of 8192 MiB, rounded up"
        );
        assert_eq!(
            shape_of(&info(ArchitectureType::Arm64, None), 0.0),
            Some((shape(2, 8192, 110, 64), "arm64")),
            "without network limits, 110 pods; a Graviton keeps 64 MiB"
        );
        // c6in.32xlarge: two cards of 8 interfaces; EKS counts the default card's, 394 pods.
        let card = |index, enis| {
            NetworkCardInfo::builder()
                .network_card_index(index)
                .maximum_network_interfaces(enis)
                .build()
        };
        let two_cards = InstanceTypeInfo::builder()
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::X8664)
                    .build(),
            )
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(128).build())
            .memory_info(MemoryInfo::builder().size_in_mib(262144).build())
            .network_info(
                NetworkInfo::builder()
                    .maximum_network_interfaces(16)
                    .ipv4_addresses_per_interface(50)
                    .default_network_card_index(0)
                    .network_cards(card(0, 8))
                    .network_cards(card(1, 8))
                    .build(),
            )
            .build();
        assert_eq!(shape_of(&two_cards, 0.0).unwrap().0.max_pods, 394);
        let no_memory = InstanceTypeInfo::builder()
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::X8664)
                    .build(),
            )
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(2).build())
            .build();
        assert_eq!(shape_of(&no_memory, 0.0), None);
        assert_eq!(
            shape_of(&info(ArchitectureType::I386, None), 0.0),
            None,
            "no architecture Kubernetes schedules"
        );
    }

    #[test]
    fn devices_are_counted_as_their_device_plugins_advertise_them() {
        use aws_sdk_ec2::types::{
            EfaInfo, GpuDeviceInfo, GpuInfo, InstanceStorageInfo, NeuronDeviceCoreInfo,
            NeuronDeviceInfo, NeuronInfo,
        };
        let gpu = |maker: &str, count| {
            GpuDeviceInfo::builder()
                .manufacturer(maker)
                .count(count)
                .build()
        };
        let neuron = |count, cores| {
            NeuronDeviceInfo::builder()
                .count(count)
                .core_info(NeuronDeviceCoreInfo::builder().count(cores).build())
                .build()
        };
        let mut accelerated = info(ArchitectureType::X8664, Some((3, 10)));
        accelerated.gpu_info = Some(
            GpuInfo::builder()
                .gpus(gpu("NVIDIA", 4))
                .gpus(gpu("AMD", 2))
                .gpus(gpu("NVIDIA", 1))
                .build(),
        );
        accelerated.neuron_info = Some(NeuronInfo::builder().neuron_devices(neuron(16, 2)).build());
        accelerated.network_info = Some(
            NetworkInfo::builder()
                .maximum_network_interfaces(3)
                .ipv4_addresses_per_interface(10)
                .efa_info(EfaInfo::builder().maximum_efa_interfaces(8).build())
                .build(),
        );
        accelerated.instance_storage_info = Some(
            InstanceStorageInfo::builder()
                .total_size_in_gb(3800)
                .build(),
        );
        let (shape, _) = shape_of(&accelerated, 0.0).unwrap();
        assert_eq!(
            shape.devices,
            Devices {
                nvidia_gpu: 5,
                amd_gpu: 2,
                neuron: 16,
                neuron_core: 32,
                efa: 8
            }
        );
        assert_eq!(shape.instance_store_gb, Some(3800));
        let (plain, _) = shape_of(&info(ArchitectureType::X8664, None), 0.0).unwrap();
        assert_eq!(plain.devices, Devices::default());
        assert_eq!(plain.instance_store_gb, None);
    }

    #[test]
    fn fleet_errors_name_the_type_and_subnet_they_were_for() {
        let output = CreateFleetOutput::builder()
            .errors(
                CreateFleetError::builder()
                    .error_code("InsufficientInstanceCapacity")
                    .error_message("no capacity")
                    .launch_template_and_overrides(
                        LaunchTemplateAndOverridesResponse::builder()
                            .overrides(
                                FleetLaunchTemplateOverrides::builder()
                                    .instance_type(InstanceType::M5Large)
                                    .subnet_id("subnet-1")
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .errors(CreateFleetError::builder().build())
            .build();
        assert_eq!(
            fleet_errors(&output),
            [
                FleetError {
                    code: "InsufficientInstanceCapacity".into(),
                    message: "no capacity".into(),
                    instance_type: Some("m5.large".into()),
                    subnet: Some("subnet-1".into()),
                },
                FleetError {
                    code: "error".into(),
                    message: String::new(),
                    instance_type: None,
                    subnet: None,
                },
            ]
        );
    }

    #[test]
    fn a_described_instance_needs_its_id_type_and_zone() {
        let described = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-1")
            .instance_type(InstanceType::M5Large)
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .image_id("ami-1")
            .subnet_id("subnet-1")
            .security_groups(
                aws_sdk_ec2::types::GroupIdentifier::builder()
                    .group_id("sg-1")
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key(NODECLAIM_TAG)
                    .value("default-abc")
                    .build(),
            )
            .build();
        assert_eq!(
            launched_instance(&described),
            Some(Instance {
                id: "i-1".into(),
                provider_id: "aws:///us-east-1a/i-1".into(),
                claim: Some("default-abc".into()),
                instance_type: "m5.large".into(),
                zone: "us-east-1a".into(),
                image_id: Some("ami-1".into()),
                subnet_id: Some("subnet-1".into()),
                security_group_ids: vec!["sg-1".into()],
            })
        );
        let without_zone = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-1")
            .instance_type(InstanceType::M5Large)
            .build();
        assert_eq!(launched_instance(&without_zone), None);
    }
}
