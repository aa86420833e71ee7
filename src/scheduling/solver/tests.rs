use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::apis::labels::{ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};
use crate::apis::node_pool::RequirementOperator;
use crate::scheduling::fake;
use crate::scheduling::instance_types::{Devices, ON_DEMAND, Offering, SPOT, Shape};
use crate::scheduling::pod::{
    NamespaceLabels, Namespaces, Preference, Selector, Spread, TopologyKey,
};

const GIB: i64 = 1 << 30;

/// m5.large- and m5.xlarge-like types in three zones.
/// An available offering at `price`.
fn offering(zone: &str, capacity_type: &str, price: f64) -> Offering {
    Offering {
        zone: zone.into(),
        capacity_type: capacity_type.into(),
        price: Some(price),
        available: true,
    }
}

/// On-demand in every zone at `price`.
fn offerings(price: f64) -> Vec<Offering> {
    fake::ZONES
        .iter()
        .map(|zone| offering(zone, ON_DEMAND, price))
        .collect()
}

/// On-demand and spot in the first zone, at these prices.
fn on_demand_and_spot(on_demand: f64, spot: f64) -> Vec<Offering> {
    vec![
        offering(fake::ZONES[0], ON_DEMAND, on_demand),
        offering(fake::ZONES[0], SPOT, spot),
    ]
}

fn small_catalog() -> Vec<InstanceType> {
    vec![
        InstanceType::new(
            "m5.large",
            "amd64",
            Shape {
                vcpus: 2,
                memory_mib: 8192,
                max_pods: 29,
                ..Shape::default()
            },
            offerings(0.096),
        ),
        InstanceType::new(
            "m5.xlarge",
            "amd64",
            Shape {
                vcpus: 4,
                memory_mib: 16384,
                max_pods: 58,
                ..Shape::default()
            },
            offerings(0.192),
        ),
        InstanceType::new(
            "m6g.xlarge",
            "arm64",
            Shape {
                vcpus: 4,
                memory_mib: 16384,
                max_pods: 58,
                ..Shape::default()
            },
            offerings(0.154),
        ),
    ]
}

fn pool(name: &str, catalog: &[InstanceType]) -> NodePoolInput {
    NodePoolInput {
        name: name.into(),
        instance_types: (0..catalog.len()).collect(),
        ..NodePoolInput::default()
    }
}

fn pod(name: &str, cpu: i64, memory: i64) -> PodShape {
    PodShape {
        name: format!("default/{name}"),
        namespace: "default".into(),
        labels: BTreeMap::new(),
        requests: Resources {
            cpu,
            memory,
            pods: 1,
            ..Resources::default()
        },
        requirements: vec![Requirements::default()],
        node_affinity: None,
        tolerations: Vec::new(),
        terms: Vec::new(),
        host_ports: Vec::new(),
        preferences: Vec::new(),
    }
}

fn with_term(mut pod: PodShape, kind: TermKind, key: TopologyKey, app: &str) -> PodShape {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    pod.labels = labels.clone();
    pod.terms.push(Term {
        kind,
        key,
        namespaces: Namespaces::only("default"),
        selector: Selector::with_labels(labels),
    });
    pod
}

fn solve_for(
    catalog: &[InstanceType],
    pools: &[NodePoolInput],
    existing: &[ExistingNode],
    pods: &[PodShape],
) -> Plan {
    solve(&Problem {
        catalog,
        pools,
        existing,
        bound: &[],
        pods,
        namespaces: &NamespaceLabels::new(),
    })
}

/// The plan a solver makes that rescans every slot for every pod.
fn solve_scanning_every_slot(problem: &Problem) -> Plan {
    let mut solver = Solver::new(problem);
    solver.skip_refused = false;
    solver.run()
}

fn names(catalog: &[InstanceType], claim: &NewClaim) -> Vec<String> {
    claim
        .instance_types
        .iter()
        .map(|&i| catalog[i].name.clone())
        .collect()
}

#[test]
fn packs_pods_onto_the_cheapest_types_that_fit() {
    let catalog = small_catalog();
    let pods: Vec<_> = (0..3)
        .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
        .collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    assert_eq!(plan.new_claims.len(), 1);
    let claim = &plan.new_claims[0];
    assert_eq!(claim.pods.len(), 3);
    assert_eq!(
        names(&catalog, claim),
        ["m6g.xlarge", "m5.xlarge"],
        "a 2-vCPU type cannot hold 3 vCPU"
    );
}

#[test]
fn a_pools_kubelet_reservations_decide_what_fits_on_its_nodes() {
    let catalog = small_catalog();
    let pods: Vec<_> = (0..3).map(|i| pod(&format!("p{i}"), 100, GIB)).collect();
    // Every type leaves room for two pods only, as a class's kubelet.maxPods: 2 would.
    let mut two_pods = pool("default", &catalog);
    two_pods.allocatable = (0..catalog.len())
        .map(|i| {
            let mut allocatable = catalog[i].allocatable;
            allocatable.pods = 2;
            (i, allocatable)
        })
        .collect();
    let plan = solve_for(&catalog, &[two_pods], &[], &pods);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    assert_eq!(plan.new_claims.len(), 2, "three pods on two-pod nodes");
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert_eq!(
        plan.new_claims.len(),
        1,
        "with the catalog's allocatable, one node"
    );
}

#[test]
fn node_selectors_and_affinity_narrow_the_claim() {
    let catalog = small_catalog();
    let mut arm = pod("arm", 1000, GIB);
    arm.requirements[0].add(ARCH_LABEL, Requirement::one_of(["amd64"]));
    let mut zoned = pod("zoned", 1000, GIB);
    zoned.requirements = vec![
        {
            let mut r = Requirements::default();
            r.add(ZONE_LABEL, Requirement::one_of(["nowhere"]));
            r
        },
        {
            let mut r = Requirements::default();
            r.add(ZONE_LABEL, Requirement::one_of(["test-zone-2"]));
            r
        },
    ];
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &[arm, zoned]);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    for claim in &plan.new_claims {
        for &i in &claim.instance_types {
            assert!(catalog[i].satisfies(&claim.requirements));
        }
    }
    let zoned_claim = plan
        .new_claims
        .iter()
        .find(|c| c.pods.contains(&1))
        .unwrap();
    assert!(zoned_claim.requirements.allows(ZONE_LABEL, "test-zone-2"));
    assert!(!zoned_claim.requirements.allows(ZONE_LABEL, "test-zone-1"));
    assert!(
        zoned_claim.requirements.allows(ARCH_LABEL, "amd64"),
        "the second pod joined the first"
    );
}

