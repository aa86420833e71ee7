//! Instance types as the scheduler sees them: shape, what the kubelet leaves allocatable, the
//! well-known labels, and offerings (zone × capacity type, with price and availability).

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

use crate::apis::ec2_node_class::KubeletConfiguration;
use crate::apis::labels::{
    ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_CATEGORY_LABEL, INSTANCE_CPU_LABEL,
    INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL, INSTANCE_FAMILY_LABEL, INSTANCE_GENERATION_LABEL,
    INSTANCE_GPU_COUNT_LABEL, INSTANCE_GPU_MANUFACTURER_LABEL, INSTANCE_GPU_MEMORY_LABEL,
    INSTANCE_GPU_NAME_LABEL, INSTANCE_HYPERVISOR_LABEL, INSTANCE_LOCAL_NVME_LABEL,
    INSTANCE_MEMORY_LABEL, INSTANCE_NETWORK_BANDWIDTH_LABEL, INSTANCE_SIZE_LABEL,
    INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL,
};

use super::requirements::{Requirement, Requirements};
use super::resources::{EPHEMERAL_STORAGE, Resources};

pub const SPOT: &str = "spot";
pub const ON_DEMAND: &str = "on-demand";

/// An instance type's shape, from DescribeInstanceTypes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub vcpus: i64,
    /// As EC2 lists it; the kubelet sees `memory_overhead_mib` less.
    pub memory_mib: i64,
    pub max_pods: i64,
    /// Memory the hypervisor and firmware keep from the listed memory, MiB.
    pub memory_overhead_mib: i64,
    pub devices: Devices,
    /// Total instance store, GB: the ephemeral storage of a node that makes it a RAID0 array.
    pub instance_store_gb: Option<i64>,
}

/// The devices of a type that pods request as extended resources, counted as their device
/// plugins advertise them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub nvidia_gpu: i64,
    pub amd_gpu: i64,
    pub neuron: i64,
    pub neuron_core: i64,
    pub efa: i64,
}

/// The share of a type's listed memory the VM keeps, unless `--vm-memory-overhead-percent`
/// says otherwise (Karpenter's default).
pub const DEFAULT_VM_MEMORY_OVERHEAD: f64 = 0.075;

/// The root volume a node boots with unless its EC2NodeClass sizes another.
pub const DEFAULT_ROOT_VOLUME: i64 = 20 * GIB;

impl Shape {
    /// EKS's max pods for the VPC CNI: one IP per pod on every ENI but the primary IP, plus two
    /// host-network pods.
    pub fn max_pods_for(enis: i64, ipv4_per_eni: i64) -> i64 {
        enis * (ipv4_per_eni - 1) + 2
    }

    /// The memory the kubelet will not see of `memory_mib`, as Karpenter estimates it: 64 MiB
    /// a Graviton keeps for its contiguous memory allocator, then `overhead` (a share) of the
    /// rest, rounded up to a MiB.
    pub fn memory_overhead_mib(memory_mib: i64, arch: &str, overhead: f64) -> i64 {
        let firmware = if arch == "arm64" { 64 } else { 0 };
        firmware + ((memory_mib - firmware) as f64 * overhead).ceil() as i64
    }

