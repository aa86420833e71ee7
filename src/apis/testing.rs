//! Builders for unit tests: a valid object of each node-side kind, with what a test cares
//! about merged in.

use serde_json::{Value, json};

use super::node_claim::NodeClaim;
use super::node_pool::NodePool;

/// `base` with `extra` merged in, objects key by key (as a JSON merge patch without deletes).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// A NodeClaim `c` of EC2NodeClass `d` with no requirements, and `extra` merged in.
pub fn node_claim(extra: Value) -> NodeClaim {
    let mut object = json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
        "metadata": {"name": "c"},
        "spec": {"requirements": [],
                 "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}}
    });
    merge(&mut object, extra);
    serde_json::from_value(object).expect("a NodeClaim")
}

/// A NodePool `p` of EC2NodeClass `d` with no requirements, and `extra` merged in.
pub fn node_pool(extra: Value) -> NodePool {
    let mut object = json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": "p"},
        "spec": {"template": {"spec": {"requirements": [],
                    "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}}}}
    });
    merge(&mut object, extra);
    serde_json::from_value(object).expect("a NodePool")
}
