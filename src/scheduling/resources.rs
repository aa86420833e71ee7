//! Resource amounts in integer units (millicores, bytes, pod slots) and a pod's effective
//! requests as the kube-scheduler counts them.

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    /// Whether `self` fits within `capacity` in every dimension.
    pub fn fits(&self, capacity: &Resources) -> bool {
        self.cpu <= capacity.cpu && self.memory <= capacity.memory && self.pods <= capacity.pods
    }

    /// The larger of each dimension.
    pub fn max(&self, other: &Resources) -> Resources {
        Resources {
            cpu: self.cpu.max(other.cpu),
            memory: self.memory.max(other.memory),
            pods: self.pods.max(other.pods),
        }
    }

    /// Reads `cpu`, `memory` and `pods` from a resource list; other resources are ignored and
    /// an unparsable quantity counts as zero.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        Resources {
            cpu: list.get("cpu").map_or(0, |q| scaled(q, 1000.0)),
            memory: list.get("memory").map_or(0, |q| scaled(q, 1.0)),
            pods: list.get("pods").map_or(0, |q| scaled(q, 1.0)),
        }
    }

    /// A pod's requests as the scheduler counts them: the larger of the containers' sum and
    /// each init container, plus the pod overhead, plus the pod's own slot.
    pub fn of_pod(spec: &PodSpec) -> Resources {
        let requests = |resources: &Option<k8s_openapi::api::core::v1::ResourceRequirements>| {
            resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(Resources::from_list)
                .unwrap_or_default()
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

    /// Resource limits as written in a NodePool: the named ones only.
    pub fn limits(list: &BTreeMap<String, Quantity>) -> Limits {
        let get = |key: &str, factor: f64| list.get(key).map(|q| scaled(q, factor));
        Limits {
            cpu: get("cpu", 1000.0),
            memory: get("memory", 1.0),
            pods: get("pods", 1.0),
            nodes: get("nodes", 1.0),
        }
    }
}

/// A NodePool's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub pods: Option<i64>,
    pub nodes: Option<i64>,
}

impl Limits {
    /// The first limit `used` (capacity of `nodes` nodes) goes over, as `"cpu=4"`.
    pub fn exceeded(&self, used: &Resources, nodes: i64) -> Option<String> {
        let checks = [
            ("cpu", self.cpu, used.cpu, format_cpu as fn(i64) -> String),
            ("memory", self.memory, used.memory, format_memory),
            ("pods", self.pods, used.pods, |n: i64| n.to_string()),
            ("nodes", self.nodes, nodes, |n: i64| n.to_string()),
        ];
        checks
            .into_iter()
            .find(|(_, limit, used, _)| limit.is_some_and(|limit| *used > limit))
            .map(|(name, limit, _, format)| format!("{name}={}", format(limit.unwrap_or_default())))
    }
}

fn scaled(quantity: &Quantity, factor: f64) -> i64 {
    ParsedQuantity::try_from(quantity)
        .ok()
        .and_then(|q| q.to_bytes_f64())
        .map_or(0, |value| (value * factor).ceil() as i64)
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
    if bytes % GI == 0 {
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
        Resources {
            cpu: self.cpu + other.cpu,
            memory: self.memory + other.memory,
            pods: self.pods + other.pods,
        }
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
        Resources {
            cpu: self.cpu - other.cpu,
            memory: self.memory - other.memory,
            pods: self.pods - other.pods,
        }
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
                pods: 1
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
}