    /// Memory the kubelet reports as capacity, MiB.
    pub fn usable_memory_mib(&self) -> i64 {
        self.memory_mib - self.memory_overhead_mib
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

    pub fn capacity(&self) -> Resources {
        self.capacity_with(&Reserved::default())
    }

    pub fn allocatable(&self) -> Resources {
        self.allocatable_with(&Reserved::default())
    }

    /// What the kubelet reports as capacity on a node its bootstrap and volumes set up as
    /// `reserved` says: the max pods in effect and the filesystem pods write to.
    pub fn capacity_with(&self, reserved: &Reserved) -> Resources {
        let Devices {
            nvidia_gpu,
            amd_gpu,
            neuron,
            neuron_core,
            efa,
        } = self.devices;
        Resources {
            cpu: self.vcpus * 1000,
            memory: self.usable_memory_mib() * MIB,
            pods: reserved.max_pods.unwrap_or(self.max_pods),
            ephemeral_storage: reserved.ephemeral_storage.unwrap_or(DEFAULT_ROOT_VOLUME),
            nvidia_gpu,
            amd_gpu,
            neuron,
            neuron_core,
            efa,
        }
    }

    /// What the kubelet leaves for pods when its bootstrap sets `reserved`: capacity less
    /// kube-reserved, system-reserved and the hard eviction thresholds, each EKS's default
    /// where unset (kube-reserved memory follows the max pods in effect; 1 GiB of storage is
    /// kube-reserved and 10% is the `nodefs.available` threshold).
    pub fn allocatable_with(&self, reserved: &Reserved) -> Resources {
        let capacity = self.capacity_with(reserved);
        let kube_cpu = reserved
            .kube_millicpu
            .unwrap_or(self.vcpus * 1000 - self.allocatable_millicpu());
        let kube_memory = reserved
            .kube_memory
            .unwrap_or((255 + 11 * capacity.pods) * MIB);
        let eviction = reserved.eviction_memory.unwrap_or(100 * MIB);
        let kube_storage = reserved.kube_ephemeral_storage.unwrap_or(GIB);
        let eviction_storage = reserved
            .eviction_nodefs
            .unwrap_or((capacity.ephemeral_storage as f64 / 10.0).ceil() as i64);
        Resources {
            cpu: capacity.cpu - kube_cpu - reserved.system_millicpu,
            memory: capacity.memory - kube_memory - reserved.system_memory - eviction,
            ephemeral_storage: capacity.ephemeral_storage
                - kube_storage
                - reserved.system_ephemeral_storage
                - eviction_storage,
            ..capacity
        }
    }
}

/// What a node's bootstrap tells its kubelet to keep back from pods, and the filesystem they
/// write to; `None` leaves EKS's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub max_pods: Option<i64>,
    pub kube_millicpu: Option<i64>,
    /// Bytes.
    pub kube_memory: Option<i64>,
    /// Bytes.
    pub kube_ephemeral_storage: Option<i64>,
    pub system_millicpu: i64,
    /// Bytes.
    pub system_memory: i64,
    /// Bytes.
    pub system_ephemeral_storage: i64,
    /// Bytes: the hard eviction threshold for `memory.available`.
    pub eviction_memory: Option<i64>,
    /// Bytes: the hard eviction threshold for `nodefs.available`.
    pub eviction_nodefs: Option<i64>,
    /// Bytes: the size of the filesystem pods write to (the kubelet's `ephemeral-storage`).
    pub ephemeral_storage: Option<i64>,
}

/// Where a class's nodes keep pods' ephemeral storage: a sized root volume, or the instance
/// store made a RAID0 array where the type has one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// Bytes; `None` is the default root volume.
    pub root_volume: Option<i64>,
    pub instance_store_raid0: bool,
}

/// A class's `kubelet` settings and storage read once, for nodes of any shape: the bootstrap
/// tells the kubelet these, `podsPerCore` caps the max pods at that many per vCPU, and a
/// percentage eviction threshold is of the node's memory or filesystem.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KubeletReservations {
    max_pods: Option<i64>,
    pods_per_core: Option<i64>,
    kube_millicpu: Option<i64>,
    kube_memory: Option<i64>,
    kube_ephemeral_storage: Option<i64>,
    system_millicpu: i64,
    system_memory: i64,
    system_ephemeral_storage: i64,
    eviction_memory: Option<Threshold>,
    eviction_nodefs: Option<Threshold>,
    storage: Storage,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Threshold {
    Bytes(i64),
    Percent(f64),
}

impl Threshold {
    fn parse(threshold: &str) -> Option<Self> {
        match threshold.strip_suffix('%') {
            Some(percent) => percent.parse().ok().map(Threshold::Percent),
            None => ParsedQuantity::try_from(threshold)
                .ok()?
                .to_bytes_f64()
                .map(|bytes| Threshold::Bytes(bytes as i64)),
        }
    }

