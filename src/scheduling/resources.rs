//! Resource amounts in integer units (millicores, bytes, counts) and a pod's effective
//! requests as the kube-scheduler counts them.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";
pub const AMD_GPU: &str = "amd.com/gpu";
pub const AWS_NEURON: &str = "aws.amazon.com/neuron";
pub const AWS_NEURON_CORE: &str = "aws.amazon.com/neuroncore";
pub const EFA: &str = "vpc.amazonaws.com/efa";

/// How many resources the simulation counts.
const COUNTED: usize = 9;

/// The resources the simulation counts, in the order of [`Resources::amounts`], with the factor
/// from a quantity to the unit counted.
const NAMES: [(&str, f64); COUNTED] = [
    ("cpu", 1000.0),
    ("memory", 1.0),
    ("pods", 1.0),
    (EPHEMERAL_STORAGE, 1.0),
    (NVIDIA_GPU, 1.0),
    (AMD_GPU, 1.0),
    (AWS_NEURON, 1.0),
    (AWS_NEURON_CORE, 1.0),
    (EFA, 1.0),
];

/// Resources the VPC resource controller grants a node once it has joined (security groups
/// for pods' branch interfaces, Windows pods' addresses). The simulation does not count them
/// and does not refuse a pod that asks for them.
const GRANTED_AFTER_JOINING: [&str; 2] = [
    "vpc.amazonaws.com/pod-eni",
    "vpc.amazonaws.com/PrivateIPv4Address",
];

/// The first resource a pod's containers request (or limit) that no instance type brings:
/// `hugepages-2Mi`, or an extended resource a device plugin adds to some nodes. The
/// kube-scheduler would find no room for the pod on any node Windlass could launch.
pub fn uncounted_request(spec: &PodSpec) -> Option<String> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(|c| c.resources.as_ref())
        .flat_map(|r| {
            r.requests
                .iter()
                .chain(r.limits.iter())
                .flat_map(|l| l.keys())
        })
        .find(|name| {
            !NAMES.iter().any(|(counted, _)| counted == name)
                && !GRANTED_AFTER_JOINING.contains(&name.as_str())
        })
        .cloned()
}

/// The resources a pod may request of a launched node, as a list for a message.
pub fn requestable() -> String {
    NAMES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| *name != "pods")
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resources a pod requests or a node has. A resource no instance type brings (`hugepages-*`,
/// an extended resource of a device plugin) has no field: a pod requesting one is refused
/// with [`uncounted_request`] before it gets here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    pub pods: i64,
    /// Bytes.
    pub ephemeral_storage: i64,
    pub nvidia_gpu: i64,
    pub amd_gpu: i64,
    /// Neuron devices.
    pub neuron: i64,
    pub neuron_core: i64,
    /// EFA interfaces.
    pub efa: i64,
}

impl Resources {
    /// The amounts in the order of `NAMES`.
    pub(crate) fn amounts(&self) -> [i64; COUNTED] {
        [
            self.cpu,
            self.memory,
            self.pods,
            self.ephemeral_storage,
            self.nvidia_gpu,
            self.amd_gpu,
            self.neuron,
            self.neuron_core,
            self.efa,
        ]
    }

    fn from_amounts(
        [
            cpu,
            memory,
            pods,
            ephemeral_storage,
            nvidia_gpu,
            amd_gpu,
            neuron,
            neuron_core,
            efa,
        ]: [i64; COUNTED],
    ) -> Self {
        Self {
            cpu,
            memory,
            pods,
            ephemeral_storage,
            nvidia_gpu,
            amd_gpu,
            neuron,
            neuron_core,
            efa,
        }
    }

    fn zip(&self, other: &Resources, f: impl Fn(i64, i64) -> i64) -> Resources {
        let (a, b) = (self.amounts(), other.amounts());
        Self::from_amounts(std::array::from_fn(|i| f(a[i], b[i])))
    }

    /// Whether `self` fits within `capacity` in every dimension.
    pub fn fits(&self, capacity: &Resources) -> bool {
        self.amounts()
            .into_iter()
            .zip(capacity.amounts())
            .all(|(mine, room)| mine <= room)
    }

