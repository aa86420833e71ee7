//! The EC2 and SSM calls node classes need, behind one type: describe subnets, security groups
//! and images by selector term, and read SSM parameters. Answers are plain project types.

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::Filter;

use crate::apis::ec2_node_class::{
    AmiSelectorTerm, ResolvedAmi, ResolvedSecurityGroup, ResolvedSubnet, SecurityGroupSelectorTerm,
    SubnetSelectorTerm,
};
use crate::provisioning::node_class::{kubernetes_arch, resolved_ami};

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
