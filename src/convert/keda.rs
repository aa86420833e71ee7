//! KEDA `keda.sh/v1alpha1` → Windlass. Windlass follows KEDA's fields, so most of a spec is
//! kept as it is; what changes is the legacy pod identity (`aws-eks`), the trigger's
//! `identityOwner` metadata, the `autoscaling.keda.sh/*` annotations, and whatever Windlass
//! does not have (other triggers, other secret stores), which is dropped with a warning.

use serde_json::{Map, Value};

use super::{Context, ConvertError, take_spec, user_metadata, windlass_object};
use crate::apis::labels::ANNOTATION_PREFIX;

const KEDA_ANNOTATION_PREFIX: &str = "autoscaling.keda.sh/";

/// The `autoscaling.keda.sh/*` annotations Windlass reads under `autoscaling.windlass.dev/`.
const ANNOTATIONS: [&str; 5] = [
    "paused",
    "paused-replicas",
    "paused-scale-in",
    "paused-scale-out",
    "force-activation",
];

/// The `aws-sqs-queue` metadata keys Windlass reads.
const SQS_METADATA: [&str; 8] = [
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsEndpoint",
    "scaleOnInFlight",
    "scaleOnDelayed",
];

/// The authentication parameters the SQS trigger reads.
const AWS_PARAMETERS: [&str; 4] = [
    "awsAccessKeyID",
    "awsSecretAccessKey",
    "awsSessionToken",
    "awsRoleArn",
];

pub(super) fn convert(
    api_version: &str,
    kind: &str,
    mut object: Value,
    ctx: &mut Context<'_>,
) -> Result<Value, ConvertError> {
    if api_version != "keda.sh/v1alpha1" {
        return Err(unknown(api_version, kind, ctx));
    }
    let metadata = metadata(&object["metadata"], ctx);
    let mut spec = take_spec(&mut object);
    match kind {
        "ScaledObject" => scaled_object(&mut spec, ctx)?,
        "ScaledJob" => scaled_job(&mut spec, ctx)?,
        "TriggerAuthentication" | "ClusterTriggerAuthentication" => {
            trigger_authentication(&mut spec, ctx)?
        }
        _ => return Err(unknown(api_version, kind, ctx)),
    }
    Ok(windlass_object(kind, metadata, spec))
}

fn unknown(api_version: &str, kind: &str, ctx: &Context<'_>) -> ConvertError {
    ConvertError::UnknownKind {
        object: ctx.object.clone(),
        api_version: api_version.into(),
        kind: kind.into(),
    }
}

/// The user's metadata with KEDA's annotations renamed to Windlass's.
fn metadata(metadata: &Value, ctx: &mut Context<'_>) -> Map<String, Value> {
    let mut kept = user_metadata(metadata);
    if let Some(Value::Object(annotations)) = kept.remove("annotations") {
        let mut renamed = Map::new();
        for (key, value) in annotations {
            match key.strip_prefix(KEDA_ANNOTATION_PREFIX) {
                Some(name) if ANNOTATIONS.contains(&name) => {
                    renamed.insert(format!("{ANNOTATION_PREFIX}{name}"), value);
                }
                Some(_) => ctx.dropped(format!("metadata.annotations.{key}")),
                None if key.contains("keda.sh/") => {
                    ctx.dropped(format!("metadata.annotations.{key}"))
                }
                None => {
                    renamed.insert(key, value);
                }
            }
        }
        if !renamed.is_empty() {
            kept.insert("annotations".into(), Value::Object(renamed));
        }
    }
    kept
}

