//! What a plan costs, and the least any plan for the same pods could cost: the yardstick of
//! packing quality (DESIGN §7).

use super::Plan;
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::pod::PodShape;
use crate::scheduling::resources::Resources;

/// $/hour of the plan's new NodeClaims, each at the cheapest available offering of its
/// cheapest candidate type.
pub fn hourly_cost(catalog: &[InstanceType], plan: &Plan) -> f64 {
    plan.new_claims
        .iter()
        .filter_map(|claim| claim.instance_types.first())
        .filter_map(|&i| catalog[i].min_price())
        .sum()
}

/// The fractional lower bound: for each resource, the pods' total request at the lowest
/// price per unit any type allocates it for (its cheapest offering over its allocatable);
/// the largest of these. No plan on `catalog` costs less, since even nodes that could be
/// bought in fractions would have to allocate every resource the pods request.
pub fn fractional_lower_bound(catalog: &[InstanceType], pods: &[PodShape]) -> f64 {
    let total = pods
        .iter()
        .fold(Resources::default(), |sum, pod| sum + pod.requests)
        .amounts();
    let mut cheapest_per_unit = vec![f64::INFINITY; total.len()];
    for instance_type in catalog {
        let Some(price) = instance_type.min_price() else {
            continue;
        };
        for (cheapest, &amount) in cheapest_per_unit
            .iter_mut()
            .zip(&instance_type.allocatable.amounts())
        {
            if amount > 0 {
                *cheapest = cheapest.min(price / amount as f64);
            }
        }
    }
    total
        .iter()
        .zip(&cheapest_per_unit)
        .filter(|(amount, _)| **amount > 0)
        .map(|(&amount, per_unit)| amount as f64 * per_unit)
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::fake;
    use crate::scheduling::pod::NamespaceLabels;
    use crate::scheduling::solver::{NodePoolInput, Problem, solve};

    fn plan_for(catalog: &[InstanceType], pods: &[PodShape]) -> Plan {
        let pools = [NodePoolInput {
            name: "default".into(),
            instance_types: (0..catalog.len()).collect(),
            ..NodePoolInput::default()
        }];
        solve(&Problem {
            catalog,
            pools: &pools,
            existing: &[],
            bound: &[],
            pods,
            namespaces: &NamespaceLabels::new(),
        })
    }

    #[test]
    fn the_bound_is_the_scarcest_resource_at_its_cheapest_unit_price() {
        let catalog = fake::catalog(4);
        let mut pods = fake::benchmark_pods(5, 1);
        for pod in &mut pods {
            pod.terms.clear();
            pod.requests.cpu = 1000;
            pod.requests.memory = 1 << 30;
        }
        let per_vcpu = catalog
            .iter()
            .map(|t| t.min_price().unwrap() / t.allocatable.cpu as f64)
            .fold(f64::INFINITY, f64::min);
        let bound = fractional_lower_bound(&catalog, &pods);
        assert!(
            (bound - 5000.0 * per_vcpu).abs() < 1e-9,
            "5 vCPU at the cheapest price per millicore, not {bound}"
        );
    }

    /// Packing quality on the benchmark world: within 1.25× of what fractional nodes would
    /// cost, though a fifth of the pods need a node each (hostname anti-affinity).
    #[test]
    fn the_benchmark_world_packs_within_a_quarter_of_the_lower_bound() {
        let catalog = fake::catalog(400);
        for count in [500, 2_000] {
            let pods = fake::benchmark_pods(count, 42);
            let plan = plan_for(&catalog, &pods);
            assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
            let ratio = hourly_cost(&catalog, &plan) / fractional_lower_bound(&catalog, &pods);
            assert!(
                (1.0..=1.25).contains(&ratio),
                "{count} pods cost {ratio:.3}× the fractional lower bound"
            );
        }
    }
}
