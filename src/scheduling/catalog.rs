//! The bundled instance catalog: shapes and on-demand prices for common EC2 types in
//! us-east-1, so `windlass simulate` works with no AWS account. See
//! `src/scheduling/data/README.md` for where the numbers come from and how to refresh them.
//! The controller prices its catalog from `crate::aws::pricing` instead.

use serde::Deserialize;

use super::instance_types::{
    DEFAULT_VM_MEMORY_OVERHEAD, InstanceType, ON_DEMAND, Offering, SPOT, Shape,
};

const US_EAST_1: &str = include_str!("data/us-east-1.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    zones: Vec<String>,
    instance_types: Vec<Row>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    vcpus: i64,
    memory_mib: i64,
    arch: String,
    enis: i64,
    ipv4_per_eni: i64,
    on_demand_price: f64,
}

fn bundle() -> Bundle {
    serde_json::from_str(US_EAST_1).expect("the bundled catalog parses")
}

/// Every bundled type in each of the region's zones, on-demand at its list price and spot at
/// the same price: without spot price history that is the most a spot node can cost.
pub fn bundled() -> Vec<InstanceType> {
    let bundle = bundle();
    bundle
        .instance_types
        .into_iter()
        .map(|row| {
            let shape = Shape {
                vcpus: row.vcpus,
                memory_mib: row.memory_mib,
                max_pods: Shape::max_pods_for(row.enis, row.ipv4_per_eni),
                memory_overhead_mib: Shape::memory_overhead_mib(
                    row.memory_mib,
                    &row.arch,
                    DEFAULT_VM_MEMORY_OVERHEAD,
                ),
                ..Shape::default()
            };
            let offerings = bundle
                .zones
                .iter()
                .flat_map(|zone| {
                    [ON_DEMAND, SPOT].map(|capacity_type| Offering {
                        zone: zone.clone(),
                        capacity_type: capacity_type.to_owned(),
                        price: Some(row.on_demand_price),
                        available: true,
                    })
                })
                .collect();
            InstanceType::new(&row.name, &row.arch, shape, offerings)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_is_complete_and_sane() {
        let catalog = bundled();
        assert!(catalog.len() >= 100, "{} types", catalog.len());
        let m5_large = catalog.iter().find(|it| it.name == "m5.large").unwrap();
        assert_eq!(m5_large.shape.max_pods, 29);
        assert_eq!(m5_large.min_price(), Some(0.096));
        for it in &catalog {
            assert!(
                it.allocatable.cpu > 0 && it.allocatable.memory > 0,
                "{}",
                it.name
            );
            assert!(it.min_price().is_some_and(|p| p > 0.0), "{}", it.name);
            assert!(
                ["amd64", "arm64"].contains(&it.arch.as_str()),
                "{}",
                it.name
            );
        }
    }

    #[test]
    fn max_pods_are_the_ones_eks_publishes() {
        // nodeadm's instance-info.jsonl (awslabs/amazon-eks-ami), as ENIs × (IPv4 per ENI − 1) + 2.
        let published = [
            ("m5.large", 29),
            ("m5.xlarge", 58),
            ("m5.4xlarge", 234),
            ("m5.24xlarge", 737),
            ("c5.xlarge", 58),
            ("t3.medium", 17),
            ("m6g.medium", 8),
            ("r5.2xlarge", 58),
        ];
        let catalog = bundled();
        for (name, max_pods) in published {
            let it = catalog.iter().find(|it| it.name == name).unwrap();
            assert_eq!(it.shape.max_pods, max_pods, "{name}");
            assert_eq!(it.allocatable.pods, max_pods, "{name}");
        }
    }
}