    fn of(&self, total: i64) -> i64 {
        match *self {
            Threshold::Bytes(bytes) => bytes,
            Threshold::Percent(p) => (total as f64 * p / 100.0).ceil() as i64,
        }
    }
}

impl KubeletReservations {
    /// The settings of a class with `kubelet` (none: EKS's defaults) and `storage`.
    pub fn of(kubelet: Option<&KubeletConfiguration>, storage: Storage) -> Self {
        let Some(kubelet) = kubelet else {
            return Self {
                storage,
                ..Self::default()
            };
        };
        let cpu = |q: Option<&Quantity>| quantity(q?).map(|cores| (cores * 1000.0).round() as i64);
        let bytes = |q: Option<&Quantity>| quantity(q?).map(|bytes| bytes as i64);
        let threshold = |signal: &str| {
            kubelet
                .eviction_hard
                .get(signal)
                .and_then(|t| Threshold::parse(t))
        };
        Self {
            max_pods: kubelet.max_pods.map(i64::from),
            pods_per_core: kubelet.pods_per_core.filter(|p| *p > 0).map(i64::from),
            kube_millicpu: cpu(kubelet.kube_reserved.get("cpu")),
            kube_memory: bytes(kubelet.kube_reserved.get("memory")),
            kube_ephemeral_storage: bytes(kubelet.kube_reserved.get(EPHEMERAL_STORAGE)),
            system_millicpu: cpu(kubelet.system_reserved.get("cpu")).unwrap_or(0),
            system_memory: bytes(kubelet.system_reserved.get("memory")).unwrap_or(0),
            system_ephemeral_storage: bytes(kubelet.system_reserved.get(EPHEMERAL_STORAGE))
                .unwrap_or(0),
            eviction_memory: threshold("memory.available"),
            eviction_nodefs: threshold("nodefs.available"),
            storage,
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
        let instance_store = shape
            .instance_store_gb
            .filter(|_| self.storage.instance_store_raid0)
            .map(|gb| gb * 1_000_000_000);
        let ephemeral_storage = instance_store.or(self.storage.root_volume);
        Reserved {
            max_pods,
            kube_millicpu: self.kube_millicpu,
            kube_memory: self.kube_memory,
            kube_ephemeral_storage: self.kube_ephemeral_storage,
            system_millicpu: self.system_millicpu,
            system_memory: self.system_memory,
            system_ephemeral_storage: self.system_ephemeral_storage,
            eviction_memory: self
                .eviction_memory
                .map(|t| t.of(shape.usable_memory_mib() * MIB)),
            eviction_nodefs: self
                .eviction_nodefs
                .map(|t| t.of(ephemeral_storage.unwrap_or(DEFAULT_ROOT_VOLUME))),
            ephemeral_storage,
        }
    }
}

fn quantity(q: &Quantity) -> Option<f64> {
    ParsedQuantity::try_from(q).ok()?.to_bytes_f64()
}

const MIB: i64 = 1024 * 1024;
const GIB: i64 = 1024 * MIB;

/// Where and how an instance type can be bought.
#[derive(Clone, Debug, PartialEq)]
pub struct Offering {
    pub zone: String,
    pub capacity_type: String,
    /// Dollars per hour; `None` where no price is known, so it is tried after every priced one.
    pub price: Option<f64>,
    pub available: bool,
}

/// What DescribeInstanceTypes says of a type's hardware beyond its shape; `None` where it says
/// nothing, and then the type's Nodes carry no label for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hardware {
    pub gpu: Option<Gpu>,
    /// Total NVMe instance store, GiB.
    pub local_nvme_gib: Option<i64>,
    /// Baseline bandwidth of the default network card, Mbit/s.
    pub network_bandwidth_mbps: Option<i64>,
    /// `nitro` or `xen`; bare metal has none.
    pub hypervisor: Option<String>,
    pub encryption_in_transit: Option<bool>,
}

