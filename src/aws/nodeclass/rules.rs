//! EC2NodeClass resolution rules, without I/O: which SSM parameters an AMI alias reads, the node
//! requirements an image is valid for, and how resolved images are ordered.

use crate::apis::ec2_node_class::ResolvedAmi;
use crate::apis::labels::ARCH_LABEL;
use crate::apis::node_pool::{NodeSelectorRequirementWithMinValues, RequirementOperator};

/// One SSM parameter an alias reads, and the architecture of the image it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasParameter {
    pub path: String,
    /// `amd64` or `arm64`.
    pub arch: &'static str,
}

/// An `amiSelectorTerms[].alias` Windlass cannot resolve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("alias {0:?} is not family@version")]
    NotFamilyAtVersion(String),
    #[error(
        "alias {0:?} is not supported: use al2023@latest|@vYYYYMMDD, bottlerocket@latest|@vX.Y.Z or al2@latest (Windows has no bootstrap in Windlass yet)"
    )]
    Unsupported(String),
}

/// The SSM parameters behind an alias such as `al2023@latest` or `bottlerocket@v1.26.0`, for a
/// cluster on Kubernetes `minor` (e.g. `1.36`): the public parameters EKS and Bottlerocket
/// publish for their node images.
pub fn alias_parameters(alias: &str, minor: &str) -> Result<Vec<AliasParameter>, AliasError> {
    let (family, version) = alias
        .split_once('@')
        .ok_or_else(|| AliasError::NotFamilyAtVersion(alias.to_owned()))?;
    let both = |path: &dyn Fn(&str) -> String| {
        vec![
            AliasParameter {
                path: path("x86_64"),
                arch: "amd64",
            },
            AliasParameter {
                path: path("arm64"),
                arch: "arm64",
            },
        ]
    };
    Ok(match (family, version) {
        ("al2023", "latest") => both(&|arch| {
            format!(
                "/aws/service/eks/optimized-ami/{minor}/amazon-linux-2023/{arch}/standard/recommended/image_id"
            )
        }),
        ("al2023", version) => both(&|arch| {
            format!(
                "/aws/service/eks/optimized-ami/{minor}/amazon-linux-2023/{arch}/standard/amazon-eks-node-al2023-{arch}-standard-{minor}-{version}/image_id"
            )
        }),
        ("bottlerocket", version) => {
            let version = if version == "latest" {
                "latest".to_owned()
            } else {
                version.trim_start_matches('v').to_owned()
            };
            both(&|arch| {
                format!("/aws/service/bottlerocket/aws-k8s-{minor}/{arch}/{version}/image_id")
            })
        }
        ("al2", "latest") => vec![
            AliasParameter {
                path: format!(
                    "/aws/service/eks/optimized-ami/{minor}/amazon-linux-2/recommended/image_id"
                ),
                arch: "amd64",
            },
            AliasParameter {
                path: format!(
                    "/aws/service/eks/optimized-ami/{minor}/amazon-linux-2-arm64/recommended/image_id"
                ),
                arch: "arm64",
            },
        ],
        _ => {
            return Err(AliasError::Unsupported(alias.to_owned()));
        }
    })
}

/// The Kubernetes architecture of an EC2 image architecture.
pub fn kubernetes_arch(ec2_architecture: &str) -> Option<&'static str> {
    match ec2_architecture {
        "x86_64" => Some("amd64"),
        "arm64" => Some("arm64"),
        _ => None,
    }
}

/// A resolved image, valid for nodes of one architecture.
pub fn resolved_ami(id: &str, name: Option<String>, arch: &str) -> ResolvedAmi {
    ResolvedAmi {
        id: id.to_owned(),
        name,
        requirements: vec![NodeSelectorRequirementWithMinValues {
            key: ARCH_LABEL.to_owned(),
            operator: RequirementOperator::In,
            values: vec![arch.to_owned()],
            min_values: None,
        }],
    }
}

/// Of the images found by selectors, the newest of each architecture, as Karpenter chooses;
/// ordered by architecture.
pub fn newest_per_arch(mut images: Vec<(ResolvedAmi, String)>) -> Vec<ResolvedAmi> {
    images.sort_by(|(a, a_created), (b, b_created)| b_created.cmp(a_created).then(a.id.cmp(&b.id)));
    let arch = |ami: &ResolvedAmi| ami.requirements.first().map(|r| r.values.clone());
    let mut seen = Vec::new();
    let mut newest: Vec<ResolvedAmi> = images
        .into_iter()
        .filter(|(ami, _)| {
            let arch = arch(ami);
            if seen.contains(&arch) {
                false
            } else {
                seen.push(arch);
                true
            }
        })
        .map(|(ami, _)| ami)
        .collect();
    newest.sort_by_key(arch);
    newest
}

/// The instance profile Windlass makes for a node class's role. IAM allows 128 characters;
/// a longer name is shortened to a hash of the cluster and node class.
pub fn instance_profile_name(cluster: &str, node_class: &str) -> String {
    let name = format!("windlass_{cluster}_{node_class}");
    if name.len() <= 128 {
        return name;
    }
    let hash = crate::aws::short_hash(format!("{cluster}/{node_class}").as_bytes(), 16);
    format!("windlass_{hash}")
}

/// The role's name, from a name or an ARN (`arn:aws:iam::<account>:role/<path>/<name>`).
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_read_the_published_parameters() {
        let latest = alias_parameters("al2023@latest", "1.36").unwrap();
        assert_eq!(
            latest[0].path,
            "/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/x86_64/standard/recommended/image_id"
        );
        assert_eq!(latest[1].arch, "arm64");
        let pinned = alias_parameters("bottlerocket@v1.26.0", "1.36").unwrap();
        assert_eq!(
            pinned[0].path,
            "/aws/service/bottlerocket/aws-k8s-1.36/x86_64/1.26.0/image_id"
        );
        assert!(alias_parameters("windows2022@latest", "1.36").is_err());
        let error = alias_parameters("ubuntu@latest", "1.36")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"ubuntu@latest\" is not supported"),
            "{error}"
        );
    }

    #[test]
    fn the_newest_image_of_each_architecture_wins() {
        let image = |id: &str, arch: &str, created: &str| {
            (resolved_ami(id, None, arch), created.to_owned())
        };
        let chosen = newest_per_arch(vec![
            image("ami-arm", "arm64", "2026-09-01T00:00:00Z"),
            image("ami-old", "amd64", "2026-01-01T00:00:00Z"),
            image("ami-new", "amd64", "2026-06-01T00:00:00Z"),
        ]);
        let ids: Vec<_> = chosen.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["ami-new", "ami-arm"]);
    }

    #[test]
    fn instance_profiles_are_named_for_cluster_and_class_within_iam_limits() {
        assert_eq!(
            instance_profile_name("prod", "default"),
            "windlass_prod_default"
        );
        let long = instance_profile_name("prod", &"x".repeat(130));
        assert!(long.len() <= 128 && long.starts_with("windlass_"), "{long}");
        assert_ne!(long, instance_profile_name("prod", &"y".repeat(130)));
        assert_eq!(role_name("NodeRole"), "NodeRole");
        assert_eq!(
            role_name("arn:aws:iam::123456789012:role/nodes/NodeRole"),
            "NodeRole"
        );
    }
}