#[test]
fn unknown_labels_and_untolerated_taints_leave_pods_pending_with_a_reason() {
    let catalog = small_catalog();
    let mut tainted = pool("gpu", &catalog);
    tainted.taints = vec![Taint {
        key: "nvidia.com/gpu".into(),
        value: Some("true".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    }];
    let mut team = pod("team", 100, GIB);
    team.requirements[0].add(
        "team",
        Requirement::new(RequirementOperator::In, &["a".into()]),
    );
    let plan = solve_for(&catalog, &[tainted], &[], &[pod("plain", 100, GIB), team]);
    assert_eq!(plan.unplaced.len(), 2);
    for (_, reason) in &plan.unplaced {
        assert!(
            reason
                .to_string()
                .contains("taint nvidia.com/gpu=true:NoSchedule is not tolerated"),
            "{reason}"
        );
    }
    let mut labelled = pool("default", &catalog);
    labelled
        .requirements
        .add("team", Requirement::one_of(["b"]));
    let mut team = pod("team", 100, GIB);
    team.requirements[0].add("team", Requirement::one_of(["a"]));
    let plan = solve_for(&catalog, &[labelled], &[], &[team]);
    assert!(
        plan.unplaced[0]
            .1
            .to_string()
            .contains("team In [a] conflicts with team In [b]"),
        "{:?}",
        plan.unplaced
    );
}

#[test]
fn limits_stop_new_claims_and_say_which() {
    let catalog = small_catalog();
    let mut limited = pool("default", &catalog);
    limited.instance_types = vec![0];
    limited.limits = Limits::of(Some(4000), Some(8 * GIB), None);
    let pods: Vec<_> = (0..3)
        .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
        .collect();
    let plan = solve_for(&catalog, &[limited], &[], &pods);
    // An m5.large holds one such pod (1930m allocatable); one node takes all 8Gi.
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.unplaced.len(), 2);
    assert!(
        plan.unplaced[0]
            .1
            .to_string()
            .contains("limit memory=8Gi reached"),
        "{:?}",
        plan.unplaced
    );
}

#[test]
fn a_claim_reserves_the_largest_type_it_keeps_not_only_the_ones_first_offered() {
    let shape = |vcpus: i64| Shape {
        vcpus,
        memory_mib: 8192,
        max_pods: 29,
        ..Shape::default()
    };
    let offering = |price: f64| {
        vec![Offering {
            zone: fake::ZONES[0].into(),
            capacity_type: ON_DEMAND.into(),
            price: Some(price),
            available: true,
        }]
    };
    // The 60 cheapest have 2 vCPUs; the dearest, which a launch falls back to once those are
    // out of capacity, has 8.
    let mut catalog: Vec<InstanceType> = (0..LAUNCH_CANDIDATES)
        .map(|i| {
            let price = 0.1 + 0.001 * i as f64;
            InstanceType::new(&format!("a.s{i}"), "amd64", shape(2), offering(price))
        })
        .collect();
    catalog.push(InstanceType::new("b.big", "amd64", shape(8), offering(1.0)));
    let mut limited = pool("default", &catalog);
    limited.limits = Limits::of(Some(9000), None, None);
    let apart = |name: &str| {
        with_term(
            pod(name, 1000, GIB),
            TermKind::AntiAffinity,
            TopologyKey::Hostname,
            "apart",
        )
    };
    let plan = solve_for(&catalog, &[limited], &[], &[apart("p0"), apart("p1")]);
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(
        plan.new_claims[0].instance_types.len(),
        LAUNCH_CANDIDATES + 1
    );
    assert_eq!(
        plan.unplaced[0].1.to_string(),
        "nodepool default: limit cpu=9 reached",
        "the first claim may launch b.big: 8 of the 9 vCPUs are spoken for"
    );
}

#[test]
fn an_on_demand_pool_ranks_its_types_by_their_on_demand_prices() {
    let shape = Shape {
        vcpus: 2,
        memory_mib: 8192,
        max_pods: 29,
        ..Shape::default()
    };
    let catalog = vec![
        InstanceType::new(
            "cheap-spot.large",
            "amd64",
            shape,
            on_demand_and_spot(1.0, 0.1),
        ),
        InstanceType::new(
            "cheap-on-demand.large",
            "amd64",
            shape,
            on_demand_and_spot(0.5, 0.4),
        ),
    ];
    let mut on_demand = pool("default", &catalog);
    on_demand
        .requirements
        .add(CAPACITY_TYPE_LABEL, Requirement::one_of([ON_DEMAND]));
    let plan = solve_for(&catalog, &[on_demand], &[], &[pod("p", 1000, GIB)]);
    assert_eq!(
        names(&catalog, &plan.new_claims[0]),
        ["cheap-on-demand.large", "cheap-spot.large"]
    );
    let plan = solve_for(
        &catalog,
        &[pool("any", &catalog)],
        &[],
        &[pod("p", 1000, GIB)],
    );
    assert_eq!(
        names(&catalog, &plan.new_claims[0]),
        ["cheap-spot.large", "cheap-on-demand.large"],
        "a pool that allows spot ranks by the cheapest offering"
    );
}

#[test]
fn a_claim_narrowed_to_on_demand_ranks_its_types_by_on_demand_prices() {
    let shape = Shape {
        vcpus: 4,
        memory_mib: 16384,
        max_pods: 58,
        ..Shape::default()
    };
    let catalog = vec![
        InstanceType::new("cheap-spot", "amd64", shape, on_demand_and_spot(0.30, 0.05)),
        InstanceType::new(
            "cheap-on-demand",
            "amd64",
            shape,
            on_demand_and_spot(0.20, 0.10),
        ),
    ];
    let any_capacity = pool("default", &catalog);
    let mut on_demand = pod("on-demand", 1000, GIB);
    on_demand.requirements[0].add(CAPACITY_TYPE_LABEL, Requirement::one_of([ON_DEMAND]));
    for pods in [
        vec![on_demand.clone()],
        vec![pod("first", 2000, GIB), on_demand],
    ] {
        let plan = solve_for(&catalog, std::slice::from_ref(&any_capacity), &[], &pods);
        assert_eq!(plan.new_claims.len(), 1);
        assert_eq!(
            names(&catalog, &plan.new_claims[0]),
            ["cheap-on-demand", "cheap-spot"],
            "new or narrowed later, the claim ranks at on-demand prices"
        );
    }
    let plan = solve_for(&catalog, &[any_capacity], &[], &[pod("any", 1000, GIB)]);
    assert_eq!(
        names(&catalog, &plan.new_claims[0]),
        ["cheap-spot", "cheap-on-demand"]
    );
}

#[test]
fn a_limit_smaller_than_the_cheapest_node_is_named() {
    let catalog = small_catalog();
    let mut limited = pool("default", &catalog);
    limited.limits = Limits::of(Some(1000), None, None);
    let plan = solve_for(&catalog, &[limited], &[], &[pod("p", 500, GIB)]);
    assert_eq!(
        plan.unplaced[0].1.to_string(),
        "nodepool default: limit cpu=1 reached"
    );
}

