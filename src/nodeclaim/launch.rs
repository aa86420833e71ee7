//! Launch: the cloud creates the NodeClaim's instance, and the claim records it (providerID,
//! image, capacity and allocatable of its type, the Launched condition) and gets the labels
//! of the instance it became. No Kubernetes I/O: the controller reads the node class and
//! writes what this returns.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::set_condition;
use crate::apis::conditions::READY;
use crate::apis::ec2_node_class::{EC2NodeClass, EC2NodeClassSpec};
use crate::apis::labels::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL, add_karpenter_aliases,
};
use crate::apis::node_claim::{CONDITION_LAUNCHED, NodeClaim, NodeClaimStatus};
use crate::aws::kubelet_reservations;
use crate::cloud::{CloudError, CloudProvider, CreateError, Launched};
use crate::scheduling::instance_types::{Reserved, type_labels};
use crate::status::is_true;

/// What a launch attempt came to.
#[derive(Debug, PartialEq)]
pub enum Launch {
    /// The instance exists and the status records it; the NodeClaim gets these labels.
    Launched { labels: BTreeMap<String, String> },
    /// Nothing launched; try again after `retry`. `warning` is worth an Event.
    NotLaunched {
        retry: Duration,
        warning: Option<String>,
    },
}

/// Launches `claim`'s instance if its node class is Ready, recording the outcome in `status`.
/// A failed cloud call is an error, retried by the controller.
pub async fn launch<C: CloudProvider>(
    cloud: &C,
    claim: &NodeClaim,
    class: Option<&EC2NodeClass>,
    status: &mut NodeClaimStatus,
    now: Timestamp,
) -> Result<Launch, CloudError> {
    let class_name = &claim.spec.node_class_ref.name;
    let ready_class = class.filter(|class| {
        class
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, READY))
    });
    let outcome = match ready_class {
        Some(class) => cloud.create(claim, class).await,
        None => Err(CreateError::NodeClassNotReady(class_name.clone())),
    };
    match outcome {
        Ok(launched) => Ok(Launch::Launched {
            labels: record(claim, status, &launched, class.map(|c| &c.spec), now),
        }),
        Err(CreateError::Api(error)) => Err(error),
        Err(error) => {
            let (retry, warning) = match &error {
                CreateError::LaunchedNothing(message) => {
                    (Duration::from_secs(5), Some(message.clone()))
                }
                // The class is being resolved again; the next attempt goes by what it finds.
                CreateError::NodeClassOutdated { .. } => {
                    (Duration::from_secs(5), Some(error.to_string()))
                }
                CreateError::ClusterUnknown(_) => {
                    (Duration::from_secs(10), Some(error.to_string()))
                }
                _ => (Duration::from_secs(10), None),
            };
            set_condition(
                status,
                claim,
                CONDITION_LAUNCHED,
                false,
                error.reason(),
                error.to_string(),
                now,
            );
            Ok(Launch::NotLaunched { retry, warning })
        }
    }
}

