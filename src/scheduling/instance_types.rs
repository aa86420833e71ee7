//! Instance types as the scheduler sees them: shape, what the kubelet leaves allocatable, the
//! well-known labels, and offerings (zone × capacity type, with price and availability).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

use crate::apis::ec2_node_class::KubeletConfiguration;
use crate::apis::labels::{
    ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_CPU_LABEL, INSTANCE_FAMILY_LABEL,
    INSTANCE_MEMORY_LABEL, INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL,
};

use super::requirements::Requirements;
use super::resources::Resources;

pub const SPOT: &str = "spot";
pub const ON_DEMAND: &str = "on-demand";

/// An instance type's shape, from DescribeInstanceTypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub vcpus: i64,
    pub memory_mib: i64,
    pub max_pods: i64,
}

impl Shape {
    /// EKS's max pods for the VPC CNI: one IP per pod on every ENI but the primary IP, plus two
    /// host-network pods.
    pub fn max_pods_for(enis: i64, ipv4_per_eni: i64) -> i64 {
        enis * (ipv4_per_eni - 1) + 2
    }

    /// CPU left after kube-reserved: 6% of the first core, 1% of the second, 0.5% of the next
    /// two, 0.25% of the rest (EKS bootstrap).
    pub fn allocatable_millicpu(&self) -> i64 {
        let cores = self.vcpus;
        let reserved_tenths = 600 * cores.min(1)
            + 100 * (cores - 1).clamp(0, 1)
            + 50 * (cores - 2).clamp(0, 2)
            + 25 * (cores - 4).max(0);
        cores * 1000 - reserved_tenths / 10
    }

    /// Memory left after kube-reserved (255 MiB + 11 MiB per pod) and the 100 MiB hard eviction
    /// threshold.
    pub fn allocatable_memory_mib(&self) -> i64 {
        self.memory_mib - (255 + 11 * self.max_pods) - 100
    }

    pub fn capacity(&self) -> Resources {
        Resources {
            cpu: self.vcpus * 1000,
            memory: self.memory_mib * MIB,
            pods: self.max_pods,
        }
    }

    pub fn allocatable(&self) -> Resources {
        self.allocatable_with(&Reserved::default())
    }

    /// What the kubelet leaves for pods when its bootstrap sets `reserved`: capacity less
    /// kube-reserved, system-reserved and the hard memory eviction threshold, each EKS's
    /// default where unset (kube-reserved memory follows the max pods in effect).
    pub fn allocatable_with(&self, reserved: &Reserved) -> Resources {
        let pods = reserved.max_pods.unwrap_or(self.max_pods);
        let kube_cpu = reserved
            .kube_millicpu
            .unwrap_or(self.vcpus * 1000 - self.allocatable_millicpu());
        let kube_memory = reserved.kube_memory.unwrap_or((255 + 11 * pods) * MIB);
        let eviction = reserved.eviction_memory.unwrap_or(100 * MIB);
        Resources {
            cpu: self.vcpus * 1000 - kube_cpu - reserved.system_millicpu,
            memory: self.memory_mib * MIB - kube_memory - reserved.system_memory - eviction,
            pods,
        }
    }
}

/// What a node's kubelet is told to keep back from pods; `None` leaves EKS's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub max_pods: Option<i64>,
    pub kube_millicpu: Option<i64>,
    /// Bytes.
    pub kube_memory: Option<i64>,
    pub system_millicpu: i64,
    /// Bytes.
    pub system_memory: i64,
    /// Bytes: the hard eviction threshold for `memory.available`.
    pub eviction_memory: Option<i64>,
}

impl Reserved {
    /// What an EC2NodeClass's `kubelet` settings keep back on a node of `shape`.
    pub fn of_kubelet(kubelet: &KubeletConfiguration, shape: &Shape) -> Self {
        KubeletReservations::of(kubelet).for_shape(shape)
    }
}

/// A class's `kubelet` settings read once, for nodes of any shape: the bootstrap tells the
/// kubelet these, `podsPerCore` caps the max pods at that many per vCPU, and a percentage
/// eviction threshold is of the node's memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KubeletReservations {
    max_pods: Option<i64>,
    pods_per_core: Option<i64>,
    kube_millicpu: Option<i64>,
    kube_memory: Option<i64>,
    system_millicpu: i64,
    system_memory: i64,
    eviction_memory: Option<Threshold>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Threshold {
    Bytes(i64),
    Percent(f64),
}