#[test]
fn weights_order_the_node_pools() {
    let catalog = small_catalog();
    let mut heavy = pool("z-heavy", &catalog);
    heavy.weight = 50;
    let plan = solve_for(
        &catalog,
        &[pool("a-light", &catalog), heavy],
        &[],
        &[pod("p", 100, GIB)],
    );
    assert_eq!(plan.new_claims[0].pool, 1);
}

#[test]
fn in_flight_capacity_is_used_before_new_claims() {
    let catalog = small_catalog();
    let node = ExistingNode {
        name: "in-flight".into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
        allocatable: Resources {
            cpu: 3920,
            memory: 14 * GIB,
            pods: 58,
            ..Resources::default()
        },
        ..ExistingNode::default()
    };
    let pods: Vec<_> = (0..4)
        .map(|i| pod(&format!("p{i}"), 1000, 3 * GIB))
        .collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[node], &pods);
    assert_eq!(plan.on_existing.len(), 3);
    assert_eq!(plan.new_claims.len(), 1);
}

#[test]
fn topology_spreads_zones_and_separates_hosts() {
    let catalog = small_catalog();
    let spread: Vec<_> = (0..6)
        .map(|i| {
            with_term(
                pod(&format!("s{i}"), 100, GIB),
                TermKind::Spread(Spread::max_skew(1)),
                TopologyKey::Zone,
                "web",
            )
        })
        .collect();
    let plan_spread = solve_for(&catalog, &[pool("default", &catalog)], &[], &spread);
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for claim in &plan_spread.new_claims {
        let zone = claim
            .requirements
            .get(ZONE_LABEL)
            .unwrap()
            .finite_values()
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .clone();
        *per_zone.entry(zone).or_default() += claim.pods.len();
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), [2, 2, 2]);

    let apart: Vec<_> = (0..3)
        .map(|i| {
            with_term(
                pod(&format!("a{i}"), 100, GIB),
                TermKind::AntiAffinity,
                TopologyKey::Hostname,
                "db",
            )
        })
        .collect();
    assert_eq!(
        solve_for(&catalog, &[pool("default", &catalog)], &[], &apart)
            .new_claims
            .len(),
        3
    );

    let together: Vec<_> = (0..4)
        .map(|i| {
            with_term(
                pod(&format!("t{i}"), 1000, GIB),
                TermKind::Affinity,
                TopologyKey::Zone,
                "cache",
            )
        })
        .collect();
    let plan_together = solve_for(&catalog, &[pool("default", &catalog)], &[], &together);
    let zones: BTreeSet<_> = plan_together
        .new_claims
        .iter()
        .map(|c| c.requirements.get(ZONE_LABEL).unwrap().to_string())
        .collect();
    assert_eq!(zones.len(), 1, "{zones:?}");

    let mut ports = vec![pod("h1", 100, GIB), pod("h2", 100, GIB)];
    for p in &mut ports {
        p.host_ports = vec![("TCP".into(), 8080)];
    }
    assert_eq!(
        solve_for(&catalog, &[pool("default", &catalog)], &[], &ports)
            .new_claims
            .len(),
        2
    );
}

#[test]
fn pods_already_on_in_flight_capacity_count_for_topology() {
    let catalog = small_catalog();
    let node = ExistingNode {
        name: "in-flight".into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
        allocatable: Resources {
            cpu: 3920,
            memory: 14 * GIB,
            pods: 58,
            ..Resources::default()
        },
        ..ExistingNode::default()
    };
    let web = with_term(
        pod("web-1", 100, GIB),
        TermKind::Spread(Spread::max_skew(1)),
        TopologyKey::Zone,
        "web",
    );
    let bound = [BoundPod {
        node: 0,
        namespace: "default".into(),
        labels: web.labels.clone(),
        terms: web.terms.clone(),
    }];
    let pools = [pool("default", &catalog)];
    let plan = solve(&Problem {
        catalog: &catalog,
        pools: &pools,
        existing: &[node],
        bound: &bound,
        pods: std::slice::from_ref(&web),
        namespaces: &NamespaceLabels::new(),
    });
    assert!(
        plan.on_existing.is_empty(),
        "the spread already has a pod in test-zone-1"
    );
    assert_eq!(plan.new_claims.len(), 1);
    assert!(
        !plan.new_claims[0]
            .requirements
            .allows(ZONE_LABEL, "test-zone-1")
    );
}

#[test]
fn running_nodes_count_for_topology_but_take_no_pods() {
    let catalog = small_catalog();
    let running = ExistingNode {
        name: "running".into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
        allocatable: Resources {
            cpu: 3920,
            memory: 14 * GIB,
            pods: 58,
            ..Resources::default()
        },
        topology_only: true,
        ..ExistingNode::default()
    };
    let web = |name: &str| {
        with_term(
            pod(name, 100, GIB),
            TermKind::Spread(Spread::max_skew(1)),
            TopologyKey::Zone,
            "web",
        )
    };
    let on_node = web("web-0");
    let bound = [BoundPod {
        node: 0,
        namespace: "default".into(),
        labels: on_node.labels.clone(),
        terms: on_node.terms.clone(),
    }];
    let pools = [pool("default", &catalog)];
    let pending = [web("web-1"), web("web-2")];
    let plan = solve(&Problem {
        catalog: &catalog,
        pools: &pools,
        existing: &[running],
        bound: &bound,
        pods: &pending,
        namespaces: &NamespaceLabels::new(),
    });
    assert!(plan.on_existing.is_empty(), "{:?}", plan.on_existing);
    assert_eq!(plan.new_claims.len(), 2);
    for claim in &plan.new_claims {
        assert!(
            !claim.requirements.allows(ZONE_LABEL, "test-zone-1"),
            "test-zone-1 already has the running pod"
        );
    }
}

fn zone_of(claim: &NewClaim) -> String {
    let zones = claim.requirements.get(ZONE_LABEL).unwrap().finite_values();
    let zones: Vec<&String> = zones.unwrap().iter().collect();
    assert_eq!(zones.len(), 1, "{zones:?}");
    zones[0].clone()
}

fn prefer(mut pod: PodShape, kind: TermKind, key: TopologyKey, app: &str) -> PodShape {
    let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
    pod.labels = labels.clone();
    pod.preferences.push(Preference::Term(Term {
        kind,
        key,
        namespaces: Namespaces::only("default"),
        selector: Selector::with_labels(labels),
    }));
    pod
}

fn zone_preference(zone: &str) -> Preference {
    let mut requirements = Requirements::default();
    requirements.add(ZONE_LABEL, Requirement::one_of([zone]));
    Preference::Node(requirements)
}