fn scaled_object(spec: &mut Map<String, Value>, ctx: &mut Context<'_>) -> Result<(), ConvertError> {
    ctx.keep_known(
        spec,
        "spec",
        &[
            "scaleTargetRef",
            "pollingInterval",
            "cooldownPeriod",
            "initialCooldownPeriod",
            "idleReplicaCount",
            "minReplicaCount",
            "maxReplicaCount",
            "fallback",
            "advanced",
            "triggers",
        ],
    );
    ctx.keep_known_in(
        spec,
        "scaleTargetRef",
        "spec",
        &["apiVersion", "kind", "name", "envSourceContainerName"],
    );
    ctx.keep_known_in(
        spec,
        "fallback",
        "spec",
        &["failureThreshold", "replicas", "behavior"],
    );
    ctx.keep_known_in(
        spec,
        "advanced",
        "spec",
        &[
            "restoreToOriginalReplicaCount",
            "horizontalPodAutoscalerConfig",
            "scalingModifiers",
        ],
    );
    if let Some(Value::Object(advanced)) = spec.get_mut("advanced") {
        ctx.keep_known_in(
            advanced,
            "horizontalPodAutoscalerConfig",
            "spec.advanced",
            &["name", "behavior"],
        );
        ctx.keep_known_in(
            advanced,
            "scalingModifiers",
            "spec.advanced",
            &["formula", "target", "activationTarget", "metricType"],
        );
    }
    triggers(spec, ctx)
}

fn scaled_job(spec: &mut Map<String, Value>, ctx: &mut Context<'_>) -> Result<(), ConvertError> {
    // KEDA's deprecated top-level rolloutStrategy is rollout.strategy.
    if let Some(strategy) = spec.remove("rolloutStrategy") {
        let rollout = spec
            .entry("rollout")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(rollout) = rollout {
            rollout.entry("strategy").or_insert(strategy);
        }
    }
    ctx.keep_known(
        spec,
        "spec",
        &[
            "jobTargetRef",
            "pollingInterval",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
            "envSourceContainerName",
            "minReplicaCount",
            "maxReplicaCount",
            "rollout",
            "scalingStrategy",
            "triggers",
        ],
    );
    ctx.keep_known_in(spec, "rollout", "spec", &["strategy", "propagationPolicy"]);
    ctx.keep_known_in(
        spec,
        "scalingStrategy",
        "spec",
        &[
            "strategy",
            "customScalingQueueLengthDeduction",
            "customScalingRunningJobPercentage",
            "pendingPodConditions",
            "multipleScalersCalculation",
        ],
    );
    // KEDA reads the percentage as a string; YAML written as a number means the same.
    if let Some(Value::Object(strategy)) = spec.get_mut("scalingStrategy")
        && let Some(percentage @ Value::Number(_)) =
            strategy.get_mut("customScalingRunningJobPercentage")
    {
        *percentage = Value::String(percentage.to_string());
    }
    triggers(spec, ctx)
}

fn triggers(spec: &mut Map<String, Value>, ctx: &mut Context<'_>) -> Result<(), ConvertError> {
    let Some(Value::Array(triggers)) = spec.get_mut("triggers") else {
        return Err(ctx.unconvertible("spec.triggers", "a list of triggers is required"));
    };
    for (index, trigger) in triggers.iter_mut().enumerate() {
        let path = format!("spec.triggers[{index}]");
        let Value::Object(trigger) = trigger else {
            return Err(ctx.unconvertible(path, "a trigger must be an object"));
        };
        let trigger_type = trigger.get("type").and_then(Value::as_str).unwrap_or("");
        if trigger_type != "aws-sqs-queue" {
            return Err(ConvertError::UnsupportedTrigger {
                object: ctx.object.clone(),
                index,
                trigger_type: trigger_type.to_owned(),
            });
        }
        ctx.keep_known(
            trigger,
            &path,
            &[
                "type",
                "name",
                "metadata",
                "authenticationRef",
                "metricType",
                "useCachedMetrics",
            ],
        );
        ctx.keep_known_in(trigger, "authenticationRef", &path, &["name", "kind"]);
        sqs_metadata(trigger, &path, ctx)?;
    }
    Ok(())
}

