//! A variable of a workload's container as its pods would see it, for `...FromEnv` trigger
//! metadata: a plain `value` (with `$(VAR)` references expanded), `valueFrom.secretKeyRef` and
//! `valueFrom.configMapKeyRef`, and `envFrom` Secrets and ConfigMaps with their `prefix`. As in
//! Kubernetes, `env` wins over `envFrom`, and a later entry over an earlier one. The container is
//! `envSourceContainerName`, else the first, as in KEDA.
//!
//! Reading the Secrets and ConfigMaps the container names is the one I/O step; finding the value
//! among them is pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Secret};
use kube::{Api, Client};
use serde_json::Value;

/// The kinds of object a container's environment reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvObjectKind {
    Secret,
    ConfigMap,
}

impl std::fmt::Display for EnvObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EnvObjectKind::Secret => "Secret",
            EnvObjectKind::ConfigMap => "ConfigMap",
        })
    }
}

/// Why a variable has no value the controller can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("the pod template has no containers")]
    NoContainers,
    #[error("the pod template has no container named {0:?} (envSourceContainerName)")]
    NoSuchContainer(String),
    #[error("not set in container {container:?}")]
    NotSet { container: String },
    #[error("{kind} {namespace}/{name} not found")]
    ObjectNotFound {
        kind: EnvObjectKind,
        namespace: String,
        name: String,
    },
    #[error("key {key:?} not found in {kind} {namespace}/{name}")]
    KeyMissing {
        kind: EnvObjectKind,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("comes from a {0}, which only the pod itself can resolve")]
    PodOnly(&'static str),
    #[error("cannot read {kind} {namespace}/{name}: {message}")]
    Read {
        kind: EnvObjectKind,
        namespace: String,
        name: String,
        message: String,
    },
}

impl EnvError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            EnvError::NoContainers | EnvError::NoSuchContainer(_) => "env_container",
            EnvError::NotSet { .. } | EnvError::PodOnly(_) => "env_not_set",
            EnvError::ObjectNotFound { .. } | EnvError::KeyMissing { .. } => "env_object",
            EnvError::Read { .. } => "env_read",
        }
    }
}

/// The data of the Secrets and ConfigMaps a container names, by kind and name; one that does
/// not exist is absent.
pub type EnvObjects = BTreeMap<(EnvObjectKind, String), BTreeMap<String, String>>;

/// The container whose environment is read: `name`, else the first.
pub fn container(pod_spec: &Value, name: Option<&str>) -> Result<Container, EnvError> {
    let containers: Vec<Container> = pod_spec
        .get("containers")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    match name {
        Some(name) => containers
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| EnvError::NoSuchContainer(name.to_owned())),
        None => containers.into_iter().next().ok_or(EnvError::NoContainers),
    }
}

/// Every Secret and ConfigMap the container's environment names.
pub fn referenced_objects(container: &Container) -> BTreeSet<(EnvObjectKind, String)> {
    let mut objects = BTreeSet::new();
    for source in container.env_from.iter().flatten() {
        if let Some(secret) = &source.secret_ref {
            objects.insert((EnvObjectKind::Secret, secret.name.clone()));
        }
        if let Some(config_map) = &source.config_map_ref {
            objects.insert((EnvObjectKind::ConfigMap, config_map.name.clone()));
        }
    }
    for from in container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value_from.as_ref())
    {
        if let Some(secret) = &from.secret_key_ref {
            objects.insert((EnvObjectKind::Secret, secret.name.clone()));
        }
        if let Some(config_map) = &from.config_map_key_ref {
            objects.insert((EnvObjectKind::ConfigMap, config_map.name.clone()));
        }
    }
    objects
}

/// Reads `objects` from `namespace`.
pub async fn read_objects(
    client: &Client,
    namespace: &str,
    objects: BTreeSet<(EnvObjectKind, String)>,
) -> Result<EnvObjects, EnvError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut read = EnvObjects::new();
    for (kind, name) in objects {
        let failed = |e: kube::Error| EnvError::Read {
            kind,
            namespace: namespace.to_owned(),
            name: name.clone(),
            message: e.to_string(),
        };
        let data = match kind {
            EnvObjectKind::Secret => secrets.get_opt(&name).await.map_err(failed)?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            }),
            EnvObjectKind::ConfigMap => config_maps
                .get_opt(&name)
                .await
                .map_err(failed)?
                .map(|c| c.data.unwrap_or_default()),
        };
        if let Some(data) = data {
            read.insert((kind, name), data);
        }
    }
    Ok(read)
}