/// A type's GPUs, when they are all of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    pub name: String,
    pub manufacturer: String,
    pub count: i64,
    /// Memory of one GPU, MiB.
    pub memory_mib: i64,
}

/// What EC2 says of an instance type that shapes its Nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeFacts {
    pub shape: Shape,
    /// `amd64` or `arm64`.
    pub arch: &'static str,
    pub hardware: Hardware,
}

const KARPENTER_AWS_PREFIX: &str = "karpenter.k8s.aws/";

/// Every key `type_labels` may set: a requirement on one a type has no value for is met only if
/// it allows the label to be absent, as for a Node without it.
const TYPE_LABEL_KEYS: [&str; 17] = [
    INSTANCE_TYPE_LABEL,
    INSTANCE_FAMILY_LABEL,
    INSTANCE_CPU_LABEL,
    INSTANCE_MEMORY_LABEL,
    ARCH_LABEL,
    OS_LABEL,
    INSTANCE_CATEGORY_LABEL,
    INSTANCE_GENERATION_LABEL,
    INSTANCE_SIZE_LABEL,
    INSTANCE_GPU_COUNT_LABEL,
    INSTANCE_GPU_NAME_LABEL,
    INSTANCE_GPU_MANUFACTURER_LABEL,
    INSTANCE_GPU_MEMORY_LABEL,
    INSTANCE_LOCAL_NVME_LABEL,
    INSTANCE_NETWORK_BANDWIDTH_LABEL,
    INSTANCE_HYPERVISOR_LABEL,
    INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL,
];

/// The labels every node of type `name` carries, zone and capacity type aside, in Windlass' and
/// Karpenter's vocabulary: the type, its family, category, generation and size from the name
/// (`m5d.xlarge`: `m5d`, `m`, `5`, `xlarge`), its shape and its hardware.
pub fn type_labels(
    name: &str,
    arch: &str,
    shape: &Shape,
    hardware: &Hardware,
) -> Vec<(&'static str, String)> {
    let (family, size) = name.split_once('.').unwrap_or((name, ""));
    let mut labels = vec![
        (INSTANCE_TYPE_LABEL, name.to_owned()),
        (INSTANCE_FAMILY_LABEL, family.to_owned()),
        (INSTANCE_CPU_LABEL, shape.vcpus.to_string()),
        (INSTANCE_MEMORY_LABEL, shape.memory_mib.to_string()),
        (ARCH_LABEL, arch.to_owned()),
        (OS_LABEL, "linux".to_owned()),
    ];
    if !size.is_empty() {
        labels.push((INSTANCE_SIZE_LABEL, size.to_owned()));
    }
    if let Some((category, generation)) = category_and_generation(family) {
        labels.push((INSTANCE_CATEGORY_LABEL, category.to_owned()));
        labels.push((INSTANCE_GENERATION_LABEL, generation.to_owned()));
    }
    if let Some(gpu) = &hardware.gpu {
        labels.extend([
            (INSTANCE_GPU_NAME_LABEL, label_value(&gpu.name)),
            (
                INSTANCE_GPU_MANUFACTURER_LABEL,
                label_value(&gpu.manufacturer),
            ),
            (INSTANCE_GPU_COUNT_LABEL, gpu.count.to_string()),
            (INSTANCE_GPU_MEMORY_LABEL, gpu.memory_mib.to_string()),
        ]);
    }
    let optional = [
        (
            INSTANCE_LOCAL_NVME_LABEL,
            hardware.local_nvme_gib.map(|g| g.to_string()),
        ),
        (
            INSTANCE_NETWORK_BANDWIDTH_LABEL,
            hardware.network_bandwidth_mbps.map(|m| m.to_string()),
        ),
        (INSTANCE_HYPERVISOR_LABEL, hardware.hypervisor.clone()),
        (
            INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL,
            hardware.encryption_in_transit.map(|e| e.to_string()),
        ),
    ];
    labels.extend(
        optional
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?))),
    );
    labels
}

