//! The scheduling simulation on Karpenter's benchmark workload (DESIGN §7): 400 instance types,
//! pods in five families, seeded requests. Throughput is pods per second; the nodes each run
//! opens are printed once per size.
//!
//! cargo bench --bench scheduling

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use windlass::apis::node_pool::RequirementOperator;
use windlass::scheduling::fake;
use windlass::scheduling::instance_types::InstanceType;
use windlass::scheduling::pod::{NamespaceLabels, PodShape, Preference};
use windlass::scheduling::requirements::{Requirement, Requirements};
use windlass::scheduling::resources::Limits;
use windlass::scheduling::{NodePoolInput, Problem, fractional_lower_bound, hourly_cost, solve};

fn scheduling(c: &mut Criterion) {
    let catalog = fake::catalog(400);
    let pools = [NodePoolInput {
        name: "default".into(),
        instance_types: (0..catalog.len()).collect(),
        ..NodePoolInput::default()
    }];
    let mut group = c.benchmark_group("scheduling");
    group.sample_size(10);
    for count in [1_000, 5_000, 10_000, 20_000] {
        let pods = fake::benchmark_pods(count, 42);
        let problem = new_world(&catalog, &pools, &pods);
        let plan = solve(&problem);
        let cost = hourly_cost(&catalog, &plan);
        let bound = fractional_lower_bound(&catalog, &pods);
        println!(
            "{count} pods: {} nodes, {} unplaced, cheapest-type cost ${cost:.2}/h, {:.3}× the fractional lower bound ${bound:.2}/h",
            plan.new_claims.len(),
            plan.unplaced.len(),
            cost / bound
        );
        time_solve(&mut group, BenchmarkId::from_parameter(count), &problem);
    }
    group.finish();
}

/// The same world as a ported Karpenter NodePool and its pods would make it: every pod selects
/// its capacity type by `karpenter.sh/capacity-type`, and the pool requires a Karpenter key
/// (`selector`), then also asks for `minValues: 5` instance types (`min-values`).
fn scheduling_with_karpenter_rules(c: &mut Criterion) {
    let catalog = fake::catalog(400);
    let mut group = c.benchmark_group("scheduling-karpenter-rules");
    group.sample_size(10);
    for (rules, min_values) in [("selector", None), ("min-values", Some(5))] {
        let mut requirements = Requirements::default();
        requirements.add(
            "karpenter.k8s.aws/instance-cpu",
            Requirement::new(RequirementOperator::Gt, &["1".to_owned()]),
        );
        if min_values.is_some() {
            requirements.add(
                "node.kubernetes.io/instance-type",
                Requirement::new(RequirementOperator::Exists, &[]).with_min_values(min_values),
            );
        }
        let pools = [NodePoolInput {
            name: "default".into(),
            requirements,
            instance_types: (0..catalog.len()).collect(),
            ..NodePoolInput::default()
        }];
        for count in [1_000, 10_000] {
            let mut pods = fake::benchmark_pods(count, 42);
            for pod in &mut pods {
                for alternative in &mut pod.requirements {
                    alternative.add(
                        "karpenter.sh/capacity-type",
                        Requirement::one_of(["on-demand", "spot"]),
                    );
                }
            }
            let problem = new_world(&catalog, &pools, &pods);
            let plan = solve(&problem);
            println!(
                "{count} pods, {rules}: {} nodes, {} unplaced",
                plan.new_claims.len(),
                plan.unplaced.len()
            );
            time_solve(&mut group, BenchmarkId::new(rules, count), &problem);
        }
    }
    group.finish();
}

/// The same world with every pod's terms preferred instead of required (`preferred`), and
/// again under a node limit of a tenth of the pods, so the hostname anti-affinity pods give
/// their preference up once the pool is full (`preferred-relaxed`).
fn scheduling_with_preferences(c: &mut Criterion) {
    let catalog = fake::catalog(400);
    let mut group = c.benchmark_group("scheduling-preferences");
    group.sample_size(10);
    for (case, limited) in [("preferred", false), ("preferred-relaxed", true)] {
        for count in [1_000, 10_000] {
            let pools = [NodePoolInput {
                name: "default".into(),
                instance_types: (0..catalog.len()).collect(),
                limits: Limits::of(None, None, limited.then_some(count as i64 / 10)),
                ..NodePoolInput::default()
            }];
            let mut pods = fake::benchmark_pods(count, 42);
            for pod in &mut pods {
                for term in std::mem::take(&mut pod.terms) {
                    pod.preferences.push(Preference::Term(term));
                }
            }
            let problem = new_world(&catalog, &pools, &pods);
            let plan = solve(&problem);
            println!(
                "{count} pods, {case}: {} nodes, {} unplaced",
                plan.new_claims.len(),
                plan.unplaced.len()
            );
            time_solve(&mut group, BenchmarkId::new(case, count), &problem);
        }
    }
    group.finish();
}

static NO_NAMESPACE_LABELS: std::sync::LazyLock<NamespaceLabels> =
    std::sync::LazyLock::new(NamespaceLabels::new);

/// A batch of `pods` with no nodes yet.
fn new_world<'a>(
    catalog: &'a [InstanceType],
    pools: &'a [NodePoolInput],
    pods: &'a [PodShape],
) -> Problem<'a> {
    Problem {
        catalog,
        pools,
        existing: &[],
        bound: &[],
        pods,
        namespaces: &NO_NAMESPACE_LABELS,
    }
}

/// Times whole solves of `problem`, in pods per second.
fn time_solve(group: &mut BenchmarkGroup<'_, WallTime>, id: BenchmarkId, problem: &Problem) {
    group.throughput(Throughput::Elements(problem.pods.len() as u64));
    group.bench_with_input(id, problem, |b, problem| {
        b.iter(|| black_box(solve(problem)))
    });
}

criterion_group!(
    benches,
    scheduling,
    scheduling_with_karpenter_rules,
    scheduling_with_preferences
);
criterion_main!(benches);