#[test]
fn a_preferred_zone_is_honoured_and_given_up_when_no_node_can_be_there() {
    let catalog = small_catalog();
    let mut wants_zone_3 = pod("p", 1000, GIB);
    wants_zone_3
        .preferences
        .push(zone_preference("test-zone-3"));
    let plan = solve_for(
        &catalog,
        &[pool("default", &catalog)],
        &[],
        &[wants_zone_3.clone()],
    );
    assert_eq!(zone_of(&plan.new_claims[0]), "test-zone-3");

    let mut elsewhere = pool("default", &catalog);
    elsewhere
        .requirements
        .add(ZONE_LABEL, Requirement::one_of(["test-zone-1"]));
    let plan = solve_for(&catalog, &[elsewhere], &[], &[wants_zone_3]);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    assert_eq!(zone_of(&plan.new_claims[0]), "test-zone-1");
}

#[test]
fn only_the_heaviest_node_preference_held_applies_then_the_next() {
    let catalog = small_catalog();
    let mut pool_1_2 = pool("default", &catalog);
    pool_1_2.requirements.add(
        ZONE_LABEL,
        Requirement::one_of(["test-zone-1", "test-zone-2"]),
    );
    let mut shape = pod("p", 1000, GIB);
    // Read heaviest first: zone 3 (impossible here), then zone 2, then zone 1.
    shape.preferences = vec![
        zone_preference("test-zone-3"),
        zone_preference("test-zone-2"),
        zone_preference("test-zone-1"),
    ];
    let plan = solve_for(&catalog, &[pool_1_2], &[], &[shape]);
    assert_eq!(
        zone_of(&plan.new_claims[0]),
        "test-zone-2",
        "zone 3 is given up for the next preference, not for all of them"
    );
}

#[test]
fn preferred_hostname_anti_affinity_spreads_pods_until_the_node_limit_then_packs() {
    let catalog = small_catalog();
    let apart = |name: &str| {
        prefer(
            pod(name, 100, GIB),
            TermKind::AntiAffinity,
            TopologyKey::Hostname,
            "apart",
        )
    };
    let pods: Vec<PodShape> = (0..3).map(|i| apart(&format!("p{i}"))).collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert_eq!(plan.new_claims.len(), 3, "respected while it can be");

    let mut two_nodes = pool("default", &catalog);
    two_nodes.limits = Limits::of(None, None, Some(2));
    let plan = solve_for(&catalog, &[two_nodes], &[], &pods);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    assert_eq!(plan.new_claims.len(), 2, "relaxed: the third shares a node");

    let required: Vec<PodShape> = (0..3)
        .map(|i| {
            with_term(
                pod(&format!("p{i}"), 100, GIB),
                TermKind::AntiAffinity,
                TopologyKey::Hostname,
                "apart",
            )
        })
        .collect();
    let mut two_nodes = pool("default", &catalog);
    two_nodes.limits = Limits::of(None, None, Some(2));
    let plan = solve_for(&catalog, &[two_nodes], &[], &required);
    assert_eq!(plan.unplaced.len(), 1, "a required term is never given up");
}

#[test]
fn another_pods_preferred_anti_affinity_keeps_no_one_away() {
    let catalog = small_catalog();
    let mut loner = pod("loner", 1000, GIB);
    loner.preferences.push(Preference::Term(Term {
        kind: TermKind::AntiAffinity,
        key: TopologyKey::Hostname,
        namespaces: Namespaces::only("default"),
        selector: Selector::with_labels(BTreeMap::from([("app".into(), "web".into())])),
    }));
    let mut web = pod("web", 100, GIB);
    web.labels = BTreeMap::from([("app".into(), "web".into())]);
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &[loner, web]);
    assert_eq!(plan.new_claims.len(), 1, "{:?}", plan.new_claims);
    assert_eq!(plan.new_claims[0].pods.len(), 2);
}

#[test]
fn a_schedule_anyway_spread_spreads_while_it_can_and_never_leaves_a_pod_pending() {
    let catalog = small_catalog();
    let spread = |name: &str, preferred: bool| {
        let kind = TermKind::Spread(Spread::max_skew(1));
        let shape = pod(name, 1500, GIB);
        if preferred {
            prefer(shape, kind, TopologyKey::Zone, "web")
        } else {
            with_term(shape, kind, TopologyKey::Zone, "web")
        }
    };
    let pods: Vec<PodShape> = (0..3).map(|i| spread(&format!("p{i}"), true)).collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    let mut zones: Vec<String> = plan.new_claims.iter().map(zone_of).collect();
    zones.sort();
    assert_eq!(zones, fake::ZONES);

    // Running elsewhere: a node in zone 1 and a web pod in zone 2; the pool has only zone 2.
    let running = |name: &str, zone: &str| ExistingNode {
        name: name.into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), zone.to_owned())]),
        topology_only: true,
        ..ExistingNode::default()
    };
    let existing = [running("a", "test-zone-1"), running("b", "test-zone-2")];
    let bound = [BoundPod {
        node: 1,
        namespace: "default".into(),
        labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
        terms: Vec::new(),
    }];
    let mut zone_2 = pool("default", &catalog);
    zone_2
        .requirements
        .add(ZONE_LABEL, Requirement::one_of(["test-zone-2"]));
    let unplaced = |pod: PodShape| {
        let pods = [pod];
        solve(&Problem {
            catalog: &catalog,
            pools: std::slice::from_ref(&zone_2),
            existing: &existing,
            bound: &bound,
            pods: &pods,
            namespaces: &NamespaceLabels::new(),
        })
        .unplaced
        .len()
    };
    assert_eq!(
        unplaced(spread("hard", false)),
        1,
        "DoNotSchedule: zone 2 would be 2 to 0"
    );
    assert_eq!(
        unplaced(spread("soft", true)),
        0,
        "ScheduleAnyway gives way"
    );
}

#[test]
fn a_zone_spread_counts_the_zones_its_pools_and_nodes_offer_not_the_whole_region() {
    let catalog = small_catalog();
    let mut two_zones = pool("default", &catalog);
    two_zones.requirements.add(
        ZONE_LABEL,
        Requirement::one_of(["test-zone-1", "test-zone-2"]),
    );
    let spread = |name: &str, min_domains: i32| {
        let kind = TermKind::Spread(Spread {
            min_domains,
            ..Spread::max_skew(1)
        });
        with_term(pod(name, 100, GIB), kind, TopologyKey::Zone, "web")
    };
    let placed = |min_domains: i32| {
        let pods: Vec<PodShape> = (0..4)
            .map(|i| spread(&format!("p{i}"), min_domains))
            .collect();
        let plan = solve_for(&catalog, std::slice::from_ref(&two_zones), &[], &pods);
        4 - plan.unplaced.len()
    };
    assert_eq!(placed(1), 4, "test-zone-3 has no subnet: it is no domain");
    assert_eq!(placed(2), 4);
    assert_eq!(
        placed(3),
        2,
        "fewer zones than minDomains: one pod per zone"
    );
}