/// The trigger's metadata as Windlass reads it. KEDA's legacy `identityOwner` chose whose
/// credentials the trigger used: `pod` (the default) those its TriggerAuthentication gives,
/// `operator` KEDA's own, ignoring the authentication. In Windlass, no `authenticationRef`
/// means the controller's own identity, so `operator` becomes that.
fn sqs_metadata(
    trigger: &mut Map<String, Value>,
    path: &str,
    ctx: &mut Context<'_>,
) -> Result<(), ConvertError> {
    let Some(Value::Object(metadata)) = trigger.get_mut("metadata") else {
        return Ok(());
    };
    // Values written as YAML numbers or booleans (as some KEDA examples do) are strings to KEDA.
    for value in metadata.values_mut() {
        if let Value::Number(_) | Value::Bool(_) = value {
            *value = Value::String(value.to_string());
        }
    }
    let identity_owner = metadata.remove("identityOwner");
    ctx.keep_known(metadata, &format!("{path}.metadata"), &SQS_METADATA);
    match identity_owner.as_ref().and_then(Value::as_str) {
        None | Some("pod") => {}
        Some("operator") => {
            trigger.remove("authenticationRef");
        }
        Some(other) => {
            return Err(ctx.unconvertible(
                format!("{path}.metadata.identityOwner"),
                format!("{other:?} is neither pod nor operator"),
            ));
        }
    }
    Ok(())
}

/// TriggerAuthentication and ClusterTriggerAuthentication. KEDA's removed `aws-eks` provider
/// used the scale target's IRSA role: Windlass's `aws` with `identityOwner: workload`. `aws-kiam`
/// gave the workload a role through kiam's metadata proxy, which Windlass cannot ask: such an
/// object is refused, since dropping it would silently use the controller's identity.
fn trigger_authentication(
    spec: &mut Map<String, Value>,
    ctx: &mut Context<'_>,
) -> Result<(), ConvertError> {
    ctx.keep_known(spec, "spec", &["podIdentity", "secretTargetRef", "env"]);
    if let Some(Value::Object(identity)) = spec.get_mut("podIdentity") {
        ctx.keep_known(
            identity,
            "spec.podIdentity",
            &["provider", "roleArn", "identityOwner"],
        );
        let provider = identity
            .get("provider")
            .and_then(Value::as_str)
            .unwrap_or("none")
            .to_owned();
        match provider.as_str() {
            "none" | "aws" => {}
            "aws-eks" => {
                identity.insert("provider".into(), "aws".into());
                identity.insert("identityOwner".into(), "workload".into());
            }
            "aws-kiam" => {
                return Err(ctx.unconvertible(
                    "spec.podIdentity.provider",
                    "aws-kiam has no Windlass equivalent (KEDA removed it too): use provider aws with roleArn, or identityOwner workload",
                ));
            }
            other => {
                return Err(ctx.unconvertible(
                    "spec.podIdentity.provider",
                    format!("{other} has no Windlass equivalent: only AWS identities reach SQS"),
                ));
            }
        }
    }
    for list in ["secretTargetRef", "env"] {
        let Some(Value::Array(entries)) = spec.get_mut(list) else {
            continue;
        };
        let known: &[&str] = if list == "env" {
            &["parameter", "name", "containerName"]
        } else {
            &["parameter", "name", "key"]
        };
        let mut kept = Vec::new();
        for (index, mut entry) in std::mem::take(entries).into_iter().enumerate() {
            let path = format!("spec.{list}[{index}]");
            let parameter = entry["parameter"].as_str().unwrap_or("");
            if !AWS_PARAMETERS.contains(&parameter) {
                ctx.warn(
                    path,
                    format!("parameter {parameter:?} is not one the SQS trigger reads; dropped"),
                );
                continue;
            }
            if let Value::Object(map) = &mut entry {
                ctx.keep_known(map, &path, known);
            }
            kept.push(entry);
        }
        if kept.is_empty() {
            spec.remove(list);
        } else {
            spec.insert(list.into(), Value::Array(kept));
        }
    }
    Ok(())
}
