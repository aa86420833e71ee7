//! Where a pod's volumes can be reached from, without I/O: the node requirements its
//! PersistentVolumeClaims impose, as Karpenter reads them. A bound claim's PersistentVolume
//! names its nodes in `spec.nodeAffinity` (its terms are alternatives); an unbound claim whose
//! StorageClass waits for the first consumer is provisioned where the pod lands, within the
//! class's `allowedTopologies`. Zone keys a volume may use for the zone are read as
//! `topology.kubernetes.io/zone`; region keys narrow nothing (every node launched is in the one
//! region); any other key stays as written, so a node a NodePool cannot label with it (a local
//! volume's hostname, say) is not planned for the pod.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim, Pod, Volume,
};
use k8s_openapi::api::storage::v1::StorageClass;

use super::pod::{PodShape, PodShapeError, parse_operator};
use super::requirements::{Requirement, Requirements};
use crate::apis::labels::{
    DEFAULT_STORAGE_CLASS_ANNOTATIONS, VOLUME_REGION_KEYS, VOLUME_ZONE_ALIASES, ZONE_LABEL,
};

/// The volume binding mode under which a claim is provisioned where its first pod lands.
const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// Reads PersistentVolumeClaims, PersistentVolumes and StorageClasses as the cluster has them
/// (the reflector stores in the controller, plain lists in tests).
pub trait StorageObjects {
    fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    fn storage_classes(&self) -> Vec<Arc<StorageClass>>;
}

/// A volume of the pod whose topology cannot be known, so the pod is not planned (the
/// kube-scheduler does not place it either).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("PersistentVolumeClaim {claim} does not exist")]
    ClaimMissing { claim: String },
    #[error("PersistentVolumeClaim {claim} of ephemeral volume {volume} is not created yet")]
    EphemeralClaimMissing { claim: String, volume: String },
    #[error("PersistentVolumeClaim {claim} is being deleted")]
    ClaimDeleting { claim: String },
    #[error("PersistentVolume {volume} of PersistentVolumeClaim {claim} does not exist")]
    VolumeMissing { claim: String, volume: String },
    #[error("StorageClass {class} of PersistentVolumeClaim {claim} does not exist")]
    ClassMissing { claim: String, class: String },
    /// Unbound, and bound by the PersistentVolume controller rather than where the pod lands:
    /// its zone is known only once it is bound.
    #[error(
        "PersistentVolumeClaim {claim} is not bound yet and {} binds immediately",
        .class.as_deref().map_or("with no StorageClass it".to_owned(), |c| format!("its StorageClass {c}"))
    )]
    UnboundImmediate {
        claim: String,
        class: Option<String>,
    },
    /// Two of its volumes can be reached from no one node.
    #[error("its volumes can be reached from no one node: they disagree on {key}")]
    NoCommonNode { key: String },
    #[error("PersistentVolume {volume}: node affinity operator {operator:?} is not known")]
    Operator { volume: String, operator: String },
}

/// The node requirements the pod's volumes impose, as alternatives (a node must satisfy one),
/// or `None` when they impose none. A generic ephemeral volume's claim (`<pod>-<volume>`) is
/// read only for a pod not yet on a node: moved elsewhere, the pod is made anew with a claim
/// of its own, as Karpenter reasons.
pub fn volume_requirements(
    pod: &Pod,
    storage: &impl StorageObjects,
) -> Result<Option<Vec<Requirements>>, VolumeError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let on_node = spec.node_name.is_some();
    let mut combined: Option<Vec<Requirements>> = None;
    for volume in spec.volumes.iter().flatten() {
        let Some(alternatives) =
            volume_alternatives(volume, namespace, pod_name, on_node, storage)?
        else {
            continue;
        };
        combined = Some(match combined {
            None => alternatives,
            Some(so_far) => satisfiable(and(&so_far, &alternatives))
                .map_err(|key| VolumeError::NoCommonNode { key })?,
        });
    }
    Ok(combined)
}

/// The pod as the simulation places it: its own constraints, narrowed to where its volumes
/// can be reached.
pub fn placement_shape(
    pod: &Pod,
    storage: &impl StorageObjects,
) -> Result<PodShape, PodShapeError> {
    let shape = PodShape::from_pod(pod)?;
    match volume_requirements(pod, storage)? {
        Some(volumes) => shape.within_volume_topology(&volumes),
        None => Ok(shape),
    }
}

/// The alternatives some node may satisfy, or, when none is left, a key on which they conflict.
pub(super) fn satisfiable(alternatives: Vec<Requirements>) -> Result<Vec<Requirements>, String> {
    let conflict = |alternative: &Requirements| {
        alternative
            .iter()
            .find(|(_, requirement)| requirement.is_unsatisfiable())
            .map(|(key, _)| key.clone())
    };
    let first_conflict = alternatives.first().and_then(conflict);
    let kept: Vec<Requirements> = alternatives
        .into_iter()
        .filter(|alternative| conflict(alternative).is_none())
        .collect();
    if kept.is_empty() {
        return Err(first_conflict.unwrap_or_default());
    }
    Ok(kept)
}

/// Every alternative of `left` with every alternative of `right`.
pub(super) fn and(left: &[Requirements], right: &[Requirements]) -> Vec<Requirements> {
    left.iter()
        .flat_map(|l| {
            right.iter().map(move |r| {
                let mut both = l.clone();
                for (key, requirement) in r.iter() {
                    both.add(key, requirement.clone());
                }
                both
            })
        })
        .collect()
}