#[test]
fn min_domains_above_the_zone_count_caps_each_zone_at_max_skew() {
    let catalog = small_catalog();
    let spread = |name: &str, min_domains: i32| {
        let kind = TermKind::Spread(Spread {
            min_domains,
            ..Spread::max_skew(1)
        });
        with_term(pod(name, 100, GIB), kind, TopologyKey::Zone, "web")
    };
    let pods: Vec<PodShape> = (0..4).map(|i| spread(&format!("p{i}"), 5)).collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert_eq!(plan.unplaced.len(), 1, "three zones, one pod each");
    let pods: Vec<PodShape> = (0..4).map(|i| spread(&format!("p{i}"), 3)).collect();
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
}

#[test]
fn pod_anti_affinity_counts_pods_in_the_namespaces_its_selector_picks() {
    let catalog = small_catalog();
    let web_label = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let mut guard = pod("guard", 1000, GIB);
    guard.namespace = "guard".into();
    guard.terms.push(Term {
        kind: TermKind::AntiAffinity,
        key: TopologyKey::Hostname,
        namespaces: Namespaces {
            names: Default::default(),
            selector: Some(Selector::with_labels(BTreeMap::from([(
                "team".to_owned(),
                "a".to_owned(),
            )]))),
        },
        selector: Selector::with_labels(web_label.clone()),
    });
    let mut web = pod("web", 100, GIB);
    web.namespace = "shop".into();
    web.labels = web_label;
    let claims_with = |team: &str| {
        let namespaces = NamespaceLabels::from([(
            "shop".to_owned(),
            BTreeMap::from([("team".to_owned(), team.to_owned())]),
        )]);
        let pools = [pool("default", &catalog)];
        let pods = [guard.clone(), web.clone()];
        solve(&Problem {
            catalog: &catalog,
            pools: &pools,
            existing: &[],
            bound: &[],
            pods: &pods,
            namespaces: &namespaces,
        })
        .new_claims
        .len()
    };
    assert_eq!(
        claims_with("a"),
        2,
        "shop is selected: web must go elsewhere"
    );
    assert_eq!(claims_with("b"), 1, "shop is not selected: web may share");
}

#[test]
fn a_pool_whose_requirements_admit_no_type_names_the_conflict() {
    let catalog = small_catalog();
    let mut conflicting = pool("graviton", &catalog);
    conflicting
        .requirements
        .add(ARCH_LABEL, Requirement::one_of(["amd64"]));
    conflicting
        .requirements
        .add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m6g.xlarge"]));
    let plan = solve_for(&catalog, &[conflicting], &[], &[pod("p", 100, GIB)]);
    let Unplaced(reasons) = &plan.unplaced[0].1;
    assert_eq!(
        reasons[0].1,
        Rejection::NoInstanceTypes(
            "kubernetes.io/arch In [amd64] and node.kubernetes.io/instance-type In [m6g.xlarge] admit no instance type together".into()
        )
    );
    let mut unknown = pool("unknown", &catalog);
    unknown
        .requirements
        .add(INSTANCE_TYPE_LABEL, Requirement::one_of(["t4g.nano"]));
    assert_eq!(
        explain_no_instance_types(&unknown, &catalog),
        "node.kubernetes.io/instance-type In [t4g.nano] admits none of the 3 instance types offered"
    );
}

#[test]
fn a_gpu_pod_gets_a_gpu_type_and_is_told_when_none_has_enough() {
    let mut catalog = small_catalog();
    catalog.push(InstanceType::new(
        "g5.xlarge",
        "amd64",
        Shape {
            vcpus: 4,
            memory_mib: 16384,
            max_pods: 58,
            devices: Devices {
                nvidia_gpu: 1,
                ..Devices::default()
            },
            ..Shape::default()
        },
        catalog[1]
            .offerings
            .iter()
            .map(|o| Offering {
                price: Some(1.006),
                ..o.clone()
            })
            .collect(),
    ));
    let pools = [pool("default", &catalog)];
    let gpu_pod = |name: &str, gpus: i64| {
        let mut shape = pod(name, 500, GIB);
        shape.requests.nvidia_gpu = gpus;
        shape
    };
    let plan = solve_for(
        &catalog,
        &pools,
        &[],
        &[gpu_pod("one", 1), gpu_pod("two", 2)],
    );
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(
        plan.new_claims[0].instance_types,
        vec![3],
        "only the g5.xlarge has a GPU"
    );
    let (_, Unplaced(reasons)) = &plan.unplaced[0];
    assert_eq!(
        reasons[0].1.to_string(),
        "the pod needs cpu=500m, memory=1Gi, nvidia.com/gpu=2 with DaemonSets; the largest instance type it could use allocates cpu=3920m, memory=15391Mi, nvidia.com/gpu=1"
    );
}

#[test]
fn a_pod_larger_than_every_type_and_one_matching_no_type_get_their_own_reasons() {
    let catalog = small_catalog();
    let pools = [pool("default", &catalog)];
    let mut arm_large = pod("arm-large", 100, GIB);
    arm_large.requirements[0].add(ARCH_LABEL, Requirement::one_of(["arm64"]));
    arm_large.requirements[0].add(INSTANCE_TYPE_LABEL, Requirement::one_of(["m5.large"]));
    let plan = solve_for(
        &catalog,
        &pools,
        &[],
        &[pod("huge", 64_000, GIB), arm_large],
    );
    let reason = |index: usize| {
        let (_, Unplaced(reasons)) = plan.unplaced.iter().find(|(p, _)| *p == index).unwrap();
        reasons[0].1.clone()
    };
    assert!(
        matches!(reason(0), Rejection::TooLarge { needed, largest } if needed.cpu == 64_000 && largest.cpu == 3920),
        "{:?}",
        reason(0)
    );
    assert!(
        reason(0)
            .to_string()
            .starts_with("the pod needs cpu=64, memory=1Gi"),
        "{}",
        reason(0)
    );
    assert!(
        matches!(reason(1), Rejection::NoMatchingType { .. }),
        "{:?}",
        reason(1)
    );
}

#[test]
fn a_pool_whose_node_class_is_not_ready_says_so() {
    let catalog = small_catalog();
    let mut waiting = pool("default", &catalog);
    waiting.not_ready = Some("EC2NodeClass default is not ready: no subnet matches".into());
    let plan = solve_for(&catalog, &[waiting], &[], &[pod("p", 100, GIB)]);
    assert_eq!(
        plan.unplaced[0].1.to_string(),
        "nodepool default: EC2NodeClass default is not ready: no subnet matches"
    );
}