/// `m`, `5` of `m5d`; `u`, `1` of `u-6tb1`; `None` for a family that does not start with
/// letters then digits.
fn category_and_generation(family: &str) -> Option<(&str, &str)> {
    let letters = family.find(|c: char| !c.is_ascii_lowercase())?;
    let (category, rest) = family.split_at(letters);
    // High-memory types put their size in terabytes between the two: `u-6tb1`.
    let rest = match rest.strip_prefix('-') {
        Some(sized) => {
            let digits = sized.find(|c: char| !c.is_ascii_digit())?;
            sized[digits..].strip_prefix("tb")?
        }
        None => rest,
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    (!category.is_empty() && digits > 0).then(|| (category, &rest[..digits]))
}

/// A name as a label value, as Karpenter writes it: lower case, spaces as dashes (`A10G`:
/// `a10g`, `Radeon Pro V520`: `radeon-pro-v520`).
fn label_value(name: &str) -> String {
    name.to_lowercase().replace(' ', "-")
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
    /// A type of which nothing but the name and shape is known.
    pub fn new(name: &str, arch: &str, shape: Shape, offerings: Vec<Offering>) -> Self {
        Self {
            name: name.to_owned(),
            arch: arch.to_owned(),
            shape,
            capacity: shape.capacity(),
            allocatable: shape.allocatable(),
            offerings,
            labels: type_labels(name, arch, &shape, &Hardware::default()),
        }
    }

    /// The same, with the labels its hardware gives.
    pub fn with_hardware(mut self, hardware: &Hardware) -> Self {
        self.labels = type_labels(&self.name, &self.arch, &self.shape, hardware);
        self
    }

    /// The price of the cheapest available offering, whatever a pool's requirements allow;
    /// `None` when no available offering has a known price.
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
            && requirements.iter().all(|(key, requirement)| {
                // Only Karpenter's hardware and name labels may be missing from a type.
                !key.starts_with(KARPENTER_AWS_PREFIX)
                    || requirement.allows_absent()
                    || self.labels.iter().any(|(k, _)| k == key)
            })
            && self.cheapest_offering(requirements).is_some()
    }

    /// Adds to `values` each value of `key` that a node of this type may have and `requirement`
    /// allows: its label's, or for zone and capacity type those of its available offerings.
    pub fn add_allowed_values<'a>(
        &'a self,
        key: &str,
        requirement: &Requirement,
        values: &mut BTreeSet<&'a str>,
    ) {
        let available = self.offerings.iter().filter(|o| o.available);
        let of_type: Box<dyn Iterator<Item = &str>> = match key {
            ZONE_LABEL => Box::new(available.map(|o| o.zone.as_str())),
            CAPACITY_TYPE_LABEL => Box::new(available.map(|o| o.capacity_type.as_str())),
            _ => Box::new(
                self.labels
                    .iter()
                    .filter(move |(k, _)| *k == key)
                    .map(|(_, v)| v.as_str()),
            ),
        };
        values.extend(of_type.filter(|value| requirement.allows(value)));
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

/// A requirement whose `minValues` some candidate types do not meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmetMinValues {
    pub key: String,
    pub min_values: usize,
    /// How many distinct allowed values the candidates have.
    pub found: usize,
}

/// The first requirement with `minValues` that `candidates` (indices into `catalog`) do not
/// meet: fewer distinct allowed values of its key among them than it asks for. Zone and
/// capacity type count the candidates' available offerings.
pub fn unmet_min_values(
    requirements: &Requirements,
    candidates: &[usize],
    catalog: &[InstanceType],
) -> Option<UnmetMinValues> {
    requirements.iter().find_map(|(key, requirement)| {
        let min_values = requirement.min_values()?;
        let mut values: BTreeSet<&str> = BTreeSet::new();
        for &i in candidates {
            catalog[i].add_allowed_values(key, requirement, &mut values);
            if values.len() >= min_values {
                return None;
            }
        }
        Some(UnmetMinValues {
            key: key.clone(),
            min_values,
            found: values.len(),
        })
    })
}