fn volume_alternatives(
    volume: &Volume,
    namespace: &str,
    pod_name: &str,
    on_node: bool,
    storage: &impl StorageObjects,
) -> Result<Option<Vec<Requirements>>, VolumeError> {
    let (claim_name, ephemeral) = match (&volume.persistent_volume_claim, &volume.ephemeral) {
        (Some(source), _) => (source.claim_name.clone(), false),
        (None, Some(_)) if on_node => return Ok(None),
        (None, Some(_)) => (format!("{pod_name}-{}", volume.name), true),
        (None, None) => return Ok(None),
    };
    let claim_ref = format!("{namespace}/{claim_name}");
    let Some(claim) = storage.claim(namespace, &claim_name) else {
        return Err(if ephemeral {
            VolumeError::EphemeralClaimMissing {
                claim: claim_ref,
                volume: volume.name.clone(),
            }
        } else {
            VolumeError::ClaimMissing { claim: claim_ref }
        });
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(VolumeError::ClaimDeleting { claim: claim_ref });
    }
    let claim_spec = claim.spec.clone().unwrap_or_default();
    if let Some(bound) = claim_spec.volume_name.filter(|v| !v.is_empty()) {
        let Some(persistent_volume) = storage.volume(&bound) else {
            return Err(VolumeError::VolumeMissing {
                claim: claim_ref,
                volume: bound,
            });
        };
        return persistent_volume_alternatives(&persistent_volume, &bound);
    }
    let class = match claim_spec.storage_class_name.as_deref() {
        // Explicitly no class: only a PersistentVolume of no class may bind it, immediately.
        Some("") => None,
        Some(name) => Some(
            storage
                .storage_classes()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .ok_or_else(|| VolumeError::ClassMissing {
                    claim: claim_ref.clone(),
                    class: name.to_owned(),
                })?,
        ),
        // Kubernetes gives a claim without a class the default one.
        None => default_class(storage.storage_classes()),
    };
    let Some(class) =
        class.filter(|c| c.volume_binding_mode.as_deref() == Some(WAIT_FOR_FIRST_CONSUMER))
    else {
        return Err(VolumeError::UnboundImmediate {
            claim: claim_ref,
            class: claim_spec.storage_class_name.filter(|c| !c.is_empty()),
        });
    };
    let alternatives: Vec<Requirements> = class
        .allowed_topologies
        .iter()
        .flatten()
        .map(|term| {
            let mut requirements = Requirements::default();
            for expression in term.match_label_expressions.iter().flatten() {
                if let Some(key) = volume_key(&expression.key) {
                    requirements.add(key, Requirement::one_of(expression.values.iter().cloned()));
                }
            }
            requirements
        })
        .collect();
    Ok(narrowing(alternatives))
}

/// A PersistentVolume's node affinity: its terms are alternatives, each the AND of its
/// expressions.
fn persistent_volume_alternatives(
    volume: &PersistentVolume,
    name: &str,
) -> Result<Option<Vec<Requirements>>, VolumeError> {
    let terms = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    let mut alternatives = Vec::with_capacity(terms.len());
    for term in terms {
        let mut requirements = Requirements::default();
        for expression in term.match_expressions.iter().flatten() {
            add_expression(&mut requirements, expression, name)?;
        }
        alternatives.push(requirements);
    }
    Ok(narrowing(alternatives))
}

fn add_expression(
    requirements: &mut Requirements,
    expression: &NodeSelectorRequirement,
    volume: &str,
) -> Result<(), VolumeError> {
    let operator = parse_operator(&expression.operator).ok_or_else(|| VolumeError::Operator {
        volume: volume.to_owned(),
        operator: expression.operator.clone(),
    })?;
    if let Some(key) = volume_key(&expression.key) {
        requirements.add(
            key,
            Requirement::new(operator, expression.values.as_deref().unwrap_or_default()),
        );
    }
    Ok(())
}

/// The key the simulation reads a volume's topology key as, or `None` for a key that narrows
/// nothing.
fn volume_key(key: &str) -> Option<&str> {
    if VOLUME_ZONE_ALIASES.contains(&key) {
        Some(ZONE_LABEL)
    } else if VOLUME_REGION_KEYS.contains(&key) {
        None
    } else {
        Some(key)
    }
}

/// `None` when some alternative allows every node (or there are none): nothing is narrowed.
fn narrowing(alternatives: Vec<Requirements>) -> Option<Vec<Requirements>> {
    (!alternatives.is_empty() && !alternatives.iter().any(Requirements::is_empty))
        .then_some(alternatives)
}

/// The default StorageClass: of several, the newest, as Kubernetes picks.
pub fn default_class(classes: Vec<Arc<StorageClass>>) -> Option<Arc<StorageClass>> {
    classes
        .into_iter()
        .filter(|class| {
            let annotations = class.metadata.annotations.as_ref();
            DEFAULT_STORAGE_CLASS_ANNOTATIONS.iter().any(|key| {
                annotations
                    .and_then(|a| a.get(*key))
                    .is_some_and(|value| value == "true")
            })
        })
        .max_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
}

#[cfg(test)]
mod tests;