#[test]
fn a_pod_outside_its_own_spread_selector_does_not_count_itself() {
    let catalog = small_catalog();
    let node = |name: &str, zone: &str, topology_only: bool| ExistingNode {
        name: name.into(),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), zone.to_owned())]),
        allocatable: Resources {
            cpu: 3920,
            memory: 14 * GIB,
            pods: 58,
            ..Resources::default()
        },
        topology_only,
        ..ExistingNode::default()
    };
    let existing = [
        node("running", "test-zone-1", true),
        node("in-flight", "test-zone-1", false),
    ];
    let web = with_term(
        pod("web-0", 100, GIB),
        TermKind::Spread(Spread::max_skew(1)),
        TopologyKey::Zone,
        "web",
    );
    let bound = [BoundPod {
        node: 0,
        namespace: "default".into(),
        labels: web.labels.clone(),
        terms: Vec::new(),
    }];
    // Sidecars spread by the web pods' selector but are not web pods themselves.
    let sidecar = |name: &str| {
        let mut sidecar = web.clone();
        sidecar.name = format!("default/{name}");
        sidecar.labels = BTreeMap::from([("app".to_owned(), "sidecar".to_owned())]);
        sidecar
    };
    let pools = [pool("default", &catalog)];
    let pending = [sidecar("sidecar-0"), sidecar("sidecar-1")];
    let plan = solve(&Problem {
        catalog: &catalog,
        pools: &pools,
        existing: &existing,
        bound: &bound,
        pods: &pending,
        namespaces: &NamespaceLabels::new(),
    });
    assert!(plan.new_claims.is_empty(), "{:?}", plan.new_claims);
    assert_eq!(plan.on_existing, [(0, 1), (1, 1)]);
}

#[test]
fn a_zone_from_a_node_selector_counts_for_the_spread() {
    let catalog = small_catalog();
    let mut pinned = pod("pinned", 1000, GIB);
    pinned.labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    pinned.requirements[0].add(ZONE_LABEL, Requirement::one_of(["test-zone-1"]));
    let spread = with_term(
        pod("spread", 100, GIB),
        TermKind::Spread(Spread::max_skew(1)),
        TopologyKey::Zone,
        "web",
    );
    let pools = [pool("default", &catalog)];
    let plan = solve_for(&catalog, &pools, &[], &[pinned, spread]);
    assert_eq!(plan.new_claims.len(), 2, "{:?}", plan.new_claims);
    let spread_claim = plan.new_claims.iter().find(|c| c.pods == [1]).unwrap();
    assert_ne!(
        zone_of(spread_claim),
        "test-zone-1",
        "the pinned web pod already stands in test-zone-1"
    );
}

