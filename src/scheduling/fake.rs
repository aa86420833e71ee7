//! Karpenter's benchmark world, for tests and benchmarks: its fake instance types (type i has
//! i+1 vCPU, 2(i+1) GiB and 10(i+1) pods, in three zones, spot and on-demand) and its workload
//! of pods in five families, with requests drawn from a seeded generator.

use std::collections::BTreeMap;

use super::instance_types::{InstanceType, ON_DEMAND, Offering, SPOT, Shape};
use super::pod::{Namespaces, PodShape, Selector, Spread, Term, TermKind, TopologyKey};
use super::requirements::Requirements;
use super::resources::Resources;

pub const ZONES: [&str; 3] = ["test-zone-1", "test-zone-2", "test-zone-3"];

/// `count` instance types; prices grow with size, spot at a third of on-demand.
pub fn catalog(count: usize) -> Vec<InstanceType> {
    (0..count)
        .map(|i| {
            let size = i as i64 + 1;
            let shape = Shape {
                vcpus: size,
                memory_mib: 2 * 1024 * size,
                max_pods: 10 * size,
                ..Shape::default()
            };
            let on_demand = 0.05 * size as f64 + 0.001 * (i % 7) as f64;
            let offerings = ZONES
                .iter()
                .flat_map(|zone| {
                    [(ON_DEMAND, on_demand), (SPOT, on_demand / 3.0)].map(
                        |(capacity_type, price)| Offering {
                            zone: (*zone).to_owned(),
                            capacity_type: capacity_type.to_owned(),
                            price: Some(price),
                            available: true,
                        },
                    )
                })
                .collect();
            let arch = if i % 2 == 0 { "amd64" } else { "arm64" };
            InstanceType::new(&format!("fake-it-{i}.{size}x"), arch, shape, offerings)
        })
        .collect()
}

/// SplitMix64: a small seeded generator, so every run sees the same workload.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }

    fn pick<'a>(&mut self, values: &'a [&'a str]) -> &'a str {
        values[self.below(values.len())]
    }
}

const LABEL_VALUES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const CPU_MILLIS: [i64; 5] = [100, 250, 500, 1000, 1500];
const MEMORY_MIB: [i64; 6] = [100, 256, 512, 1024, 2048, 4096];

/// Karpenter's benchmark workload in the five families of DESIGN §7: plain, zone spread,
/// hostname spread, zone self-affinity and hostname anti-affinity, `count / 5` each (plain
/// pods fill the remainder).
pub fn benchmark_pods(count: usize, seed: u64) -> Vec<PodShape> {
    let mut random = Seeded::new(seed);
    let family = count / 5;
    let mut pods = Vec::with_capacity(count);
    let label = |random: &mut Seeded, key: &str| {
        BTreeMap::from([(key.to_owned(), random.pick(&LABEL_VALUES).to_owned())])
    };
    for index in 0..count {
        let kind = if index < 5 * family {
            index / family.max(1)
        } else {
            0
        };
        let requests = Resources {
            cpu: CPU_MILLIS[random.below(CPU_MILLIS.len())],
            memory: MEMORY_MIB[random.below(MEMORY_MIB.len())] << 20,
            pods: 1,
            ..Resources::default()
        };
        let term = |kind: TermKind, key: TopologyKey, selector: BTreeMap<String, String>| Term {
            kind,
            key,
            namespaces: Namespaces::only("default"),
            selector: Selector::with_labels(selector),
        };
        let (labels, terms) = match kind {
            1 => (
                label(&mut random, "my-label"),
                vec![term(
                    TermKind::Spread(Spread::max_skew(1)),
                    TopologyKey::Zone,
                    label(&mut random, "my-label"),
                )],
            ),
            2 => (
                label(&mut random, "my-label"),
                vec![term(
                    TermKind::Spread(Spread::max_skew(1)),
                    TopologyKey::Hostname,
                    label(&mut random, "my-label"),
                )],
            ),
            3 => (
                label(&mut random, "my-affinity"),
                vec![term(
                    TermKind::Affinity,
                    TopologyKey::Zone,
                    label(&mut random, "my-affinity"),
                )],
            ),
            4 => {
                let app = BTreeMap::from([("app".to_owned(), "nginx".to_owned())]);
                (
                    app.clone(),
                    vec![term(TermKind::AntiAffinity, TopologyKey::Hostname, app)],
                )
            }
            _ => (label(&mut random, "my-label"), Vec::new()),
        };
        pods.push(PodShape {
            name: format!("default/pod-{index}"),
            namespace: "default".into(),
            labels,
            requests,
            requirements: vec![Requirements::default()],
            node_affinity: None,
            tolerations: Vec::new(),
            terms,
            host_ports: Vec::new(),
            preferences: Vec::new(),
        });
    }
    pods
}
