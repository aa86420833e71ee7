//! Why a NodePool's own requirements admit no instance type: the one requirement, or the pair,
//! that leaves nothing.

use super::{NodePoolInput, describe};
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::requirements::{Requirement, Requirements};

/// Why `pool`'s own requirements admit no instance type of `catalog`, if they admit none.
pub fn no_instance_types(pool: &NodePoolInput, catalog: &[InstanceType]) -> Option<String> {
    let admits_one = pool
        .instance_types
        .iter()
        .any(|&i| catalog[i].satisfies(&pool.requirements));
    (!admits_one).then(|| explain_no_instance_types(pool, catalog))
}

/// Why `pool`'s own requirements admit no instance type of `catalog`: the requirement that
/// admits none alone, else the first two that admit none together, else all of them.
pub fn explain_no_instance_types(pool: &NodePoolInput, catalog: &[InstanceType]) -> String {
    let offered: Vec<&InstanceType> = pool.instance_types.iter().map(|&i| &catalog[i]).collect();
    let single = |key: &str, requirement: &Requirement| {
        let mut only = Requirements::default();
        only.add(key, requirement.clone());
        only
    };
    let admits = |requirements: &Requirements| offered.iter().any(|it| it.satisfies(requirements));
    if !admits(&Requirements::default()) {
        return "no instance type is offered with capacity available".into();
    }
    let keys: Vec<(&String, &Requirement)> = pool.requirements.iter().collect();
    for (key, requirement) in &keys {
        if !admits(&single(key, requirement)) {
            return format!(
                "{key} {requirement} admits none of the {} instance types offered",
                offered.len()
            );
        }
    }
    for (index, (first, first_requirement)) in keys.iter().enumerate() {
        for (second, second_requirement) in &keys[index + 1..] {
            let mut both = single(first, first_requirement);
            both.add(second, (*second_requirement).clone());
            if !admits(&both) {
                return format!(
                    "{first} {first_requirement} and {second} {second_requirement} admit no instance type together"
                );
            }
        }
    }
    format!(
        "together {} admit no instance type",
        describe(&pool.requirements)
    )
}