#[test]
fn spread_counts_only_nodes_the_pod_may_use_unless_told_to_ignore_affinity() {
    let catalog = small_catalog();
    let other_pool = |name: &str| ExistingNode {
        name: name.into(),
        labels: BTreeMap::from([
            (ZONE_LABEL.to_owned(), "test-zone-1".to_owned()),
            (NODEPOOL_LABEL.to_owned(), "other".to_owned()),
        ]),
        topology_only: true,
        ..ExistingNode::default()
    };
    let existing = [other_pool("other-0"), other_pool("other-1")];
    let web = |name: &str, kind: TermKind| {
        let mut web = with_term(pod(name, 100, GIB), kind, TopologyKey::Zone, "web");
        web.terms.push(Term {
            kind: TermKind::AntiAffinity,
            key: TopologyKey::Hostname,
            namespaces: Namespaces::only("default"),
            selector: Selector::with_labels(web.labels.clone()),
        });
        web.requirements[0].add(NODEPOOL_LABEL, Requirement::one_of(["mine"]));
        web
    };
    let bound: Vec<BoundPod> = (0..2)
        .map(|node| BoundPod {
            node,
            namespace: "default".into(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            terms: Vec::new(),
        })
        .collect();
    let mut mine = pool("mine", &catalog);
    mine.requirements
        .add(NODEPOOL_LABEL, Requirement::one_of(["mine"]));
    let zones = |kind: TermKind| {
        let pending: Vec<PodShape> = (0..3).map(|i| web(&format!("web-{i}"), kind)).collect();
        let plan = solve(&Problem {
            catalog: &catalog,
            pools: std::slice::from_ref(&mine),
            existing: &existing,
            bound: &bound,
            pods: &pending,
            namespaces: &NamespaceLabels::new(),
        });
        let mut zones: Vec<String> = plan.new_claims.iter().map(zone_of).collect();
        zones.sort();
        zones
    };
    assert_eq!(
        zones(TermKind::Spread(Spread::max_skew(1))),
        ["test-zone-1", "test-zone-2", "test-zone-3"],
        "the other pool's pods are on nodes these pods cannot use"
    );
    assert!(
        !zones(TermKind::Spread(Spread {
            honor_node_affinity: false,
            ..Spread::max_skew(1)
        }))
        .contains(&"test-zone-1".to_owned()),
        "nodeAffinityPolicy: Ignore counts them"
    );
}

#[test]
fn the_benchmark_workload_places_every_pod() {
    let catalog = fake::catalog(400);
    let pods = fake::benchmark_pods(1000, 42);
    let plan = solve_for(&catalog, &[pool("default", &catalog)], &[], &pods);
    assert!(
        plan.unplaced.is_empty(),
        "{:?}",
        &plan.unplaced[..plan.unplaced.len().min(3)]
    );
    let anti = plan
        .new_claims
        .iter()
        .filter(|c| c.pods.iter().any(|&p| pods[p].labels.contains_key("app")))
        .count();
    assert_eq!(anti, 200, "each anti-affinity pod has its own node");
}

fn min_types(min_values: usize) -> Requirements {
    let mut requirements = Requirements::default();
    requirements.add(
        INSTANCE_TYPE_LABEL,
        Requirement::new(RequirementOperator::Exists, &[]).with_min_values(Some(min_values)),
    );
    requirements
}

#[test]
fn a_claim_keeps_min_values_types_or_the_pod_says_why() {
    let catalog = small_catalog();
    let mut three = pool("default", &catalog);
    three.requirements = min_types(3);
    // Together two 1-vCPU pods outgrow m5.large, which would leave two types: each gets its
    // own claim of three.
    let pods = [pod("a", 1000, GIB), pod("b", 1000, GIB)];
    let plan = solve_for(&catalog, std::slice::from_ref(&three), &[], &pods);
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    assert_eq!(plan.new_claims.len(), 2);
    for claim in &plan.new_claims {
        assert_eq!(
            claim.instance_types.len(),
            3,
            "{:?}",
            names(&catalog, claim)
        );
    }
    // Only m5.xlarge both fits 3 vCPU and is amd64.
    let mut two = pool("default", &catalog);
    two.requirements = min_types(2);
    let mut big = pod("big", 3000, GIB);
    big.requirements[0].add(ARCH_LABEL, Requirement::one_of(["amd64"]));
    let plan = solve_for(&catalog, &[two], &[], &[big]);
    assert!(plan.new_claims.is_empty());
    assert_eq!(
        plan.unplaced[0].1.to_string(),
        "nodepool default: minValues: node.kubernetes.io/instance-type needs 2 values, \
         the instance types that fit the pod have 1"
    );
}

#[test]
fn the_cheapest_candidates_keep_min_values() {
    let shape = Shape {
        vcpus: 2,
        memory_mib: 8192,
        max_pods: 29,
        ..Shape::default()
    };
    let offering = |price: f64| Offering {
        zone: "a".into(),
        capacity_type: ON_DEMAND.into(),
        price: Some(price),
        available: true,
    };
    // 70 types of family `a`, then one each of `b` and `c`, dearer.
    let mut catalog: Vec<InstanceType> = (0..70)
        .map(|i| {
            InstanceType::new(
                &format!("a.s{i}"),
                "amd64",
                shape,
                vec![offering(0.01 * f64::from(i))],
            )
        })
        .collect();
    catalog.push(InstanceType::new(
        "b.large",
        "amd64",
        shape,
        vec![offering(5.0)],
    ));
    catalog.push(InstanceType::new(
        "c.large",
        "amd64",
        shape,
        vec![offering(6.0)],
    ));
    let candidates: Vec<usize> = (0..catalog.len()).collect();
    assert_eq!(
        cheapest_candidates(
            &candidates,
            &Requirements::default(),
            &catalog,
            LAUNCH_CANDIDATES
        ),
        (0..LAUNCH_CANDIDATES).collect::<Vec<_>>(),
        "without minValues, the 60 cheapest"
    );
    let mut families = Requirements::default();
    families.add(
        "karpenter.k8s.aws/instance-family",
        Requirement::new(RequirementOperator::Exists, &[]).with_min_values(Some(3)),
    );
    let kept = cheapest_candidates(&candidates, &families, &catalog, LAUNCH_CANDIDATES);
    assert_eq!(kept.len(), LAUNCH_CANDIDATES);
    assert_eq!(
        &kept[..LAUNCH_CANDIDATES - 2],
        &(0..58).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        &kept[LAUNCH_CANDIDATES - 2..],
        &[70, 71],
        "one of b and one of c"
    );
    assert!(
        crate::scheduling::instance_types::unmet_min_values(&families, &kept, &catalog).is_none()
    );
}

fn arbitrary_pod() -> impl Strategy<Value = PodShape> {
    (
        0usize..8,
        prop::sample::select(vec![100i64, 250, 500, 1000, 1500, 3000]),
        prop::sample::select(vec![128i64, 512, 1024, 3072, 8192]),
        prop::option::of(prop::sample::select(vec!["amd64", "arm64"])),
        any::<bool>(),
        prop::option::of(0usize..3),
        arbitrary_preferences(),
    )
        .prop_map(
            |(index, cpu, memory_mib, arch, tolerant, family, preferences)| {
                let mut pod = pod(&format!("p{index}"), cpu, memory_mib << 20);
                pod.preferences = preferences;
                if let Some(arch) = arch {
                    pod.requirements[0].add(ARCH_LABEL, Requirement::one_of([arch]));
                }
                if tolerant {
                    pod.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }];
                }
                match family {
                    Some(0) => with_term(
                        pod,
                        TermKind::Spread(Spread::max_skew(1)),
                        TopologyKey::Zone,
                        "spread",
                    ),
                    Some(1) => {
                        with_term(pod, TermKind::AntiAffinity, TopologyKey::Hostname, "apart")
                    }
                    Some(_) => with_term(
                        pod,
                        TermKind::Spread(Spread::max_skew(1)),
                        TopologyKey::Hostname,
                        "hosts",
                    ),
                    None => pod,
                }
            },
        )
}

/// Preferred zones (one that no node has among them), preferred hostname anti-affinity and a
/// ScheduleAnyway zone spread.
fn arbitrary_preferences() -> impl Strategy<Value = Vec<Preference>> {
    let preference = prop_oneof![
        prop::sample::select(vec!["test-zone-1", "test-zone-3", "nowhere"])
            .prop_map(zone_preference),
        prop::sample::select(vec![
            (TermKind::AntiAffinity, TopologyKey::Hostname),
            (TermKind::Spread(Spread::max_skew(1)), TopologyKey::Zone),
        ])
        .prop_map(|(kind, key)| Preference::Term(Term {
            kind,
            key,
            namespaces: Namespaces::only("default"),
            selector: Selector::with_labels(BTreeMap::from([("app".into(), "shy".into())])),
        })),
    ];
    prop::collection::vec(preference, 0..3)
}

/// A pod of `arbitrary_pod`, sometimes with a term whose refusals can lift later (zone or
/// hostname affinity) or a zone anti-affinity.
fn arbitrary_pod_with_affinity() -> impl Strategy<Value = PodShape> {
    (arbitrary_pod(), prop::option::of(0usize..3)).prop_map(|(pod, extra)| match extra {
        Some(0) => with_term(pod, TermKind::Affinity, TopologyKey::Zone, "together"),
        Some(1) => with_term(pod, TermKind::Affinity, TopologyKey::Hostname, "pair"),
        Some(_) => with_term(pod, TermKind::AntiAffinity, TopologyKey::Zone, "alone"),
        None => pod,
    })
}

/// A managed node in one of the three zones with some of its room taken.
fn arbitrary_existing_node() -> impl Strategy<Value = ExistingNode> {
    (0usize..3, 1i64..8, 0i64..2000).prop_map(|(zone, vcpus, requested_cpu)| ExistingNode {
        name: format!("node-{zone}-{vcpus}-{requested_cpu}"),
        labels: BTreeMap::from([(ZONE_LABEL.to_owned(), fake::ZONES[zone].to_owned())]),
        allocatable: Resources {
            cpu: vcpus * 1000,
            memory: vcpus * 2 * GIB,
            pods: 20,
            ..Resources::default()
        },
        requested: Resources {
            cpu: requested_cpu,
            ..Resources::default()
        },
        ..ExistingNode::default()
    })
}

