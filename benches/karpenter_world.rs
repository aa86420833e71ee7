//! Windlass' side of `hack/bench/karpenter.sh`: one `solve` of a world that Karpenter's
//! scheduling benchmark generated (its pods, and its 400 fake instance types with their
//! allocatable and offerings), timed in wall and CPU seconds, with the NodeClaims the plan
//! opens, their price, and the fractional lower bound. It prints one line of `key=value`
//! fields, which the script gathers into its table.
//!
//! cargo bench --bench karpenter_world -- <world.json>   (the script runs the built binary)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;
use windlass::scheduling::instance_types::{InstanceType, Offering, Shape};
use windlass::scheduling::pod::{NamespaceLabels, PodShape, PodShapeError};
use windlass::scheduling::resources::Resources;
use windlass::scheduling::{NewClaim, NodePoolInput, Problem, solve};

/// What `TestWindlassWorld` (hack/bench/karpenter/testdata) writes.
#[derive(Deserialize)]
struct World {
    case: String,
    pods: Vec<Pod>,
    instance_types: Vec<WorldInstanceType>,
}

#[derive(Deserialize)]
struct WorldInstanceType {
    name: String,
    arch: String,
    capacity: BTreeMap<String, Quantity>,
    /// Karpenter's: capacity less the fake types' kube-reserved (100m CPU, 10Mi memory).
    allocatable: BTreeMap<String, Quantity>,
    offerings: Vec<WorldOffering>,
}

#[derive(Deserialize)]
struct WorldOffering {
    zone: String,
    capacity_type: String,
    price: f64,
    available: bool,
}

#[derive(Debug, thiserror::Error)]
enum WorldError {
    #[error("usage: karpenter_world <world.json> (hack/bench/karpenter.sh writes it)")]
    Usage,
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("parsing {0}: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("pod {0}: {1}")]
    Pod(String, PodShapeError),
}

const MIB: i64 = 1024 * 1024;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("karpenter_world: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), WorldError> {
    // `cargo bench` passes `--bench`; the world file is the one other argument.
    let path: PathBuf = std::env::args()
        .skip(1)
        .find(|argument| argument != "--bench")
        .ok_or(WorldError::Usage)?
        .into();
    let text = std::fs::read_to_string(&path).map_err(|e| WorldError::Read(path.clone(), e))?;
    let world: World = serde_json::from_str(&text).map_err(|e| WorldError::Parse(path, e))?;
    let catalog: Vec<InstanceType> = world.instance_types.iter().map(instance_type).collect();
    let pods = world
        .pods
        .iter()
        .map(|pod| {
            PodShape::from_pod(pod)
                .map_err(|e| WorldError::Pod(pod.metadata.name.clone().unwrap_or_default(), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pools = [NodePoolInput {
        name: "default".into(),
        instance_types: (0..catalog.len()).collect(),
        ..NodePoolInput::default()
    }];
    let namespaces = NamespaceLabels::new();
    let problem = Problem {
        catalog: &catalog,
        pools: &pools,
        existing: &[],
        bound: &[],
        pods: &pods,
        namespaces: &namespaces,
    };

    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let plan = std::hint::black_box(solve(&problem));
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;

    let dollars_per_hour: f64 = plan
        .new_claims
        .iter()
        .map(|claim| launch_price(&catalog, claim))
        .sum();
    println!(
        "windlass case={} pods={} seconds={seconds:.6} cpu_seconds={cpu:.6} node_claims={} \
         unplaced={} dollars_per_hour={dollars_per_hour:.4} lower_bound={:.4}",
        world.case,
        pods.len(),
        plan.new_claims.len(),
        plan.unplaced.len(),
        fractional_lower_bound(&catalog, &pods),
    );
    Ok(())
}

/// Karpenter's fake type as Windlass' catalog holds one, with Karpenter's capacity and
/// allocatable in place of those Windlass would derive from the shape (EKS reservations).
fn instance_type(world: &WorldInstanceType) -> InstanceType {
    let capacity = Resources::from_list(&world.capacity);
    let shape = Shape {
        vcpus: capacity.cpu / 1000,
        memory_mib: capacity.memory / MIB,
        max_pods: capacity.pods,
        ..Shape::default()
    };
    let offerings = world
        .offerings
        .iter()
        .map(|offering| Offering {
            zone: offering.zone.clone(),
            capacity_type: offering.capacity_type.clone(),
            price: Some(offering.price),
            available: offering.available,
        })
        .collect();
    let mut instance_type = InstanceType::new(&world.name, &world.arch, shape, offerings);
    instance_type.capacity = capacity;
    instance_type.allocatable = Resources::from_list(&world.allocatable);
    instance_type
}

/// What the claim costs launched at its cheapest: the lowest price of an available offering
/// its requirements allow, among its candidate types. The Go side prices Karpenter's
/// NodeClaims the same way.
fn launch_price(catalog: &[InstanceType], claim: &NewClaim) -> f64 {
    claim
        .instance_types
        .iter()
        .filter_map(|&index| catalog[index].cheapest_offering(&claim.requirements)?.price)
        .fold(f64::INFINITY, f64::min)
}

/// No plan costs less than this: for each of CPU, memory and pods, the pods' total request
/// bought at the lowest price per unit of allocatable among the types (their cheapest
/// offering's price over their allocatable); the bound is the largest of the three. It ignores
/// that nodes come whole and that topology keeps pods apart.
fn fractional_lower_bound(catalog: &[InstanceType], pods: &[PodShape]) -> f64 {
    let total = pods
        .iter()
        .fold(Resources::default(), |sum, pod| sum + pod.requests);
    let dimensions: [fn(&Resources) -> i64; 3] = [|r| r.cpu, |r| r.memory, |r| r.pods];
    dimensions
        .iter()
        .map(|amount| {
            let cheapest_per_unit = catalog
                .iter()
                .filter_map(|instance_type| {
                    let price = instance_type.min_price()?;
                    let allocatable = amount(&instance_type.allocatable);
                    (allocatable > 0).then(|| price / allocatable as f64)
                })
                .fold(f64::INFINITY, f64::min);
            amount(&total) as f64 * cheapest_per_unit
        })
        .fold(0.0, f64::max)
}

/// User and system CPU time of this process (every thread), from getrusage(2).
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is given; RUSAGE_SELF cannot fail.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
