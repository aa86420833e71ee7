//! Schema helpers for embedding Kubernetes' own types. Their upstream descriptions are long
//! (PodSpec's alone is hundreds of kilobytes) and would push a CRD past what client-side
//! `kubectl apply` can store, so embedded types keep their structure and drop the prose.

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

/// A string-to-string map of at most `ENTRIES` entries whose values are at most `LENGTH` long.
/// The API server prices CEL rules by these bounds; without them it rejects the CRD.
pub fn bounded_string_map<const ENTRIES: usize, const LENGTH: usize>(
    _: &mut SchemaGenerator,
) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": ENTRIES,
        "additionalProperties": {"type": "string", "maxLength": LENGTH}
    })
}

/// A list of at most `ITEMS` strings, each at most `LENGTH` long (see [`bounded_string_map`]).
pub fn bounded_string_list<const ITEMS: usize, const LENGTH: usize>(
    _: &mut SchemaGenerator,
) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": ITEMS,
        "items": {"type": "string", "maxLength": LENGTH}
    })
}

/// `T`'s schema without `description` texts, for `#[schemars(schema_with = ...)]`.
pub fn without_descriptions<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<T>().to_value();
    strip_descriptions(&mut schema);
    Schema::try_from(schema).expect("a schema stays an object or a boolean")
}

fn strip_descriptions(node: &mut Value) {
    match node {
        Value::Object(map) => {
            // A property *named* description holds a schema object, not a string, and stays.
            if map.get("description").is_some_and(Value::is_string) {
                map.remove("description");
            }
            map.values_mut().for_each(strip_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_description_texts_but_keeps_a_property_named_description() {
        let mut schema = json!({
            "description": "outer",
            "properties": {
                "description": {"type": "string", "description": "inner"},
                "items": {"type": "array", "items": [{"description": "deep", "type": "integer"}]}
            }
        });
        strip_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({
                "properties": {
                    "description": {"type": "string"},
                    "items": {"type": "array", "items": [{"type": "integer"}]}
                }
            })
        );
    }
}