fn arbitrary_pool(catalog_size: usize) -> impl Strategy<Value = NodePoolInput> {
    (
        prop::option::of(1i64..16),
        prop::option::of(1i64..64),
        any::<bool>(),
        0i32..3,
        prop::option::of(1i64..6),
        prop::option::of(1usize..5),
    )
        .prop_map(
            move |(cpu, memory_gib, tainted, weight, nodes, min_values)| NodePoolInput {
                name: format!("pool-{weight}-{tainted}"),
                weight,
                requirements: min_values.map(min_types).unwrap_or_default(),
                taints: if tainted {
                    vec![Taint {
                        key: "dedicated".into(),
                        value: None,
                        effect: "NoSchedule".into(),
                        time_added: None,
                    }]
                } else {
                    Vec::new()
                },
                limits: Limits::of(cpu.map(|c| c * 1000), memory_gib.map(|g| g * GIB), nodes),
                daemon_overhead: Resources {
                    cpu: 100,
                    memory: 128 << 20,
                    pods: 1,
                    ..Resources::default()
                },
                instance_types: (0..catalog_size).collect(),
                ..NodePoolInput::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every placed pod fits its claim, no limit is exceeded whatever type a launch picks,
    /// and every pod is placed once or has a reason.
    #[test]
    fn plans_are_sound(
        pods in prop::collection::vec(arbitrary_pod(), 1..40),
        pools in prop::collection::vec(arbitrary_pool(12), 1..3),
    ) {
        let catalog = fake::catalog(12);
        let plan = solve_for(&catalog, &pools, &[], &pods);
        let mut seen = vec![0; pods.len()];
        for claim in &plan.new_claims {
            let pool = &pools[claim.pool];
            prop_assert!(!claim.instance_types.is_empty());
            let launched = cheapest_candidates(&claim.instance_types, &claim.requirements, &catalog, LAUNCH_CANDIDATES);
            prop_assert_eq!(
                crate::scheduling::instance_types::unmet_min_values(&claim.requirements, &launched, &catalog),
                None
            );
            let requests = claim.pods.iter().fold(pool.daemon_overhead, |sum, &p| sum + pods[p].requests);
            prop_assert_eq!(requests, claim.requests);
            for &i in &claim.instance_types {
                prop_assert!(requests.fits(&catalog[i].allocatable), "{} overfull", catalog[i].name);
                prop_assert!(catalog[i].satisfies(&claim.requirements));
            }
            let mut apart = 0;
            let mut hosts = 0;
            for &p in &claim.pods {
                seen[p] += 1;
                prop_assert!(pods[p].tolerates(&pool.taints).is_ok());
                for &i in &claim.instance_types {
                    let labels = &catalog[i].labels;
                    prop_assert!(labels.iter().all(|(k, v)| pods[p].requirements[0].allows(k, v)));
                }
                apart += usize::from(pods[p].labels.get("app").is_some_and(|a| a == "apart"));
                hosts += usize::from(pods[p].labels.get("app").is_some_and(|a| a == "hosts"));
            }
            prop_assert!(apart <= 1, "anti-affinity pods share a node");
            prop_assert!(hosts <= 1, "hostname spread with maxSkew 1 doubled up on a new node");
        }
        for (pool_index, pool) in pools.iter().enumerate() {
            let claims: Vec<_> = plan.new_claims.iter().filter(|c| c.pool == pool_index).collect();
            let worst = claims.iter().fold(Resources::default(), |sum, claim| {
                sum + cheapest_candidates(&claim.instance_types, &claim.requirements, &catalog, NODE_CLAIM_CANDIDATES).iter().copied().fold(Resources::default(), |max, i| max.max(&catalog[i].capacity))
            });
            prop_assert_eq!(pool.limits.exceeded(&Resources { pods: 0, ..worst }, claims.len() as i64), None);
        }
        for (pod, reason) in &plan.unplaced {
            seen[*pod] += 1;
            prop_assert!(!reason.to_string().is_empty());
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    /// Skipping the slots that refused a pod's class for good changes no plan: the same
    /// claims, pods, candidates, placements on nodes and reasons as rescanning every slot.
    #[test]
    fn skipping_refused_slots_changes_no_plan(
        groups in prop::collection::vec((arbitrary_pod_with_affinity(), 1usize..5), 1..15),
        pools in prop::collection::vec(arbitrary_pool(12), 1..3),
        existing in prop::collection::vec(arbitrary_existing_node(), 0..3),
    ) {
        let catalog = fake::catalog(12);
        let pods: Vec<PodShape> = groups
            .iter()
            .flat_map(|(pod, copies)| std::iter::repeat_n(pod.clone(), *copies))
            .collect();
        let problem = Problem {
            catalog: &catalog,
            pools: &pools,
            existing: &existing,
            bound: &[],
            pods: &pods,
            namespaces: &NamespaceLabels::new(),
        };
        prop_assert_eq!(solve(&problem), solve_scanning_every_slot(&problem));
    }

    /// Preferences decide where a pod goes, never whether it goes: alone among pods already
    /// running (some of them `app=shy` in one zone, so its preferred spread and zone can
    /// clash), a pod is placed with them exactly when it is placed without them.
    #[test]
    fn preferences_never_leave_a_lone_pod_pending(
        shape in arbitrary_pod(),
        pools in prop::collection::vec(arbitrary_pool(12), 1..3),
        shy_running in 0usize..4,
    ) {
        let catalog = fake::catalog(12);
        let running = ExistingNode {
            name: "running".into(),
            labels: BTreeMap::from([(ZONE_LABEL.to_owned(), "test-zone-1".to_owned())]),
            topology_only: true,
            ..ExistingNode::default()
        };
        let bound: Vec<BoundPod> = (0..shy_running)
            .map(|_| BoundPod {
                node: 0,
                namespace: "default".into(),
                labels: BTreeMap::from([("app".to_owned(), "shy".to_owned())]),
                terms: Vec::new(),
            })
            .collect();
        let solve_alone = |pod: PodShape| {
            let pods = [pod];
            solve(&Problem {
                catalog: &catalog,
                pools: &pools,
                existing: std::slice::from_ref(&running),
                bound: &bound,
                pods: &pods,
                namespaces: &NamespaceLabels::new(),
            })
        };
        let with = solve_alone(shape.clone());
        let without = solve_alone(PodShape { preferences: Vec::new(), ..shape });
        prop_assert_eq!(with.unplaced.len(), without.unplaced.len());
    }
}

#[test]
fn the_reasons_that_matter_lead_and_untolerated_pools_come_last() {
    let untolerated = Rejection::Untolerated(crate::scheduling::pod::Untolerated {
        key: "team".into(),
        value: "a".into(),
        effect: "NoSchedule".into(),
    });
    let reasons = Unplaced(vec![
        ("a".into(), untolerated),
        ("b".into(), Rejection::Limit("cpu=4".into())),
    ]);
    assert_eq!(
        reasons.to_string(),
        "nodepool b: limit cpu=4 reached; nodepool a: taint team=a:NoSchedule is not tolerated"
    );
}