/// An offering's price for ordering: an unknown price after every known one.
fn price_order(offering: &Offering) -> f64 {
    offering.price.unwrap_or(f64::INFINITY)
}

/// Labels a launched node takes from its instance type and offering, so the scheduler may
/// narrow them (a type without the label meets only a requirement that allows it absent).
pub fn is_well_known(key: &str) -> bool {
    let key = crate::apis::labels::canonical(key);
    TYPE_LABEL_KEYS.contains(&key) || [ZONE_LABEL, CAPACITY_TYPE_LABEL].contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::node_pool::RequirementOperator;
    use crate::scheduling::requirements::Requirement;
    use std::collections::BTreeMap;

    #[test]
    fn allocatable_follows_eks_kube_reserved() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: Shape::max_pods_for(3, 10),
            ..Shape::default()
        };
        assert_eq!(m5_large.max_pods, 29);
        assert_eq!(m5_large.allocatable_millicpu(), 2000 - 70);
        let allocatable = m5_large.allocatable();
        assert_eq!(allocatable.memory, (8192 - (255 + 11 * 29) - 100) * MIB);
        assert_eq!(
            allocatable.ephemeral_storage,
            17 * GIB,
            "20Gi root volume less 1Gi kube-reserved and the 10% nodefs threshold"
        );
        let big = Shape {
            vcpus: 16,
            memory_mib: 65536,
            max_pods: 234,
            ..Shape::default()
        };
        assert_eq!(big.allocatable_millicpu(), 16000 - (60 + 10 + 10 + 30));
    }

    #[test]
    fn the_vm_keeps_a_share_of_the_listed_memory_and_graviton_its_cma_too() {
        assert_eq!(Shape::memory_overhead_mib(8192, "amd64", 0.075), 615);
        assert_eq!(Shape::memory_overhead_mib(8192, "arm64", 0.075), 64 + 610);
        assert_eq!(Shape::memory_overhead_mib(8192, "amd64", 0.0), 0);
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: 29,
            memory_overhead_mib: 615,
            ..Shape::default()
        };
        assert_eq!(m5_large.capacity().memory, (8192 - 615) * MIB);
        assert_eq!(
            m5_large.allocatable().memory,
            (8192 - 615 - (255 + 11 * 29) - 100) * MIB
        );
    }

    #[test]
    fn devices_and_the_instance_store_are_capacity() {
        let g5 = Shape {
            vcpus: 4,
            memory_mib: 16384,
            max_pods: 58,
            devices: Devices {
                nvidia_gpu: 1,
                ..Devices::default()
            },
            instance_store_gb: Some(250),
            ..Shape::default()
        };
        let root = KubeletReservations::of(None, Storage::default()).for_shape(&g5);
        let allocatable = g5.allocatable_with(&root);
        assert_eq!(
            allocatable.nvidia_gpu, 1,
            "no kubelet reservation for devices"
        );
        assert_eq!(g5.capacity_with(&root).ephemeral_storage, 20 * GIB);
        let raid0 = Storage {
            instance_store_raid0: true,
            ..Storage::default()
        };
        let store = KubeletReservations::of(None, raid0).for_shape(&g5);
        assert_eq!(g5.capacity_with(&store).ephemeral_storage, 250_000_000_000);
        let no_store = Shape {
            instance_store_gb: None,
            ..g5
        };
        let sized = Storage {
            root_volume: Some(100 * GIB),
            instance_store_raid0: true,
        };
        assert_eq!(
            no_store
                .capacity_with(&KubeletReservations::of(None, sized).for_shape(&no_store))
                .ephemeral_storage,
            100 * GIB,
            "RAID0 on a type without an instance store keeps the root volume"
        );
        let kubelet: KubeletConfiguration = serde_json::from_value(serde_json::json!({
            "kubeReserved": {"ephemeral-storage": "2Gi"},
            "systemReserved": {"ephemeral-storage": "1Gi"},
            "evictionHard": {"nodefs.available": "5%"}
        }))
        .unwrap();
        let reserved = KubeletReservations::of(Some(&kubelet), sized).for_shape(&no_store);
        assert_eq!(
            no_store.allocatable_with(&reserved).ephemeral_storage,
            100 * GIB - 2 * GIB - GIB - 5 * GIB
        );
    }

    fn reservations(kubelet: &KubeletConfiguration, shape: &Shape) -> Reserved {
        KubeletReservations::of(Some(kubelet), Storage::default()).for_shape(shape)
    }

    #[test]
    fn a_classs_kubelet_settings_become_the_reservations_its_bootstrap_sets() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: 29,
            ..Shape::default()
        };
        let kubelet: KubeletConfiguration = serde_json::from_value(serde_json::json!({
            "podsPerCore": 10,
            "kubeReserved": {"cpu": "250m", "memory": "1Gi"},
            "systemReserved": {"memory": "200Mi"},
            "evictionHard": {"memory.available": "5%"}
        }))
        .unwrap();
        assert_eq!(
            reservations(&kubelet, &m5_large),
            Reserved {
                max_pods: Some(20),
                kube_millicpu: Some(250),
                kube_memory: Some(1024 * MIB),
                system_millicpu: 0,
                system_memory: 200 * MIB,
                eviction_memory: Some(8192 * MIB / 20 + 1),
                ..Reserved::default()
            }
        );
        assert_eq!(
            reservations(&KubeletConfiguration::default(), &m5_large),
            Reserved::default()
        );
        let capped: KubeletConfiguration =
            serde_json::from_value(serde_json::json!({"maxPods": 110, "podsPerCore": 100}))
                .unwrap();
        assert_eq!(reservations(&capped, &m5_large).max_pods, Some(110));
    }

    #[test]
    fn a_bootstraps_reservations_replace_the_defaults_they_set() {
        let m5_large = Shape {
            vcpus: 2,
            memory_mib: 8192,
            max_pods: 29,
            ..Shape::default()
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
                ephemeral_storage: 17 * GIB,
                ..Resources::default()
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
                ephemeral_storage: 17 * GIB,
                ..Resources::default()
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
                ..Shape::default()
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

    fn offered(name: &str, vcpus: i64, hardware: &Hardware) -> InstanceType {
        let shape = Shape {
            vcpus,
            memory_mib: vcpus * 4096,
            max_pods: 58,
            ..Shape::default()
        };
        let offering = Offering {
            zone: "a".into(),
            capacity_type: ON_DEMAND.into(),
            price: Some(1.0),
            available: true,
        };
        InstanceType::new(name, "amd64", shape, vec![offering]).with_hardware(hardware)
    }

    #[test]
    fn a_types_labels_are_karpenters_vocabulary() {
        let a10g = Hardware {
            gpu: Some(Gpu {
                name: "A10G".into(),
                manufacturer: "NVIDIA".into(),
                count: 1,
                memory_mib: 24576,
            }),
            local_nvme_gib: Some(450),
            network_bandwidth_mbps: Some(10000),
            hypervisor: Some("nitro".into()),
            encryption_in_transit: Some(true),
        };
        let labels: BTreeMap<&str, String> =
            offered("g5.2xlarge", 8, &a10g).labels.into_iter().collect();
        let expected = [
            (INSTANCE_TYPE_LABEL, "g5.2xlarge"),
            (INSTANCE_FAMILY_LABEL, "g5"),
            (INSTANCE_CATEGORY_LABEL, "g"),
            (INSTANCE_GENERATION_LABEL, "5"),
            (INSTANCE_SIZE_LABEL, "2xlarge"),
            (INSTANCE_CPU_LABEL, "8"),
            (INSTANCE_MEMORY_LABEL, "32768"),
            (INSTANCE_GPU_NAME_LABEL, "a10g"),
            (INSTANCE_GPU_MANUFACTURER_LABEL, "nvidia"),
            (INSTANCE_GPU_COUNT_LABEL, "1"),
            (INSTANCE_GPU_MEMORY_LABEL, "24576"),
            (INSTANCE_LOCAL_NVME_LABEL, "450"),
            (INSTANCE_NETWORK_BANDWIDTH_LABEL, "10000"),
            (INSTANCE_HYPERVISOR_LABEL, "nitro"),
            (INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL, "true"),
            (ARCH_LABEL, "amd64"),
            (OS_LABEL, "linux"),
        ];
        assert_eq!(
            labels,
            expected
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        );
        let bare = offered("m5.large", 2, &Hardware::default());
        assert!(
            !bare
                .labels
                .iter()
                .any(|(k, _)| k.contains("gpu") || *k == INSTANCE_HYPERVISOR_LABEL),
            "nothing is said of what EC2 did not say: {:?}",
            bare.labels
        );
    }

    #[test]
    fn families_split_into_category_and_generation() {
        let cases = [
            ("m5", Some(("m", "5"))),
            ("c6gn", Some(("c", "6"))),
            ("inf2", Some(("inf", "2"))),
            ("x2iedn", Some(("x", "2"))),
            ("u-6tb1", Some(("u", "1"))),
            ("trn1n", Some(("trn", "1"))),
            ("mac2-m2pro", Some(("mac", "2"))),
            ("fake", None),
            ("1x", None),
        ];
        for (family, expected) in cases {
            assert_eq!(category_and_generation(family), expected, "{family}");
        }
    }

    #[test]
    fn a_requirement_on_a_label_a_type_lacks_is_met_only_if_it_allows_absence() {
        let gpu = Hardware {
            gpu: Some(Gpu {
                name: "T4".into(),
                manufacturer: "NVIDIA".into(),
                count: 1,
                memory_mib: 16384,
            }),
            ..Hardware::default()
        };
        let g4dn = offered("g4dn.xlarge", 4, &gpu);
        let m5 = offered("m5.xlarge", 4, &Hardware::default());
        let mut gpus = Requirements::default();
        gpus.add(
            INSTANCE_GPU_COUNT_LABEL,
            Requirement::new(RequirementOperator::Gt, &["0".to_owned()]),
        );
        assert!(g4dn.satisfies(&gpus));
        assert!(!m5.satisfies(&gpus), "a type with no GPU has no GPU count");
        let mut no_gpu = Requirements::default();
        no_gpu.add(
            INSTANCE_GPU_NAME_LABEL,
            Requirement::new(RequirementOperator::DoesNotExist, &[]),
        );
        assert!(m5.satisfies(&no_gpu));
        assert!(!g4dn.satisfies(&no_gpu));
        let mut family = Requirements::default();
        family.add(
            "karpenter.k8s.aws/instance-family",
            Requirement::one_of(["g4dn"]),
        );
        family.add(
            "karpenter.k8s.aws/instance-category",
            Requirement::one_of(["g"]),
        );
        assert!(g4dn.satisfies(&family));
        assert!(!m5.satisfies(&family));
        let mut custom = Requirements::default();
        custom.add("team", Requirement::one_of(["data"]));
        assert!(
            m5.satisfies(&custom),
            "a label the pool sets is not the type's to have"
        );
        assert!(is_well_known("karpenter.sh/capacity-type"));
        assert!(is_well_known(INSTANCE_GPU_COUNT_LABEL));
        assert!(!is_well_known("team"));
    }

    #[test]
    fn the_schema_accepts_exactly_the_karpenter_aws_keys_windlass_sets() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&crate::apis::node_pool::NodePool::crd()).unwrap();
        let in_schema: std::collections::BTreeSet<&str> = crd
            .split('\'')
            .filter(|token| token.starts_with("karpenter.k8s.aws/instance-"))
            .collect();
        let set: std::collections::BTreeSet<&str> = TYPE_LABEL_KEYS
            .iter()
            .chain(
                crate::apis::labels::KARPENTER_ALIASES
                    .iter()
                    .map(|(_, alias)| alias),
            )
            .copied()
            .filter(|key| key.starts_with("karpenter.k8s.aws/"))
            .collect();
        assert_eq!(in_schema, set);
    }
}