/// Records the launched instance in `status`, its capacity and allocatable what the kubelet
/// will report under the class's `kubelet` settings and storage; the labels the NodeClaim
/// takes from it.
fn record(
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    launched: &Launched,
    class: Option<&EC2NodeClassSpec>,
    now: Timestamp,
) -> BTreeMap<String, String> {
    let instance = &launched.instance;
    if let Some(facts) = &launched.facts {
        let shape = &facts.shape;
        let reserved = class.map_or_else(Reserved::default, |spec| {
            kubelet_reservations(spec).for_shape(shape)
        });
        status.capacity = shape.capacity_with(&reserved).to_list();
        status.allocatable = shape.allocatable_with(&reserved).to_list();
    }
    status.provider_id = Some(instance.provider_id.clone());
    status.image_id = instance.image_id.clone();
    set_condition(
        status,
        claim,
        CONDITION_LAUNCHED,
        true,
        "Launched",
        format!("instance {} ({})", instance.id, instance.instance_type),
        now,
    );
    let mut labels = BTreeMap::from([
        (
            INSTANCE_TYPE_LABEL.to_owned(),
            instance.instance_type.clone(),
        ),
        (ZONE_LABEL.to_owned(), instance.zone.clone()),
        (
            CAPACITY_TYPE_LABEL.to_owned(),
            launched.capacity_type.clone(),
        ),
        (OS_LABEL.to_owned(), "linux".to_owned()),
    ]);
    if let Some(facts) = &launched.facts {
        let of_type = type_labels(
            &instance.instance_type,
            facts.arch,
            &facts.shape,
            &facts.hardware,
        );
        labels.extend(of_type.into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    add_karpenter_aliases(&mut labels);
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::labels::{
        ARCH_LABEL, INSTANCE_CPU_LABEL, INSTANCE_FAMILY_LABEL, INSTANCE_MEMORY_LABEL,
    };
    use crate::cloud::fake::FakeCloud;
    use crate::scheduling::fake;
    use serde_json::json;

    fn claim(instance_types: &[&str]) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "default-abc", "uid": "u-1", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"requirements": [
                        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": instance_types},
                        {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": ["on-demand"]}],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "default"}}
        }))
        .unwrap()
    }

    fn class(ready: bool) -> EC2NodeClass {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass",
            "metadata": {"name": "default"},
            "spec": {"role": "node", "amiSelectorTerms": [{"alias": "al2023@latest"}],
                     "subnetSelectorTerms": [{"tags": {"a": "b"}}],
                     "securityGroupSelectorTerms": [{"tags": {"a": "b"}}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                        "reason": "r", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:10Z".parse().unwrap()
    }

    fn condition<'a>(status: &'a NodeClaimStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[tokio::test]
    async fn a_launched_claims_allocatable_is_what_the_classs_kubelet_settings_leave() {
        let cloud = FakeCloud::new(fake::catalog(3));
        let name = cloud.types[1].name.clone();
        let mut class = class(true);
        class.spec.kubelet = Some(
            serde_json::from_value(json!({"maxPods": 12, "systemReserved": {"cpu": "100m"}}))
                .unwrap(),
        );
        let mut status = NodeClaimStatus::default();
        launch(&cloud, &claim(&[&name]), Some(&class), &mut status, now())
            .await
            .unwrap();
        let shape = cloud.types[1].shape;
        let expected = shape.allocatable_with(&Reserved {
            max_pods: Some(12),
            system_millicpu: 100,
            ..Reserved::default()
        });
        assert_eq!(status.allocatable, expected.to_list());
        assert_eq!(status.allocatable["pods"].0, "12");
    }

    #[tokio::test]
    async fn a_launched_claim_records_its_instance_and_takes_its_labels() {
        let cloud = FakeCloud::new(fake::catalog(3));
        let name = cloud.types[1].name.clone();
        let claim = claim(&[&name]);
        let mut status = NodeClaimStatus::default();
        let launch = launch(&cloud, &claim, Some(&class(true)), &mut status, now())
            .await
            .unwrap();
        let Launch::Launched { labels } = launch else {
            panic!("not launched: {launch:?}")
        };
        assert_eq!(
            status.provider_id.as_deref(),
            Some("fake:///test-zone-1/i-0001")
        );
        assert_eq!(status.image_id.as_deref(), Some("ami-fake"));
        let shape = cloud.types[1].shape;
        assert_eq!(status.capacity, shape.capacity().to_list());
        assert_eq!(status.allocatable, shape.allocatable().to_list());
        assert_eq!(
            condition(&status, CONDITION_LAUNCHED),
            (
                "True",
                "Launched",
                format!("instance i-0001 ({name})").as_str()
            )
        );
        assert_eq!(labels[INSTANCE_TYPE_LABEL], name);
        assert_eq!(labels[ZONE_LABEL], "test-zone-1");
        assert_eq!(labels[CAPACITY_TYPE_LABEL], "on-demand");
        assert_eq!(labels[ARCH_LABEL], "arm64");
        assert_eq!(labels[INSTANCE_CPU_LABEL], "2");
        assert_eq!(labels[INSTANCE_MEMORY_LABEL], "4096");
        assert_eq!(labels[INSTANCE_FAMILY_LABEL], "fake-it-1");
        assert_eq!(labels["karpenter.k8s.aws/instance-family"], "fake-it-1");
        assert_eq!(labels["karpenter.sh/capacity-type"], "on-demand");
        assert_eq!(labels["karpenter.k8s.aws/instance-cpu"], "2");
    }

    #[tokio::test]
    async fn launching_again_finds_the_same_instance() {
        let cloud = FakeCloud::new(fake::catalog(1));
        let claim = claim(&[&cloud.types[0].name.clone()]);
        for _ in 0..2 {
            let mut status = NodeClaimStatus::default();
            launch(&cloud, &claim, Some(&class(true)), &mut status, now())
                .await
                .unwrap();
            assert_eq!(
                status.provider_id.as_deref(),
                Some("fake:///test-zone-1/i-0001")
            );
        }
        assert_eq!(cloud.launches(), 1);
    }

    #[tokio::test]
    async fn a_claim_whose_node_class_is_missing_or_not_ready_asks_the_cloud_nothing() {
        let cloud = FakeCloud::new(fake::catalog(1));
        let claim = claim(&[&cloud.types[0].name.clone()]);
        for class in [None, Some(class(false))] {
            let mut status = NodeClaimStatus::default();
            let launch = launch(&cloud, &claim, class.as_ref(), &mut status, now())
                .await
                .unwrap();
            assert_eq!(
                launch,
                Launch::NotLaunched {
                    retry: Duration::from_secs(10),
                    warning: None
                }
            );
            assert_eq!(
                condition(&status, CONDITION_LAUNCHED),
                (
                    "False",
                    "NodeClassNotReady",
                    "EC2NodeClass default is missing or not Ready"
                )
            );
            assert_eq!(status.provider_id, None);
        }
        assert_eq!(cloud.launches(), 0);
    }

    #[tokio::test]
    async fn a_launch_that_finds_the_classs_subnet_gone_is_a_warning_and_a_retry() {
        let cloud = FakeCloud::new(fake::catalog(1));
        *cloud.subnet_gone.lock().unwrap() = Some("subnet-0abc".into());
        let claim = claim(&[&cloud.types[0].name.clone()]);
        let mut status = NodeClaimStatus::default();
        let launch = launch(&cloud, &claim, Some(&class(true)), &mut status, now())
            .await
            .unwrap();
        let message = "EC2NodeClass default resolved to something that is gone: CreateFleet: \
                       InvalidSubnetID.NotFound: The subnet ID 'subnet-0abc' does not exist";
        assert_eq!(
            launch,
            Launch::NotLaunched {
                retry: Duration::from_secs(5),
                warning: Some(message.into())
            }
        );
        assert_eq!(
            condition(&status, CONDITION_LAUNCHED),
            ("False", "NodeClassOutdated", message)
        );
        assert_eq!(cloud.launches(), 0);
    }

    #[tokio::test]
    async fn a_launch_the_cloud_could_not_fill_is_a_warning_and_a_retry() {
        let cloud = FakeCloud::new(fake::catalog(1));
        *cloud.out_of_capacity.lock().unwrap() = true;
        let claim = claim(&[&cloud.types[0].name.clone()]);
        let mut status = NodeClaimStatus::default();
        let launch = launch(&cloud, &claim, Some(&class(true)), &mut status, now())
            .await
            .unwrap();
        let message = "InsufficientInstanceCapacity: no fake-it-0.1x capacity";
        assert_eq!(
            launch,
            Launch::NotLaunched {
                retry: Duration::from_secs(5),
                warning: Some(message.into())
            }
        );
        assert_eq!(
            condition(&status, CONDITION_LAUNCHED),
            ("False", "LaunchFailed", message)
        );
        assert_eq!(status.provider_id, None);
    }
}