    /// The larger of each dimension.
    pub fn max(&self, other: &Resources) -> Resources {
        self.zip(other, i64::max)
    }

    /// The smaller of each dimension.
    pub fn min(&self, other: &Resources) -> Resources {
        self.zip(other, i64::min)
    }

    /// Reads the counted resources from a resource list; others are left out and an
    /// unparsable quantity counts as zero.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        Self::from_amounts(
            NAMES.map(|(name, factor)| list.get(name).map_or(0, |q| scaled(q, factor))),
        )
    }

    /// As a resource list: cpu, memory and pods always, the others where not zero.
    pub fn to_list(&self) -> BTreeMap<String, Quantity> {
        NAMES
            .iter()
            .zip(self.amounts())
            .enumerate()
            .filter(|(i, (_, amount))| *i < 3 || *amount != 0)
            .map(|(_, ((name, _), amount))| ((*name).to_owned(), Quantity(format(name, amount))))
            .collect()
    }

    /// `cpu=2, memory=4Gi`, and each other resource `wanted` asks for, for a message
    /// comparing what a pod wants with what a node has.
    pub fn describe_for(&self, wanted: &Resources) -> String {
        NAMES
            .iter()
            .zip(self.amounts().into_iter().zip(wanted.amounts()))
            .enumerate()
            .filter(|(i, (_, (_, asked)))| *i < 2 || (*i > 2 && *asked != 0))
            .map(|(_, ((name, _), (mine, _)))| format!("{name}={}", format(name, mine)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A pod's requests as the scheduler counts them: the larger of the containers' sum and
    /// each init container, plus the pod overhead, plus the pod's own slot. A container's limit
    /// stands for the request it does not set, as the API server defaults a pod (a pod
    /// template, which the simulation also reads, is not defaulted).
    pub fn of_pod(spec: &PodSpec) -> Resources {
        let requests = |resources: &Option<k8s_openapi::api::core::v1::ResourceRequirements>| {
            let Some(resources) = resources else {
                return Resources::default();
            };
            let requested = resources.requests.as_ref();
            let limited = resources.limits.as_ref();
            Self::from_amounts(NAMES.map(|(name, factor)| {
                requested
                    .and_then(|r| r.get(name))
                    .or_else(|| limited.and_then(|l| l.get(name)))
                    .map_or(0, |q| scaled(q, factor))
            }))
        };
        let containers = spec
            .containers
            .iter()
            .fold(Resources::default(), |sum, c| sum + requests(&c.resources));
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .fold(Resources::default(), |max, c| {
                max.max(&requests(&c.resources))
            });
        let overhead = spec
            .overhead
            .as_ref()
            .map(Resources::from_list)
            .unwrap_or_default();
        containers.max(&init)
            + overhead
            + Resources {
                pods: 1,
                ..Resources::default()
            }
    }

    /// Resource limits as written in a NodePool: the counted resources and `nodes`.
    pub fn limits(list: &BTreeMap<String, Quantity>) -> Limits {
        Limits {
            resources: NAMES.map(|(name, factor)| list.get(name).map(|q| scaled(q, factor))),
            nodes: list.get("nodes").map(|q| scaled(q, 1.0)),
        }
    }
}

/// A NodePool's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// In the order of `NAMES`.
    resources: [Option<i64>; COUNTED],
    pub nodes: Option<i64>,
}

impl Limits {
    /// Limits on cpu, memory and nodes only, for tests and benchmarks.
    pub fn of(cpu: Option<i64>, memory: Option<i64>, nodes: Option<i64>) -> Self {
        let mut resources = [None; COUNTED];
        resources[0] = cpu;
        resources[1] = memory;
        Self { resources, nodes }
    }

    /// Whether a limit other than `nodes` is set.
    pub fn limits_resources(&self) -> bool {
        self.resources.iter().any(Option::is_some)
    }

    /// The first limit `used` (capacity of `nodes` nodes) goes over, as `"cpu=4"`.
    pub fn exceeded(&self, used: &Resources, nodes: i64) -> Option<String> {
        let over = NAMES
            .iter()
            .zip(self.resources)
            .zip(used.amounts())
            .find_map(|(((name, _), limit), used)| {
                let limit = limit?;
                (used > limit).then(|| format!("{name}={}", format(name, limit)))
            });
        over.or_else(|| {
            self.nodes
                .filter(|limit| nodes > *limit)
                .map(|limit| format!("nodes={limit}"))
        })
    }

    /// What a node may still bring under these limits when `others` is in use already;
    /// `i64::MAX` where unlimited.
    pub fn room(&self, others: &Resources) -> Resources {
        let others = others.amounts();
        Resources::from_amounts(std::array::from_fn(|i| {
            self.resources[i].map_or(i64::MAX, |limit| limit - others[i])
        }))
    }
}

fn scaled(quantity: &Quantity, factor: f64) -> i64 {
    ParsedQuantity::try_from(quantity)
        .ok()
        .and_then(|q| q.to_bytes_f64())
        .map_or(0, |value| (value * factor).ceil() as i64)
}

/// An amount of the resource `name` as a quantity.
fn format(name: &str, amount: i64) -> String {
    match name {
        "cpu" => format_cpu(amount),
        "memory" | EPHEMERAL_STORAGE => format_memory(amount),
        _ => amount.to_string(),
    }
}

pub fn format_cpu(millis: i64) -> String {
    if millis % 1000 == 0 {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

pub fn format_memory(bytes: i64) -> String {
    const GI: i64 = 1 << 30;
    const MI: i64 = 1 << 20;
    if bytes == 0 {
        "0".to_owned()
    } else if bytes % GI == 0 {
        format!("{}Gi", bytes / GI)
    } else if bytes % MI == 0 {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, other: Resources) -> Resources {
        self.zip(&other, |a, b| a + b)
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, other: Resources) {
        *self = *self + other;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, other: Resources) -> Resources {
        self.zip(&other, |a, b| a - b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pod_requests_count_init_containers_and_overhead_like_the_scheduler() {
        let spec = pod(serde_json::json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.25", "memory": "512Mi"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
            "overhead": {"cpu": "10m"}
        }));
        assert_eq!(
            Resources::of_pod(&spec),
            Resources {
                cpu: 2010,
                memory: (1536) << 20,
                pods: 1,
                ..Resources::default()
            }
        );
    }

    #[test]
    fn limits_name_the_first_one_exceeded() {
        let limits = Resources::limits(&BTreeMap::from([
            ("cpu".to_owned(), Quantity("4".into())),
            ("memory".to_owned(), Quantity("8Gi".into())),
        ]));
        let used = Resources {
            cpu: 4000,
            memory: 8 << 30,
            pods: 50,
            ..Resources::default()
        };
        assert_eq!(limits.exceeded(&used, 2), None);
        assert_eq!(
            limits
                .exceeded(&Resources { cpu: 4001, ..used }, 2)
                .as_deref(),
            Some("cpu=4")
        );
        assert_eq!(
            limits
                .exceeded(
                    &Resources {
                        memory: (8 << 30) + 1,
                        ..used
                    },
                    2
                )
                .as_deref(),
            Some("memory=8Gi")
        );
    }

    #[test]
    fn a_node_pool_may_limit_exactly_the_counted_resources_and_nodes() {
        let mut counted: Vec<&str> = NAMES.iter().map(|(name, _)| *name).collect();
        counted.push("nodes");
        assert_eq!(counted, crate::apis::node_pool::LIMITABLE);
    }

    #[test]
    fn a_gpu_limit_bounds_the_room_and_is_named_when_exceeded() {
        let limits = Resources::limits(&BTreeMap::from([(
            NVIDIA_GPU.to_owned(),
            Quantity("4".into()),
        )]));
        assert!(limits.limits_resources());
        let used = Resources {
            cpu: 64_000,
            nvidia_gpu: 3,
            ..Resources::default()
        };
        let room = limits.room(&used);
        assert_eq!(
            (room.nvidia_gpu, room.cpu, room.amd_gpu),
            (1, i64::MAX, i64::MAX)
        );
        assert_eq!(limits.exceeded(&used, 3), None);
        assert_eq!(
            limits
                .exceeded(
                    &Resources {
                        nvidia_gpu: 5,
                        ..used
                    },
                    3
                )
                .as_deref(),
            Some("nvidia.com/gpu=4")
        );
    }
}