impl KubeletReservations {
    pub fn of(kubelet: &KubeletConfiguration) -> Self {
        let cpu = |q: Option<&Quantity>| quantity(q?).map(|cores| (cores * 1000.0).round() as i64);
        let memory = |q: Option<&Quantity>| quantity(q?).map(|bytes| bytes as i64);
        let eviction_memory = kubelet
            .eviction_hard
            .get("memory.available")
            .and_then(|threshold| match threshold.strip_suffix('%') {
                Some(percent) => percent.parse().ok().map(Threshold::Percent),
                None => ParsedQuantity::try_from(threshold.as_str())
                    .ok()?
                    .to_bytes_f64()
                    .map(|bytes| Threshold::Bytes(bytes as i64)),
            });
        Self {
            max_pods: kubelet.max_pods.map(i64::from),
            pods_per_core: kubelet.pods_per_core.filter(|p| *p > 0).map(i64::from),
            kube_millicpu: cpu(kubelet.kube_reserved.get("cpu")),
            kube_memory: memory(kubelet.kube_reserved.get("memory")),
            system_millicpu: cpu(kubelet.system_reserved.get("cpu")).unwrap_or(0),
            system_memory: memory(kubelet.system_reserved.get("memory")).unwrap_or(0),
            eviction_memory,
        }
    }

    pub fn for_shape(&self, shape: &Shape) -> Reserved {
        let max_pods = match self.pods_per_core {
            Some(per_core) => Some(
                self.max_pods
                    .unwrap_or(shape.max_pods)
                    .min(per_core * shape.vcpus),
            ),
            None => self.max_pods,
        };
        let eviction_memory = self.eviction_memory.map(|threshold| match threshold {
            Threshold::Bytes(bytes) => bytes,
            Threshold::Percent(p) => (shape.memory_mib as f64 * MIB as f64 * p / 100.0) as i64,
        });
        Reserved {
            max_pods,
            kube_millicpu: self.kube_millicpu,
            kube_memory: self.kube_memory,
            system_millicpu: self.system_millicpu,
            system_memory: self.system_memory,
            eviction_memory,
        }
    }
}

fn quantity(q: &Quantity) -> Option<f64> {
    ParsedQuantity::try_from(q).ok()?.to_bytes_f64()
}

const MIB: i64 = 1024 * 1024;

/// Where and how an instance type can be bought.
#[derive(Clone, Debug, PartialEq)]
pub struct Offering {
    pub zone: String,
    pub capacity_type: String,
    /// Dollars per hour; `None` where no price is known, so it is tried after every priced one.
    pub price: Option<f64>,
    pub available: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstanceType {
    pub name: String,
    /// `amd64` or `arm64`.
    pub arch: String,
    pub shape: Shape,
    pub capacity: Resources,
    pub allocatable: Resources,
    pub offerings: Vec<Offering>,
    /// The labels every node of this type carries, zone and capacity type aside.
    pub labels: Vec<(&'static str, String)>,
}

impl InstanceType {
    pub fn new(name: &str, arch: &str, shape: Shape, offerings: Vec<Offering>) -> Self {
        let family = name.split('.').next().unwrap_or(name);
        Self {
            name: name.to_owned(),
            arch: arch.to_owned(),
            shape,
            capacity: shape.capacity(),
            allocatable: shape.allocatable(),
            offerings,
            labels: vec![
                (INSTANCE_TYPE_LABEL, name.to_owned()),
                (INSTANCE_FAMILY_LABEL, family.to_owned()),
                (INSTANCE_CPU_LABEL, shape.vcpus.to_string()),
                (INSTANCE_MEMORY_LABEL, shape.memory_mib.to_string()),
                (ARCH_LABEL, arch.to_owned()),
                (OS_LABEL, "linux".to_owned()),
            ],
        }
    }

    /// The price of the cheapest available offering, for ordering types by price; `None` when
    /// no available offering has a known price.
    pub fn min_price(&self) -> Option<f64> {
        self.cheapest_offering(&Requirements::default())
            .and_then(|offering| offering.price)
    }

    /// Whether a node of this type can satisfy `requirements`: its labels are allowed and at
    /// least one available offering is in an allowed zone and capacity type.
    pub fn satisfies(&self, requirements: &Requirements) -> bool {
        self.labels
            .iter()
            .all(|(key, value)| requirements.allows(key, value))
            && self.cheapest_offering(requirements).is_some()
    }

    /// The cheapest available offering that `requirements` allow.
    pub fn cheapest_offering(&self, requirements: &Requirements) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|o| {
                o.available
                    && requirements.allows(ZONE_LABEL, &o.zone)
                    && requirements.allows(CAPACITY_TYPE_LABEL, &o.capacity_type)
            })
            .min_by(|a, b| price_order(a).total_cmp(&price_order(b)))
    }
}

/// An offering's price for ordering: an unknown price after every known one.
fn price_order(offering: &Offering) -> f64 {
    offering.price.unwrap_or(f64::INFINITY)
}

