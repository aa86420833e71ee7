//! The Node a kubelet on an EKS node registers for an instance: name, providerID, well-known
//! labels, and from its bootstrap the labels, taints, max pods and the reservations that leave
//! its allocatable.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use kube::api::ObjectMeta;
use windlass::apis::labels::{
    ARCH_LABEL, CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL,
};
use windlass::aws::provider_id;
pub use windlass::scheduling::instance_types::Shape;
use windlass::scheduling::instance_types::{KubeletReservations, Storage};

use crate::bootstrap::Bootstrap;

/// Nodes this registrar made carry this label, set to the cluster name, so it can find them again.
pub const REGISTERED_FOR_LABEL: &str = "node-registrar.windlass.dev/cluster";
/// kwok manages only Nodes annotated like this.
const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// What the registrar needs to know about one running instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    pub private_dns_name: Option<String>,
    pub spot: bool,
    /// EBS volume ids by device name.
    pub volumes: BTreeMap<String, String>,
}

/// `arch` is the instance type's, as Kubernetes names it (`amd64`, `arm64`); `disks` are the
/// sizes of its volumes by device name, of which the kubelet's filesystem is Bottlerocket's
/// data volume (`/dev/xvdb`) or else the root volume (`/dev/xvda`). The instance store is not
/// modelled: a RAID0 bootstrap still reports the volume.
pub fn node(
    instance: &Instance,
    shape: &Shape,
    arch: &str,
    bootstrap: &Bootstrap,
    disks: &BTreeMap<String, i64>,
    cluster: &str,
) -> Node {
    let name = instance
        .private_dns_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| instance.id.clone());
    let region = instance
        .zone
        .trim_end_matches(|c: char| c.is_ascii_lowercase());
    let mut labels = bootstrap.labels.clone();
    labels.extend(
        [
            (HOSTNAME_LABEL, name.as_str()),
            (OS_LABEL, "linux"),
            (ARCH_LABEL, arch),
            (INSTANCE_TYPE_LABEL, instance.instance_type.as_str()),
            (ZONE_LABEL, instance.zone.as_str()),
            (REGION_LABEL, region),
            (
                CAPACITY_TYPE_LABEL,
                if instance.spot { "spot" } else { "on-demand" },
            ),
            (REGISTERED_FOR_LABEL, cluster),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let taints = bootstrap.taints.clone();
    let filesystem = (bootstrap.family == "Bottlerocket")
        .then(|| disks.get("/dev/xvdb"))
        .flatten()
        .or_else(|| disks.get("/dev/xvda"))
        .copied();
    let storage = Storage {
        root_volume: filesystem,
        instance_store_raid0: false,
    };
    let kubelet = bootstrap.kubelet();
    let reserved = KubeletReservations::of(Some(&kubelet), storage).for_shape(shape);
    Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                KWOK_ANNOTATION.0.to_owned(),
                KWOK_ANNOTATION.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id(&instance.zone, &instance.id)),
            taints: (!taints.is_empty()).then_some(taints),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(shape.capacity_with(&reserved).to_list()),
            allocatable: Some(shape.allocatable_with(&reserved).to_list()),
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Taint;
    use windlass::apis::labels::NODEPOOL_LABEL;

    use super::*;

    fn m5_large() -> (Instance, Shape) {
        let instance = Instance {
            id: "i-0123".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1b".into(),
            private_dns_name: Some("ip-10-42-16-5.ec2.internal".into()),
            spot: false,
            volumes: BTreeMap::new(),
        };
        (
            instance,
            Shape {
                vcpus: 2,
                memory_mib: 8192,
                max_pods: Shape::max_pods_for(3, 10),
                memory_overhead_mib: Shape::memory_overhead_mib(8192, "amd64", 0.075),
                ..Shape::default()
            },
        )
    }

    fn bootstrap() -> Bootstrap {
        Bootstrap {
            family: "AL2023",
            cluster: "local".into(),
            endpoint: "https://127.0.0.1:16443".into(),
            ca_bundle: "Q0E=".into(),
            labels: BTreeMap::from([(NODEPOOL_LABEL.to_owned(), "default".to_owned())]),
            ..Bootstrap::default()
        }
    }

    #[test]
    fn node_looks_like_a_kubelet_registration() {
        let (instance, shape) = m5_large();
        let node = node(
            &instance,
            &shape,
            "amd64",
            &bootstrap(),
            &BTreeMap::new(),
            "local",
        );
        assert_eq!(
            node.metadata.name.as_deref(),
            Some("ip-10-42-16-5.ec2.internal")
        );
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels[INSTANCE_TYPE_LABEL], "m5.large");
        assert_eq!(labels[ZONE_LABEL], "us-east-1b");
        assert_eq!(labels[REGION_LABEL], "us-east-1");
        assert_eq!(labels[ARCH_LABEL], "amd64");
        assert_eq!(labels[CAPACITY_TYPE_LABEL], "on-demand");
        assert_eq!(labels[NODEPOOL_LABEL], "default");
        assert_eq!(labels[REGISTERED_FOR_LABEL], "local");
        assert_eq!(
            node.spec.unwrap().provider_id.as_deref(),
            Some("aws:///us-east-1b/i-0123")
        );
        let status = node.status.unwrap();
        assert_eq!(status.capacity.unwrap()["cpu"].0, "2");
        let allocatable = status.allocatable.unwrap();
        assert_eq!(allocatable["cpu"].0, "1930m");
        assert_eq!(allocatable["pods"].0, "29");
        assert_eq!(
            allocatable["memory"].0,
            format!("{}Mi", 8192 - 615 - (255 + 11 * 29) - 100),
            "7.5% of the listed memory is the VM's"
        );
    }

    #[test]
    fn ephemeral_storage_is_the_kubelets_volume_less_reservations() {
        let (instance, shape) = m5_large();
        let disks = BTreeMap::from([
            ("/dev/xvda".to_owned(), 4_i64 << 30),
            ("/dev/xvdb".to_owned(), 50 << 30),
        ]);
        let storage = |bootstrap: &Bootstrap, disks: &BTreeMap<String, i64>| {
            let status = node(&instance, &shape, "amd64", bootstrap, disks, "local")
                .status
                .unwrap();
            (
                status.capacity.unwrap()["ephemeral-storage"].0.clone(),
                status.allocatable.unwrap()["ephemeral-storage"].0.clone(),
            )
        };
        let bottlerocket = Bootstrap {
            family: "Bottlerocket",
            ..bootstrap()
        };
        assert_eq!(
            storage(&bottlerocket, &disks),
            ("50Gi".into(), "44Gi".into()),
            "the data volume, less 1Gi kube-reserved and the 10% nodefs threshold"
        );
        assert_eq!(
            storage(&bootstrap(), &disks),
            (
                "4Gi".into(),
                format!("{}", (3 << 30) - ((4_i64 << 30) / 10 + 1))
            )
        );
        assert_eq!(
            storage(&bootstrap(), &BTreeMap::new()).0,
            "20Gi",
            "no volume found: the default root volume"
        );
    }

    #[test]
    fn node_takes_labels_taints_and_reservations_from_its_bootstrap() {
        let (instance, shape) = m5_large();
        let mut bootstrap = bootstrap();
        bootstrap.labels.insert("team".into(), "data".into());
        bootstrap.taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("jobs".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        bootstrap.max_pods = Some(110);
        bootstrap.system_reserved = BTreeMap::from([("cpu".into(), "100m".into())]);
        let node = node(
            &instance,
            &shape,
            "amd64",
            &bootstrap,
            &BTreeMap::new(),
            "local",
        );
        assert_eq!(node.metadata.labels.unwrap()["team"], "data");
        let taints: Vec<Taint> = node.spec.unwrap().taints.unwrap();
        assert_eq!(taints[0].key, "dedicated");
        let allocatable = node.status.unwrap().allocatable.unwrap();
        assert_eq!(allocatable["pods"].0, "110");
        assert_eq!(allocatable["cpu"].0, "1830m");
    }

    #[test]
    fn graviton_and_spot_instances_are_labelled_as_such() {
        let (mut instance, shape) = m5_large();
        instance.spot = true;
        instance.private_dns_name = None;
        let node = node(
            &instance,
            &shape,
            "arm64",
            &bootstrap(),
            &BTreeMap::new(),
            "local",
        );
        assert_eq!(node.metadata.name.as_deref(), Some("i-0123"));
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels[ARCH_LABEL], "arm64");
        assert_eq!(labels[CAPACITY_TYPE_LABEL], "spot");
    }
}