/// The value of `var` in `container`, over the objects read for it from `namespace`.
pub fn value(
    container: &Container,
    var: &str,
    objects: &EnvObjects,
    namespace: &str,
) -> Result<String, EnvError> {
    let env = Environment {
        container,
        objects,
        namespace,
    };
    env.before(var, env.entries().len())?
        .ok_or_else(|| EnvError::NotSet {
            container: container.name.clone(),
        })
}

/// Reads `var` from the container `container_name` (else the first) of `pod_spec`, with the
/// Secrets and ConfigMaps it names read from `namespace`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    pod_spec: &Value,
    container_name: Option<&str>,
    var: &str,
) -> Result<String, EnvError> {
    let chosen = container(pod_spec, container_name)?;
    let objects = read_objects(client, namespace, referenced_objects(&chosen)).await?;
    value(&chosen, var, &objects, namespace)
}

struct Environment<'a> {
    container: &'a Container,
    objects: &'a EnvObjects,
    namespace: &'a str,
}

impl Environment<'_> {
    fn entries(&self) -> &[EnvVar] {
        self.container.env.as_deref().unwrap_or_default()
    }

    /// `var` as set by the `env` entries before index `end` over `envFrom`: `None` when unset.
    fn before(&self, var: &str, end: usize) -> Result<Option<String>, EnvError> {
        for index in (0..end).rev() {
            let entry = &self.entries()[index];
            if entry.name != var {
                continue;
            }
            if let Some(found) = self.entry(entry, index)? {
                return Ok(Some(found));
            }
        }
        self.in_env_from(var)
    }

    /// One `env` entry's value; `None` when it sets nothing (an optional reference that is
    /// missing), so an earlier definition stands.
    fn entry(&self, entry: &EnvVar, index: usize) -> Result<Option<String>, EnvError> {
        let Some(from) = &entry.value_from else {
            let literal = entry.value.as_deref().unwrap_or_default();
            return self.expand(literal, index).map(Some);
        };
        if let Some(selector) = &from.secret_key_ref {
            return self.key(
                EnvObjectKind::Secret,
                &selector.name,
                &selector.key,
                selector.optional.unwrap_or(false),
            );
        }
        if let Some(selector) = &from.config_map_key_ref {
            return self.key(
                EnvObjectKind::ConfigMap,
                &selector.name,
                &selector.key,
                selector.optional.unwrap_or(false),
            );
        }
        Err(EnvError::PodOnly(if from.field_ref.is_some() {
            "fieldRef"
        } else if from.resource_field_ref.is_some() {
            "resourceFieldRef"
        } else {
            "fileKeyRef"
        }))
    }

    fn key(
        &self,
        kind: EnvObjectKind,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<String>, EnvError> {
        let Some(data) = self.objects.get(&(kind, name.to_owned())) else {
            return if optional {
                Ok(None)
            } else {
                Err(EnvError::ObjectNotFound {
                    kind,
                    namespace: self.namespace.to_owned(),
                    name: name.to_owned(),
                })
            };
        };
        match data.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None if optional => Ok(None),
            None => Err(EnvError::KeyMissing {
                kind,
                namespace: self.namespace.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
            }),
        }
    }

    /// `var` from `envFrom`, where a later source wins over an earlier one.
    fn in_env_from(&self, var: &str) -> Result<Option<String>, EnvError> {
        for source in self.container.env_from.iter().flatten().rev() {
            let Some(key) = var.strip_prefix(source.prefix.as_deref().unwrap_or_default()) else {
                continue;
            };
            let (kind, name, optional) = match (&source.secret_ref, &source.config_map_ref) {
                (Some(secret), _) => (EnvObjectKind::Secret, &secret.name, secret.optional),
                (None, Some(config_map)) => (
                    EnvObjectKind::ConfigMap,
                    &config_map.name,
                    config_map.optional,
                ),
                (None, None) => continue,
            };
            match self.objects.get(&(kind, name.clone())) {
                Some(data) => {
                    if let Some(value) = data.get(key) {
                        return Ok(Some(value.clone()));
                    }
                }
                None if optional.unwrap_or(false) => {}
                None => {
                    return Err(EnvError::ObjectNotFound {
                        kind,
                        namespace: self.namespace.to_owned(),
                        name: name.clone(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// Kubernetes' `$(VAR)` expansion of the literal at entry `index`: a reference to a variable
    /// set before it is replaced, any other stays as written, and `$$` is one `$`.
    fn expand(&self, literal: &str, index: usize) -> Result<String, EnvError> {
        let mut expanded = String::with_capacity(literal.len());
        let mut rest = literal;
        while let Some(at) = rest.find('$') {
            expanded.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(escaped) = after.strip_prefix('$') {
                expanded.push('$');
                rest = escaped;
            } else if let Some((name, tail)) = after
                .strip_prefix('(')
                .and_then(|inner| inner.split_once(')'))
            {
                match self.before(name, index)? {
                    Some(value) => expanded.push_str(&value),
                    None => {
                        expanded.push_str("$(");
                        expanded.push_str(name);
                        expanded.push(')');
                    }
                }
                rest = tail;
            } else {
                expanded.push('$');
                rest = after;
            }
        }
        expanded.push_str(rest);
        Ok(expanded)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A Secret or ConfigMap: its kind, name and data.
    type Object<'a> = (EnvObjectKind, &'a str, &'a [(&'a str, &'a str)]);

    fn objects(entries: &[Object]) -> EnvObjects {
        entries
            .iter()
            .map(|(kind, name, data)| {
                (
                    (*kind, name.to_string()),
                    data.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    fn worker(container: Value) -> Container {
        let mut spec = json!({"name": "worker", "image": "worker:1"});
        spec.as_object_mut()
            .unwrap()
            .extend(container.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    fn read(container: &Container, var: &str, objects: &EnvObjects) -> Result<String, EnvError> {
        value(container, var, objects, "team-a")
    }

    const URL: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders";

    #[test]
    fn the_named_container_or_else_the_first_is_read() {
        let spec = json!({"containers": [{"name": "app"}, {"name": "sidecar"}]});
        assert_eq!(container(&spec, None).unwrap().name, "app");
        assert_eq!(container(&spec, Some("sidecar")).unwrap().name, "sidecar");
        assert_eq!(
            container(&spec, Some("missing")).unwrap_err().to_string(),
            "the pod template has no container named \"missing\" (envSourceContainerName)"
        );
        assert_eq!(
            container(&json!({}), None).unwrap_err(),
            EnvError::NoContainers
        );
    }

    #[test]
    fn a_plain_value_is_read_and_an_unset_variable_is_named() {
        let c = worker(json!({"env": [{"name": "QUEUE_URL", "value": URL}]}));
        assert_eq!(read(&c, "QUEUE_URL", &EnvObjects::new()).unwrap(), URL);
        assert_eq!(
            read(&c, "OTHER", &EnvObjects::new())
                .unwrap_err()
                .to_string(),
            "not set in container \"worker\""
        );
    }

    #[test]
    fn secret_and_config_map_keys_are_read_from_the_objects() {
        let c = worker(json!({"env": [
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "queue", "key": "url"}}},
            {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "queue"}}}
        ]}));
        let found = objects(&[
            (EnvObjectKind::Secret, "queue", &[("url", URL)]),
            (EnvObjectKind::ConfigMap, "settings", &[("queue", "orders")]),
        ]);
        assert_eq!(read(&c, "FROM_SECRET", &found).unwrap(), URL);
        assert_eq!(read(&c, "FROM_MAP", &found).unwrap(), "orders");
        assert_eq!(
            referenced_objects(&c),
            [
                (EnvObjectKind::Secret, "queue".to_string()),
                (EnvObjectKind::ConfigMap, "settings".to_string())
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn a_missing_object_or_key_is_named_unless_optional() {
        let c = worker(json!({"env": [
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "queue", "key": "url"}}},
            {"name": "MAP", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "queue"}}}
        ]}));
        assert_eq!(
            read(&c, "URL", &EnvObjects::new()).unwrap_err().to_string(),
            "Secret team-a/queue not found"
        );
        let without_key = objects(&[
            (EnvObjectKind::Secret, "queue", &[("other", "x")]),
            (EnvObjectKind::ConfigMap, "settings", &[]),
        ]);
        assert_eq!(
            read(&c, "URL", &without_key).unwrap_err().to_string(),
            "key \"url\" not found in Secret team-a/queue"
        );
        assert_eq!(
            read(&c, "MAP", &without_key).unwrap_err().to_string(),
            "key \"queue\" not found in ConfigMap team-a/settings"
        );

        // An optional reference that is missing sets nothing, so the earlier definition stands.
        let optional = worker(json!({
            "envFrom": [{"configMapRef": {"name": "defaults"}}],
            "env": [
                {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "queue", "key": "url", "optional": true}}},
                {"name": "ALONE", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
            ]
        }));
        let defaults = objects(&[(EnvObjectKind::ConfigMap, "defaults", &[("URL", "default")])]);
        assert_eq!(read(&optional, "URL", &defaults).unwrap(), "default");
        assert!(matches!(
            read(&optional, "ALONE", &defaults),
            Err(EnvError::NotSet { .. })
        ));
    }

    #[test]
    fn env_from_applies_its_prefix_and_a_later_source_wins() {
        let c = worker(json!({"envFrom": [
            {"secretRef": {"name": "first"}},
            {"configMapRef": {"name": "second"}, "prefix": "SQS_"},
            {"configMapRef": {"name": "third"}}
        ]}));
        let found = objects(&[
            (
                EnvObjectKind::Secret,
                "first",
                &[("URL", "first"), ("ONLY", "1")],
            ),
            (EnvObjectKind::ConfigMap, "second", &[("URL", "second")]),
            (EnvObjectKind::ConfigMap, "third", &[("URL", "third")]),
        ]);
        assert_eq!(read(&c, "URL", &found).unwrap(), "third");
        assert_eq!(read(&c, "SQS_URL", &found).unwrap(), "second");
        assert_eq!(read(&c, "ONLY", &found).unwrap(), "1");
        assert!(read(&c, "SQS_ONLY", &found).is_err(), "no prefix on first");
    }

    #[test]
    fn a_missing_env_from_source_is_named_unless_optional() {
        let required = worker(json!({"envFrom": [{"configMapRef": {"name": "settings"}}]}));
        assert_eq!(
            read(&required, "URL", &EnvObjects::new())
                .unwrap_err()
                .to_string(),
            "ConfigMap team-a/settings not found"
        );
        let optional = worker(json!({"envFrom": [
            {"secretRef": {"name": "base"}},
            {"secretRef": {"name": "override", "optional": true}}
        ]}));
        let base = objects(&[(EnvObjectKind::Secret, "base", &[("URL", URL)])]);
        assert_eq!(read(&optional, "URL", &base).unwrap(), URL);
    }

    #[test]
    fn explicit_env_wins_over_env_from_and_the_last_entry_wins() {
        let c = worker(json!({
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "URL", "value": "first"},
                {"name": "URL", "value": "last"}
            ]
        }));
        let found = objects(&[(EnvObjectKind::ConfigMap, "settings", &[("URL", "from-map")])]);
        assert_eq!(read(&c, "URL", &found).unwrap(), "last");
    }

    #[test]
    fn references_expand_to_earlier_variables_as_kubernetes_does() {
        let c = worker(json!({
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [
                {"name": "ACCOUNT", "value": "123456789012"},
                {"name": "URL", "value": "https://sqs.$(REGION).amazonaws.com/$(ACCOUNT)/$(QUEUE)"},
                {"name": "QUEUE", "value": "defined-after"},
                {"name": "PRICE", "value": "$$5 $(UNDEFINED) $x $("}
            ]
        }));
        let found = objects(&[(
            EnvObjectKind::ConfigMap,
            "settings",
            &[("REGION", "eu-west-1")],
        )]);
        assert_eq!(
            read(&c, "URL", &found).unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/$(QUEUE)"
        );
        assert_eq!(read(&c, "PRICE", &found).unwrap(), "$5 $(UNDEFINED) $x $(");
    }

    #[test]
    fn values_only_the_pod_can_resolve_are_refused_not_guessed() {
        let c = worker(json!({"env": [
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
        ]}));
        assert_eq!(
            read(&c, "NODE", &EnvObjects::new()).unwrap_err(),
            EnvError::PodOnly("fieldRef")
        );
    }
}