/// Labels the scheduler knows every launched node will carry a value for.
pub fn is_well_known(key: &str) -> bool {
    [
        INSTANCE_TYPE_LABEL,
        INSTANCE_FAMILY_LABEL,
        INSTANCE_CPU_LABEL,
        INSTANCE_MEMORY_LABEL,
        ARCH_LABEL,
        OS_LABEL,
        ZONE_LABEL,
        CAPACITY_TYPE_LABEL,
    ]
    .contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::requirements::Requirement;

    #[test]
    fn allocatable_follows_eks_kube_reserved() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: Shape::max_pods_for(3, 10),
        };
        assert_eq!(m5_large.max_pods, 29);
        assert_eq!(m5_large.allocatable_millicpu(), 2000 - 70);
        assert_eq!(
            m5_large.allocatable_memory_mib(),
            8192 - (255 + 11 * 29) - 100
        );
        let big = Shape {
            vcpus: 16,
            memory_mib: 65536,
            max_pods: 234,
        };
        assert_eq!(big.allocatable_millicpu(), 16000 - (60 + 10 + 10 + 30));
    }

    #[test]
    fn a_classs_kubelet_settings_become_the_reservations_its_bootstrap_sets() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: 29,
        };
        let kubelet: KubeletConfiguration = serde_json::from_value(serde_json::json!({
            "podsPerCore": 10,
            "kubeReserved": {"cpu": "250m", "memory": "1Gi"},
            "systemReserved": {"memory": "200Mi"},
            "evictionHard": {"memory.available": "5%"}
        }))
        .unwrap();
        assert_eq!(
            Reserved::of_kubelet(&kubelet, &m5_large),
            Reserved {
                max_pods: Some(20),
                kube_millicpu: Some(250),
                kube_memory: Some(1024 * MIB),
                system_millicpu: 0,
                system_memory: 200 * MIB,
                eviction_memory: Some(8192 * MIB / 20),
            }
        );
        assert_eq!(
            Reserved::of_kubelet(&KubeletConfiguration::default(), &m5_large),
            Reserved::default()
        );
        let capped: KubeletConfiguration =
            serde_json::from_value(serde_json::json!({"maxPods": 110, "podsPerCore": 100}))
                .unwrap();
        assert_eq!(Reserved::of_kubelet(&capped, &m5_large).max_pods, Some(110));
    }

    #[test]
    fn a_bootstraps_reservations_replace_the_defaults_they_set() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: 29,
        };
        assert_eq!(
            m5_large.allocatable_with(&Reserved::default()),
            m5_large.allocatable()
        );
        let reserved = Reserved {
            max_pods: Some(110),
            system_millicpu: 100,
            system_memory: 200 * MIB,
            eviction_memory: Some(500 * MIB),
            ..Reserved::default()
        };
        assert_eq!(
            m5_large.allocatable_with(&reserved),
            Resources {
                cpu: 2000 - 70 - 100,
                memory: (8192 - (255 + 11 * 110) - 200 - 500) * MIB,
                pods: 110,
            },
            "kube-reserved memory follows the max pods set"
        );
        let kube = Reserved {
            kube_millicpu: Some(500),
            kube_memory: Some(1024 * MIB),
            ..Reserved::default()
        };
        assert_eq!(
            m5_large.allocatable_with(&kube),
            Resources {
                cpu: 1500,
                memory: (8192 - 1024 - 100) * MIB,
                pods: 29,
            }
        );
    }

    #[test]
    fn offerings_follow_zone_and_capacity_type_requirements() {
        let offering = |zone: &str, capacity_type: &str, price: f64| Offering {
            zone: zone.into(),
            capacity_type: capacity_type.into(),
            price: Some(price),
            available: true,
        };
        let it = InstanceType::new(
            "m5.large",
            "amd64",
            Shape {
                vcpus: 2,
                memory_mib: 8192,
                max_pods: 29,
            },
            vec![offering("a", SPOT, 0.03), offering("b", ON_DEMAND, 0.096)],
        );
        assert_eq!(
            it.cheapest_offering(&Requirements::default())
                .unwrap()
                .price,
            Some(0.03)
        );
        let mut on_demand = Requirements::default();
        on_demand.add(CAPACITY_TYPE_LABEL, Requirement::one_of([ON_DEMAND]));
        assert_eq!(it.cheapest_offering(&on_demand).unwrap().zone, "b");
        on_demand.add(ZONE_LABEL, Requirement::one_of(["a"]));
        assert!(!it.satisfies(&on_demand));
        let mut graviton = Requirements::default();
        graviton.add(ARCH_LABEL, Requirement::one_of(["arm64"]));
        assert!(!it.satisfies(&graviton));
    }
}
