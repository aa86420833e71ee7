//! `windlass convert`: KEDA and Karpenter manifests rewritten as Windlass manifests. Pure: text
//! in, text and warnings out; the binary reads the files and prints.
//!
//! Every document is converted on its own (see `keda` and `karpenter`), except the kubelet
//! settings of Karpenter's older NodePools and Provisioners, which Windlass keeps on the
//! EC2NodeClass and which `karpenter::place_kubelets` moves there once all documents are read.
//! Documents of other groups pass through unchanged, so a whole directory can be piped.

mod karpenter;
mod keda;

use std::fmt;

use serde_json::{Map, Value};

/// The group and version every converted object gets.
const WINDLASS_API_VERSION: &str = "windlass.dev/v1alpha1";

/// A field that has no Windlass equivalent and was dropped (or kept with a changed meaning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// `Kind name` or `Kind namespace/name` of the input object.
    pub object: String,
    /// The field's path in the input object, e.g. `spec.provider.launchTemplate`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: {}: {} {}", self.object, self.path, self.reason)
    }
}

/// Input the converter cannot turn into Windlass manifests at all.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{source_name}: document {document} is not valid YAML: {reason}")]
    InvalidYaml {
        source_name: String,
        document: usize,
        reason: String,
    },
    #[error("{source_name}: document {document} has no apiVersion or kind")]
    NotAnObject {
        source_name: String,
        document: usize,
    },
    #[error("{object}: {api_version} {kind} is not a kind windlass convert knows")]
    UnknownKind {
        object: String,
        api_version: String,
        kind: String,
    },
    #[error(
        "{object}: trigger {index} has type {trigger_type}, which Windlass does not support (only aws-sqs-queue)"
    )]
    UnsupportedTrigger {
        object: String,
        index: usize,
        trigger_type: String,
    },
    #[error("{object}: {path}: {reason}")]
    Unconvertible {
        object: String,
        path: String,
        reason: String,
    },
}

/// What a run produced: the multi-document YAML for stdout and the warnings for stderr.
#[derive(Debug, PartialEq)]
pub struct Conversion {
    pub yaml: String,
    pub warnings: Vec<Warning>,
}

/// Converts the YAML documents of every source, given as (name for messages, text), in order.
pub fn convert(sources: &[(String, String)]) -> Result<Conversion, ConvertError> {
    let mut warnings = Vec::new();
    let mut converted = Vec::new();
    let mut kubelets = Vec::new();
    for (source_name, text) in sources {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value: Value =
                serde::Deserialize::deserialize(document).map_err(|e: serde_yaml::Error| {
                    ConvertError::InvalidYaml {
                        source_name: source_name.clone(),
                        document: index + 1,
                        reason: e.to_string(),
                    }
                })?;
            if value.is_null() {
                continue;
            }
            let (Some(api_version), Some(kind)) = (
                value.get("apiVersion").and_then(Value::as_str),
                value.get("kind").and_then(Value::as_str),
            ) else {
                return Err(ConvertError::NotAnObject {
                    source_name: source_name.clone(),
                    document: index + 1,
                });
            };
            let (api_version, kind) = (api_version.to_owned(), kind.to_owned());
            let mut ctx = Context {
                object: describe(&kind, &value),
                warnings: &mut warnings,
            };
            match api_version.split_once('/').map_or("", |(group, _)| group) {
                "keda.sh" => converted.push(keda::convert(&api_version, &kind, value, &mut ctx)?),
                "karpenter.sh" | "karpenter.k8s.aws" => {
                    let output = karpenter::convert(&api_version, &kind, value, &mut ctx)?;
                    converted.extend(output.objects);
                    kubelets.extend(output.kubelet);
                }
                _ => converted.push(value),
            }
        }
    }
    karpenter::place_kubelets(&mut converted, kubelets, &mut warnings);
    Ok(Conversion {
        yaml: render(&converted),
        warnings,
    })
}

fn render(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|object| serde_yaml::to_string(object).expect("a JSON value always renders as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `Kind name` or `Kind namespace/name`, as messages name an input object.
fn describe(kind: &str, object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or("(unnamed)");
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The object being converted and where its warnings go.
struct Context<'a> {
    object: String,
    warnings: &'a mut Vec<Warning>,
}

impl Context<'_> {
    fn warn(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.warnings.push(Warning {
            object: self.object.clone(),
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn dropped(&mut self, path: impl Into<String>) {
        self.warn(path, "has no equivalent; dropped");
    }

    fn unconvertible(&self, path: impl Into<String>, reason: impl Into<String>) -> ConvertError {
        ConvertError::Unconvertible {
            object: self.object.clone(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Drops, with a warning each, the keys of `map` (found at `path`) not in `known`.
    fn keep_known(&mut self, map: &mut Map<String, Value>, path: &str, known: &[&str]) {
        let unknown: Vec<String> = map
            .keys()
            .filter(|key| !known.contains(&key.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            map.remove(&key);
            self.dropped(format!("{path}.{key}"));
        }
    }

    /// Like `keep_known` for the object at `path` inside `parent`, if there is one.
    fn keep_known_in(
        &mut self,
        parent: &mut Map<String, Value>,
        key: &str,
        path: &str,
        known: &[&str],
    ) {
        if let Some(Value::Object(map)) = parent.get_mut(key) {
            self.keep_known(map, &format!("{path}.{key}"), known);
        }
    }
}

/// The metadata a converted object keeps: what the user wrote, without what the server set
/// (uid, resourceVersion, managedFields, status-like fields, finalizers of the peer).
fn user_metadata(metadata: &Value) -> Map<String, Value> {
    let mut kept = Map::new();
    for key in ["name", "generateName", "namespace", "labels", "annotations"] {
        if let Some(value) = metadata.get(key) {
            kept.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(Value::Object(annotations)) = kept.get_mut("annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            kept.remove("annotations");
        }
    }
    kept
}

/// The object's `spec` as a map (an empty one if it has none).
fn take_spec(object: &mut Value) -> Map<String, Value> {
    match object.get_mut("spec").map(Value::take) {
        Some(Value::Object(spec)) => spec,
        _ => Map::new(),
    }
}

/// A new Windlass object of `kind` with the input's metadata and `spec`.
fn windlass_object(kind: &str, metadata: Map<String, Value>, spec: Map<String, Value>) -> Value {
    let mut object = Map::new();
    object.insert("apiVersion".into(), WINDLASS_API_VERSION.into());
    object.insert("kind".into(), kind.into());
    object.insert("metadata".into(), Value::Object(metadata));
    object.insert("spec".into(), Value::Object(spec));
    Value::Object(object)
}

#[cfg(test)]
mod tests;
