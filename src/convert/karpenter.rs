//! Karpenter → Windlass: `karpenter.sh` NodePool (`v1`, `v1beta1`) and Provisioner (`v1alpha5`),
//! `karpenter.k8s.aws` EC2NodeClass (`v1`, `v1beta1`) and AWSNodeTemplate (`v1alpha1`), with
//! the renames of Karpenter's own upgrade guides and the defaults the old versions applied
//! (a Provisioner's default requirements, no expiry, no emptiness; IMDS hop limit 2), so a
//! converted object keeps its meaning. Label keys stay as written: Windlass reads Karpenter's.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Context, ConvertError, Warning, take_spec, user_metadata, windlass_object};
use crate::apis::labels;
use crate::apis::node_pool::LIMITABLE;

pub(super) struct Output {
    pub objects: Vec<Value>,
    pub kubelet: Option<KubeletClaim>,
}

/// Kubelet settings an older NodePool or Provisioner carried, which belong on its EC2NodeClass
/// in Windlass (as in Karpenter v1).
pub(super) struct KubeletClaim {
    node_pool: String,
    object: String,
    path: String,
    node_class: String,
    kubelet: Value,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V1beta1,
}

pub(super) fn convert(
    api_version: &str,
    kind: &str,
    mut object: Value,
    ctx: &mut Context<'_>,
) -> Result<Output, ConvertError> {
    let metadata = metadata(&object["metadata"], ctx);
    let spec = take_spec(&mut object);
    let single = |object| Output {
        objects: vec![object],
        kubelet: None,
    };
    match (api_version, kind) {
        ("karpenter.sh/v1", "NodePool") => node_pool(metadata, spec, Version::V1, ctx),
        ("karpenter.sh/v1beta1", "NodePool") => node_pool(metadata, spec, Version::V1beta1, ctx),
        ("karpenter.sh/v1alpha5", "Provisioner") => provisioner(metadata, spec, ctx),
        ("karpenter.k8s.aws/v1", "EC2NodeClass") => {
            node_class(metadata, spec, Version::V1, ctx).map(single)
        }
        ("karpenter.k8s.aws/v1beta1", "EC2NodeClass") => {
            node_class(metadata, spec, Version::V1beta1, ctx).map(single)
        }
        ("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate") => {
            node_template(metadata, spec, "spec", ctx).map(single)
        }
        _ => Err(ConvertError::UnknownKind {
            object: ctx.object.clone(),
            api_version: api_version.into(),
            kind: kind.into(),
        }),
    }
}

/// The user's metadata without a namespace (these kinds are cluster-scoped) and without
/// Karpenter's own annotations (hashes, compatibility notes), which mean nothing to Windlass.
fn metadata(metadata: &Value, ctx: &mut Context<'_>) -> Map<String, Value> {
    let mut kept = user_metadata(metadata);
    kept.remove("namespace");
    if let Some(Value::Object(annotations)) = kept.get_mut("annotations") {
        let peer: Vec<String> = annotations
            .keys()
            .filter(|key| key.contains("karpenter.sh/") || key.contains("karpenter.k8s.aws/"))
            .cloned()
            .collect();
        for key in peer {
            annotations.remove(&key);
            ctx.dropped(format!("metadata.annotations.{key}"));
        }
        if annotations.is_empty() {
            kept.remove("annotations");
        }
    }
    kept
}

fn name(metadata: &Map<String, Value>) -> String {
    metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn node_pool(
    metadata: Map<String, Value>,
    mut spec: Map<String, Value>,
    version: Version,
    ctx: &mut Context<'_>,
) -> Result<Output, ConvertError> {
    ctx.keep_known(
        &mut spec,
        "spec",
        &["template", "disruption", "limits", "weight"],
    );
    let Some(Value::Object(template)) = spec.get_mut("template") else {
        return Err(ctx.unconvertible("spec.template", "a NodePool needs a template"));
    };
    ctx.keep_known(template, "spec.template", &["metadata", "spec"]);
    template_metadata(template, "spec.template.metadata", ctx);
    let Some(Value::Object(template_spec)) = template.get_mut("spec") else {
        return Err(ctx.unconvertible("spec.template.spec", "a NodePool needs a template spec"));
    };
    let known: &[&str] = match version {
        Version::V1 => &[
            "requirements",
            "nodeClassRef",
            "taints",
            "startupTaints",
            "expireAfter",
            "terminationGracePeriod",
        ],
        Version::V1beta1 => &[
            "requirements",
            "nodeClassRef",
            "taints",
            "startupTaints",
            "kubelet",
        ],
    };
    ctx.keep_known(template_spec, "spec.template.spec", known);
    requirements(template_spec, "spec.template.spec.requirements", ctx);
    let node_class = node_class_ref(template_spec, version, ctx)?;
    let kubelet = template_spec.remove("kubelet").map(|kubelet| KubeletClaim {
        node_pool: name(&metadata),
        object: ctx.object.clone(),
        path: "spec.template.spec.kubelet".into(),
        node_class,
        kubelet: kubelet_settings(kubelet, "spec.template.spec.kubelet", ctx),
    });
    if let Some(Value::Object(disruption)) = spec.get_mut("disruption") {
        let expire_after = disruption_settings(disruption, version, ctx);
        if let (Some(expire_after), Some(Value::Object(template_spec))) = (
            expire_after,
            spec.get_mut("template").and_then(|t| t.get_mut("spec")),
        ) {
            template_spec.insert("expireAfter".into(), expire_after);
        }
    }
    limits(&mut spec, "spec.limits", ctx);
    Ok(Output {
        objects: vec![windlass_object("NodePool", metadata, spec)],
        kubelet,
    })
}

/// Keeps the disruption fields Windlass has; returns a v1beta1 `expireAfter`, which moves to the
/// template in v1.
fn disruption_settings(
    disruption: &mut Map<String, Value>,
    version: Version,
    ctx: &mut Context<'_>,
) -> Option<Value> {
    let expire_after = match version {
        Version::V1 => None,
        Version::V1beta1 => disruption.remove("expireAfter"),
    };
    ctx.keep_known(
        disruption,
        "spec.disruption",
        &["consolidationPolicy", "consolidateAfter", "budgets"],
    );
    if disruption
        .get("consolidationPolicy")
        .and_then(Value::as_str)
        == Some("WhenUnderutilized")
    {
        disruption.insert(
            "consolidationPolicy".into(),
            "WhenEmptyOrUnderutilized".into(),
        );
    }
    if let Some(Value::Array(budgets)) = disruption.get_mut("budgets") {
        for (index, budget) in budgets.iter_mut().enumerate() {
            if let Value::Object(budget) = budget {
                ctx.keep_known(
                    budget,
                    &format!("spec.disruption.budgets[{index}]"),
                    &["nodes", "schedule", "duration", "reasons"],
                );
            }
        }
    }
    expire_after
}

/// `nodeClassRef` in Windlass's shape; returns the class's name.
fn node_class_ref(
    template_spec: &mut Map<String, Value>,
    version: Version,
    ctx: &mut Context<'_>,
) -> Result<String, ConvertError> {
    let path = "spec.template.spec.nodeClassRef";
    let Some(Value::Object(reference)) = template_spec.get_mut("nodeClassRef") else {
        return Err(ctx.unconvertible(path, "a NodePool needs a nodeClassRef"));
    };
    let known: &[&str] = match version {
        Version::V1 => &["group", "kind", "name"],
        Version::V1beta1 => &["apiVersion", "kind", "name"],
    };
    ctx.keep_known(reference, path, known);
    let kind = reference
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("EC2NodeClass");
    if kind != "EC2NodeClass" {
        return Err(ctx.unconvertible(
            format!("{path}.kind"),
            format!("{kind} is not an EC2NodeClass"),
        ));
    }
    let Some(name) = reference.get("name").and_then(Value::as_str) else {
        return Err(ctx.unconvertible(format!("{path}.name"), "the class's name is required"));
    };
    let name = name.to_owned();
    template_spec.insert("nodeClassRef".into(), class_reference(&name));
    Ok(name)
}

fn class_reference(name: &str) -> Value {
    json!({"group": "windlass.dev", "kind": "EC2NodeClass", "name": name})
}

/// The template's labels and annotations, without the labels Windlass or the kubelet set.
fn template_metadata(template: &mut Map<String, Value>, path: &str, ctx: &mut Context<'_>) {
    let Some(Value::Object(metadata)) = template.get_mut("metadata") else {
        return;
    };
    ctx.keep_known(metadata, path, &["labels", "annotations"]);
    if let Some(Value::Object(labels)) = metadata.get_mut("labels") {
        for key in [
            labels::NODEPOOL_LABEL,
            "karpenter.sh/nodepool",
            labels::HOSTNAME_LABEL,
        ] {
            if labels.remove(key).is_some() {
                ctx.warn(
                    format!("{path}.labels.{key}"),
                    "is set by Windlass; dropped",
                );
            }
        }
    }
}

/// The `karpenter.k8s.aws/` label keys Windlass puts on its nodes, so a requirement can use them.
fn known_aws_label(key: &str) -> bool {
    [
        labels::INSTANCE_CATEGORY_LABEL,
        labels::INSTANCE_GENERATION_LABEL,
        labels::INSTANCE_SIZE_LABEL,
        labels::INSTANCE_GPU_COUNT_LABEL,
        labels::INSTANCE_GPU_NAME_LABEL,
        labels::INSTANCE_GPU_MANUFACTURER_LABEL,
        labels::INSTANCE_GPU_MEMORY_LABEL,
        labels::INSTANCE_LOCAL_NVME_LABEL,
        labels::INSTANCE_NETWORK_BANDWIDTH_LABEL,
        labels::INSTANCE_HYPERVISOR_LABEL,
        labels::INSTANCE_ENCRYPTION_IN_TRANSIT_LABEL,
    ]
    .contains(&key)
        || labels::KARPENTER_ALIASES
            .iter()
            .any(|(_, alias)| *alias == key)
}

/// Keeps the requirements Windlass can honour. A requirement on a label Windlass does not set
/// (or sets itself) could never match, so it is dropped with a warning.
fn requirements(spec: &mut Map<String, Value>, path: &str, ctx: &mut Context<'_>) {
    let Some(Value::Array(requirements)) = spec.get_mut("requirements") else {
        return;
    };
    let mut kept = Vec::new();
    for (index, mut requirement) in std::mem::take(requirements).into_iter().enumerate() {
        let path = format!("{path}[{index}]");
        let key = requirement["key"].as_str().unwrap_or_default().to_owned();
        let settable = if let Some(rest) = key.strip_prefix("karpenter.sh/") {
            rest == "capacity-type"
        } else if key.starts_with("karpenter.k8s.aws/") {
            known_aws_label(&key)
        } else {
            key != labels::HOSTNAME_LABEL && key != labels::NODEPOOL_LABEL
        };
        if !settable {
            ctx.warn(
                path,
                format!("requires label {key}, which Windlass does not set on nodes; dropped"),
            );
            continue;
        }
        if let Value::Object(map) = &mut requirement {
            ctx.keep_known(map, &path, &["key", "operator", "values", "minValues"]);
            if let Some(Value::Array(values)) = map.get_mut("values") {
                stringify_all(values.iter_mut());
            }
        }
        kept.push(requirement);
    }
    *requirements = kept;
}

/// Numbers and booleans written where Kubernetes wants strings (`values: [2]`, `cpu: 1000`).
fn stringify_all<'a>(values: impl Iterator<Item = &'a mut Value>) {
    for value in values {
        if let Value::Number(_) | Value::Bool(_) = value {
            *value = Value::String(value.to_string());
        }
    }
}

/// Keeps the limits Windlass counts.
fn limits(spec: &mut Map<String, Value>, path: &str, ctx: &mut Context<'_>) {
    let Some(Value::Object(limits)) = spec.get_mut("limits") else {
        return;
    };
    ctx.keep_known(limits, path, &LIMITABLE);
    stringify_all(limits.values_mut());
    if limits.is_empty() {
        spec.remove("limits");
    }
}

/// A Provisioner becomes a NodePool, and its inline `provider` an EC2NodeClass named after it.
fn provisioner(
    metadata: Map<String, Value>,
    mut spec: Map<String, Value>,
    ctx: &mut Context<'_>,
) -> Result<Output, ConvertError> {
    let pool_name = name(&metadata);
    ctx.keep_known(
        &mut spec,
        "spec",
        &[
            "labels",
            "annotations",
            "taints",
            "startupTaints",
            "requirements",
            "kubeletConfiguration",
            "provider",
            "providerRef",
            "ttlSecondsAfterEmpty",
            "ttlSecondsUntilExpired",
            "limits",
            "weight",
            "consolidation",
        ],
    );
    let mut objects = Vec::new();
    let class_name = match (spec.remove("provider"), spec.remove("providerRef")) {
        (Some(_), Some(_)) => {
            return Err(ctx.unconvertible(
                "spec.provider",
                "provider and providerRef exclude each other",
            ));
        }
        (Some(Value::Object(provider)), None) => {
            let mut class_metadata = Map::new();
            class_metadata.insert("name".into(), pool_name.clone().into());
            objects.push(node_template(
                class_metadata,
                provider,
                "spec.provider",
                ctx,
            )?);
            pool_name.clone()
        }
        (None, Some(Value::Object(mut reference))) => {
            ctx.keep_known(
                &mut reference,
                "spec.providerRef",
                &["apiVersion", "kind", "name"],
            );
            let kind = reference
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("AWSNodeTemplate");
            if kind != "AWSNodeTemplate" {
                return Err(ctx.unconvertible(
                    "spec.providerRef.kind",
                    format!("{kind} is not an AWSNodeTemplate"),
                ));
            }
            match reference.get("name").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => return Err(ctx.unconvertible("spec.providerRef.name", "is required")),
            }
        }
        _ => {
            return Err(ctx.unconvertible(
                "spec",
                "a Provisioner needs provider or providerRef to say where its nodes' AWS settings come from",
            ));
        }
    };

    let mut template_metadata_map = Map::new();
    for key in ["labels", "annotations"] {
        if let Some(value) = spec.remove(key) {
            template_metadata_map.insert(key.into(), value);
        }
    }
    let mut template = Map::new();
    if !template_metadata_map.is_empty() {
        template.insert("metadata".into(), Value::Object(template_metadata_map));
        template_metadata(&mut template, "spec", ctx);
    }

    let mut template_spec = Map::new();
    for key in ["taints", "startupTaints", "requirements"] {
        if let Some(value) = spec.remove(key) {
            template_spec.insert(key.into(), value);
        }
    }
    requirements(&mut template_spec, "spec.requirements", ctx);
    add_provisioner_default_requirements(&mut template_spec);
    template_spec.insert("nodeClassRef".into(), class_reference(&class_name));
    // Without ttlSecondsUntilExpired a Provisioner's nodes never expired.
    let expire_after = match spec.remove("ttlSecondsUntilExpired") {
        Some(seconds) => duration(&seconds, "spec.ttlSecondsUntilExpired", ctx)?,
        None => "Never".into(),
    };
    template_spec.insert("expireAfter".into(), expire_after.into());
    template.insert("spec".into(), Value::Object(template_spec));

    let consolidation = spec
        .remove("consolidation")
        .is_some_and(|c| c["enabled"].as_bool() == Some(true));
    let disruption = match (spec.remove("ttlSecondsAfterEmpty"), consolidation) {
        (Some(_), true) => {
            return Err(ctx.unconvertible(
                "spec.ttlSecondsAfterEmpty",
                "ttlSecondsAfterEmpty and consolidation.enabled exclude each other",
            ));
        }
        (Some(seconds), false) => json!({
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": duration(&seconds, "spec.ttlSecondsAfterEmpty", ctx)?,
        }),
        (None, true) => json!({
            "consolidationPolicy": "WhenEmptyOrUnderutilized",
            "consolidateAfter": "0s",
        }),
        // Neither: the Provisioner never removed a node for being empty or underused.
        (None, false) => json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never"}),
    };

    let kubelet = spec
        .remove("kubeletConfiguration")
        .map(|kubelet| KubeletClaim {
            node_pool: pool_name.clone(),
            object: ctx.object.clone(),
            path: "spec.kubeletConfiguration".into(),
            node_class: class_name.clone(),
            kubelet: kubelet_settings(kubelet, "spec.kubeletConfiguration", ctx),
        });

    let mut pool_spec = Map::new();
    pool_spec.insert("template".into(), Value::Object(template));
    pool_spec.insert("disruption".into(), disruption);
    if let Some(Value::Object(mut limits_block)) = spec.remove("limits") {
        ctx.keep_known(&mut limits_block, "spec.limits", &["resources"]);
        if let Some(resources) = limits_block.remove("resources") {
            pool_spec.insert("limits".into(), resources);
            limits(&mut pool_spec, "spec.limits.resources", ctx);
        }
    }
    if let Some(weight) = spec.remove("weight") {
        pool_spec.insert("weight".into(), weight);
    }
    objects.insert(0, windlass_object("NodePool", metadata, pool_spec));
    Ok(Output { objects, kubelet })
}

/// The requirements the AWS provider's webhook added to a Provisioner that had none on these
/// keys (Karpenter v1beta1 stopped adding them, so a converted pool must say them).
fn add_provisioner_default_requirements(spec: &mut Map<String, Value>) {
    let requirements = spec
        .entry("requirements")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(requirements) = requirements else {
        return;
    };
    let has = |requirements: &[Value], key: &str| {
        requirements.iter().any(|r| r["key"].as_str() == Some(key))
    };
    let mut defaults = Vec::new();
    if !has(requirements, labels::OS_LABEL) {
        defaults.push(json!({"key": labels::OS_LABEL, "operator": "In", "values": ["linux"]}));
    }
    if !has(requirements, labels::ARCH_LABEL) {
        defaults.push(json!({"key": labels::ARCH_LABEL, "operator": "In", "values": ["amd64"]}));
    }
    if !has(requirements, "karpenter.sh/capacity-type") {
        defaults.push(
            json!({"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}),
        );
    }
    let instance_type_keys = [
        labels::INSTANCE_TYPE_LABEL,
        "karpenter.k8s.aws/instance-family",
        labels::INSTANCE_CATEGORY_LABEL,
        labels::INSTANCE_GENERATION_LABEL,
    ];
    if !instance_type_keys.iter().any(|key| has(requirements, key)) {
        defaults.push(json!({"key": labels::INSTANCE_CATEGORY_LABEL, "operator": "In", "values": ["c", "m", "r"]}));
        defaults.push(
            json!({"key": labels::INSTANCE_GENERATION_LABEL, "operator": "Gt", "values": ["2"]}),
        );
    }
    requirements.extend(defaults);
}

/// Seconds as a Go-style duration: `2592000` → `720h`, `90` → `1m30s`.
fn duration(seconds: &Value, path: &str, ctx: &Context<'_>) -> Result<String, ConvertError> {
    let Some(seconds) = seconds.as_u64() else {
        return Err(ctx.unconvertible(path, format!("{seconds} is not a number of seconds")));
    };
    let (hours, minutes, rest) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut text = String::new();
    for (amount, unit) in [(hours, "h"), (minutes, "m"), (rest, "s")] {
        if amount > 0 {
            text.push_str(&format!("{amount}{unit}"));
        }
    }
    Ok(if text.is_empty() { "0s".into() } else { text })
}

/// The kubelet fields Windlass writes into the bootstrap.
fn kubelet_settings(mut kubelet: Value, path: &str, ctx: &mut Context<'_>) -> Value {
    if let Value::Object(map) = &mut kubelet {
        ctx.keep_known(
            map,
            path,
            &[
                "maxPods",
                "podsPerCore",
                "systemReserved",
                "kubeReserved",
                "evictionHard",
                "evictionSoft",
                "evictionSoftGracePeriod",
                "evictionMaxPodGracePeriod",
                "imageGCHighThresholdPercent",
                "imageGCLowThresholdPercent",
                "cpuCFSQuota",
                "clusterDNS",
            ],
        );
        for key in ["systemReserved", "kubeReserved"] {
            if let Some(Value::Object(reserved)) = map.get_mut(key) {
                stringify_all(reserved.values_mut());
            }
        }
    }
    kubelet
}

const NODE_CLASS_FIELDS: [&str; 14] = [
    "subnetSelectorTerms",
    "securityGroupSelectorTerms",
    "amiSelectorTerms",
    "amiFamily",
    "userData",
    "role",
    "instanceProfile",
    "tags",
    "kubelet",
    "blockDeviceMappings",
    "instanceStorePolicy",
    "detailedMonitoring",
    "associatePublicIPAddress",
    "metadataOptions",
];

fn node_class(
    metadata: Map<String, Value>,
    mut spec: Map<String, Value>,
    version: Version,
    ctx: &mut Context<'_>,
) -> Result<Value, ConvertError> {
    ctx.keep_known(&mut spec, "spec", &NODE_CLASS_FIELDS);
    for (field, known) in [
        ("subnetSelectorTerms", &["tags", "id"][..]),
        ("securityGroupSelectorTerms", &["tags", "id", "name"][..]),
        (
            "amiSelectorTerms",
            &["alias", "tags", "id", "name", "owner", "ssmParameter"][..],
        ),
    ] {
        if let Some(Value::Array(terms)) = spec.get_mut(field) {
            for (index, term) in terms.iter_mut().enumerate() {
                if let Value::Object(term) = term {
                    ctx.keep_known(term, &format!("spec.{field}[{index}]"), known);
                }
            }
        }
    }
    if let Some(kubelet) = spec.remove("kubelet") {
        spec.insert(
            "kubelet".into(),
            kubelet_settings(kubelet, "spec.kubelet", ctx),
        );
    }
    let has_terms = matches!(spec.get("amiSelectorTerms"), Some(Value::Array(t)) if !t.is_empty());
    if version == Version::V1beta1 && !has_terms {
        // v1beta1 chose the family's latest image when no term was given; v1 says so with an alias.
        let family = spec.get("amiFamily").and_then(Value::as_str).unwrap_or("");
        spec.insert(
            "amiSelectorTerms".into(),
            json!([{"alias": latest_alias(family, ctx)?}]),
        );
    }
    if let Some(Value::Array(terms)) = spec.get("amiSelectorTerms") {
        for (index, term) in terms.iter().enumerate() {
            if let Some(alias) = term["alias"].as_str()
                && !["al2@", "al2023@", "bottlerocket@"]
                    .iter()
                    .any(|f| alias.starts_with(f))
            {
                return Err(ctx.unconvertible(
                    format!("spec.amiSelectorTerms[{index}].alias"),
                    format!("{alias}: Windlass bootstraps AL2, AL2023 and Bottlerocket only"),
                ));
            }
        }
    }
    ami_family(&mut spec, has_terms, ctx)?;
    block_device_mappings(&mut spec, ctx);
    metadata_options(&mut spec, version != Version::V1, ctx);
    Ok(windlass_object("EC2NodeClass", metadata, spec))
}

fn latest_alias(family: &str, ctx: &Context<'_>) -> Result<String, ConvertError> {
    match family {
        "AL2" => Ok("al2@latest".into()),
        "AL2023" => Ok("al2023@latest".into()),
        "Bottlerocket" => Ok("bottlerocket@latest".into()),
        other => Err(ctx.unconvertible(
            "spec.amiFamily",
            format!("{other:?} has no image Windlass can find by itself: select the images with amiSelectorTerms"),
        )),
    }
}

/// Windlass's families are AL2, AL2023, Bottlerocket and Custom. Ubuntu's user data is AL2's
/// (Karpenter v1's own conversion does the same), so with selected images it becomes AL2;
/// Windows has no Windlass bootstrap.
fn ami_family(
    spec: &mut Map<String, Value>,
    has_terms: bool,
    ctx: &mut Context<'_>,
) -> Result<(), ConvertError> {
    let Some(family) = spec.get("amiFamily").and_then(Value::as_str) else {
        return Ok(());
    };
    match family {
        "AL2" | "AL2023" | "Bottlerocket" | "Custom" => Ok(()),
        "Ubuntu" if has_terms => {
            ctx.warn(
                "spec.amiFamily",
                "Ubuntu is bootstrapped as AL2 (same user data format); changed to AL2",
            );
            spec.insert("amiFamily".into(), "AL2".into());
            Ok(())
        }
        other => Err(ctx.unconvertible(
            "spec.amiFamily",
            format!("{other} has no Windlass bootstrap"),
        )),
    }
}

fn block_device_mappings(spec: &mut Map<String, Value>, ctx: &mut Context<'_>) {
    let Some(Value::Array(mappings)) = spec.get_mut("blockDeviceMappings") else {
        return;
    };
    for (index, mapping) in mappings.iter_mut().enumerate() {
        let path = format!("spec.blockDeviceMappings[{index}]");
        let Value::Object(mapping) = mapping else {
            continue;
        };
        ctx.keep_known(mapping, &path, &["deviceName", "ebs", "rootVolume"]);
        if let Some(Value::Object(ebs)) = mapping.get_mut("ebs") {
            ctx.keep_known(
                ebs,
                &format!("{path}.ebs"),
                &[
                    "deleteOnTermination",
                    "encrypted",
                    "iops",
                    "kmsKeyID",
                    "snapshotID",
                    "throughput",
                    "volumeSize",
                    "volumeType",
                ],
            );
        }
    }
}

/// Before v1, Karpenter's IMDS hop limit defaulted to 2 (pods could reach IMDS); Windlass's,
/// like Karpenter v1's, is 1, so an older class that did not set it gets 2 written out.
fn metadata_options(spec: &mut Map<String, Value>, before_v1: bool, ctx: &mut Context<'_>) {
    let options = match spec.get_mut("metadataOptions") {
        Some(Value::Object(options)) => options,
        _ if before_v1 => {
            spec.insert(
                "metadataOptions".into(),
                json!({"httpPutResponseHopLimit": 2}),
            );
            return;
        }
        _ => return,
    };
    ctx.keep_known(
        options,
        "spec.metadataOptions",
        &[
            "httpEndpoint",
            "httpProtocolIPv6",
            "httpPutResponseHopLimit",
            "httpTokens",
        ],
    );
    if before_v1 {
        options
            .entry("httpPutResponseHopLimit")
            .or_insert_with(|| 2.into());
    }
}

/// An AWSNodeTemplate, or a Provisioner's inline `provider` (found at `path`), as an
/// EC2NodeClass.
fn node_template(
    metadata: Map<String, Value>,
    mut template: Map<String, Value>,
    path: &str,
    ctx: &mut Context<'_>,
) -> Result<Value, ConvertError> {
    ctx.keep_known(
        &mut template,
        path,
        &[
            "subnetSelector",
            "securityGroupSelector",
            "instanceProfile",
            "amiFamily",
            "amiSelector",
            "userData",
            "tags",
            "metadataOptions",
            "blockDeviceMappings",
            "detailedMonitoring",
        ],
    );
    let mut spec = Map::new();
    let subnets = selector_terms(
        template.remove("subnetSelector"),
        &format!("{path}.subnetSelector"),
        ctx,
    )?;
    spec.insert("subnetSelectorTerms".into(), subnets);
    let groups = selector_terms(
        template.remove("securityGroupSelector"),
        &format!("{path}.securityGroupSelector"),
        ctx,
    )?;
    spec.insert("securityGroupSelectorTerms".into(), groups);
    let family = template
        .remove("amiFamily")
        .and_then(|f| f.as_str().map(str::to_owned))
        // v1alpha1 defaulted the family to AL2.
        .unwrap_or_else(|| "AL2".into());
    let ami_terms = match template.remove("amiSelector") {
        Some(Value::Object(selector)) => {
            ami_selector_terms(selector, &format!("{path}.amiSelector"), ctx)?
        }
        _ => json!([{"alias": latest_alias(&family, ctx)?}]),
    };
    let has_terms = ami_terms[0].get("alias").is_none();
    spec.insert("amiSelectorTerms".into(), ami_terms);
    spec.insert("amiFamily".into(), family.into());
    ami_family(&mut spec, has_terms, ctx)?;
    match template.remove("instanceProfile") {
        Some(profile) => {
            spec.insert("instanceProfile".into(), profile);
        }
        None => {
            return Err(ctx.unconvertible(
                format!("{path}.instanceProfile"),
                "is unset, so Karpenter took it from its global settings, which are not in the manifest: set instanceProfile (or convert, then set role)",
            ));
        }
    }
    for key in [
        "userData",
        "tags",
        "metadataOptions",
        "blockDeviceMappings",
        "detailedMonitoring",
    ] {
        if let Some(value) = template.remove(key) {
            spec.insert(key.into(), value);
        }
    }
    block_device_mappings(&mut spec, ctx);
    metadata_options(&mut spec, true, ctx);
    Ok(windlass_object("EC2NodeClass", metadata, spec))
}

/// The id keys of v1alpha1 selectors (Karpenter accepted both spellings).
fn selector_ids(selector: &mut Map<String, Value>) -> Option<Vec<String>> {
    let ids = selector
        .remove("aws::ids")
        .or_else(|| selector.remove("aws-ids"))?;
    Some(comma_list(&ids))
}

fn comma_list(value: &Value) -> Vec<String> {
    value
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A v1alpha1 subnet or security group selector (a map of tags, values comma-separated
/// alternatives, or `aws::ids`) as selector terms: one per id, or one per combination of
/// tag values, as Karpenter's v1beta1 upgrade guide prescribes.
fn selector_terms(
    selector: Option<Value>,
    path: &str,
    ctx: &mut Context<'_>,
) -> Result<Value, ConvertError> {
    let Some(Value::Object(mut selector)) = selector else {
        return Err(ctx.unconvertible(path, "is required"));
    };
    if let Some(ids) = selector_ids(&mut selector) {
        if !selector.is_empty() {
            ctx.warn(path, "selects by ids and tags; Windlass selects by one or the other, so the tags are dropped");
        }
        return Ok(Value::Array(
            ids.into_iter().map(|id| json!({"id": id})).collect(),
        ));
    }
    let tags: BTreeMap<String, Value> = selector.into_iter().collect();
    Ok(Value::Array(
        tag_combinations(&tags)
            .into_iter()
            .map(|tags| json!({"tags": tags}))
            .collect(),
    ))
}

/// Every combination of the tags' comma-separated alternative values.
fn tag_combinations(tags: &BTreeMap<String, Value>) -> Vec<Map<String, Value>> {
    let mut combinations = vec![Map::new()];
    for (key, value) in tags {
        let alternatives = match value.as_str() {
            Some(text) if text.contains(',') => comma_list(value),
            _ => vec![value.as_str().unwrap_or_default().to_owned()],
        };
        combinations = combinations
            .into_iter()
            .flat_map(|combination| {
                alternatives.iter().map(move |alternative| {
                    let mut next = combination.clone();
                    next.insert(key.clone(), alternative.clone().into());
                    next
                })
            })
            .collect();
    }
    combinations
}

/// A v1alpha1 `amiSelector` (`aws::ids`, `aws::name` and `aws::owners`, tags) as terms.
fn ami_selector_terms(
    mut selector: Map<String, Value>,
    path: &str,
    ctx: &mut Context<'_>,
) -> Result<Value, ConvertError> {
    if let Some(ids) = selector_ids(&mut selector) {
        if !selector.is_empty() {
            ctx.warn(path, "selects by ids and other filters; Windlass takes the ids alone, the other filters are dropped");
        }
        return Ok(Value::Array(
            ids.into_iter().map(|id| json!({"id": id})).collect(),
        ));
    }
    let names = selector.remove("aws::name").map(|n| comma_list(&n));
    let owners = selector.remove("aws::owners").map(|o| comma_list(&o));
    let tags: BTreeMap<String, Value> = selector.into_iter().collect();
    let mut bases: Vec<Map<String, Value>> = match names {
        Some(names) => names
            .into_iter()
            .map(|name| {
                let mut term = Map::new();
                term.insert("name".into(), name.into());
                term
            })
            .collect(),
        None => vec![Map::new()],
    };
    if !tags.is_empty() {
        bases = bases
            .into_iter()
            .flat_map(|base| {
                tag_combinations(&tags).into_iter().map(move |tags| {
                    let mut term = base.clone();
                    term.insert("tags".into(), Value::Object(tags));
                    term
                })
            })
            .collect();
    }
    if let Some(owners) = owners {
        bases = bases
            .into_iter()
            .flat_map(|base| {
                owners.iter().map(move |owner| {
                    let mut term = base.clone();
                    term.insert("owner".into(), owner.clone().into());
                    term
                })
            })
            .collect();
    }
    if bases
        .iter()
        .all(|term| !term.contains_key("name") && !term.contains_key("tags"))
    {
        return Err(ctx.unconvertible(path, "selects no image by id, name or tags"));
    }
    Ok(Value::Array(bases.into_iter().map(Value::Object).collect()))
}

/// Puts the kubelet settings of older NodePools and Provisioners on their EC2NodeClasses. When
/// the pools of one class disagree, each pool with settings gets its own copy of the class
/// (`<class>-<pool>`), as Karpenter's v1 migration guide advises.
pub(super) fn place_kubelets(
    objects: &mut Vec<Value>,
    claims: Vec<KubeletClaim>,
    warnings: &mut Vec<Warning>,
) {
    let mut by_class: BTreeMap<String, Vec<KubeletClaim>> = BTreeMap::new();
    for claim in claims {
        by_class
            .entry(claim.node_class.clone())
            .or_default()
            .push(claim);
    }
    for (class, claims) in by_class {
        let Some(class_index) = objects.iter().position(|o| is_node_class(o, &class)) else {
            for claim in claims {
                warnings.push(Warning {
                    object: claim.object,
                    path: claim.path,
                    reason: format!(
                        "belongs on EC2NodeClass {class}, which is not in the input; dropped (set it there as spec.kubelet)"
                    ),
                });
            }
            continue;
        };
        let own = objects[class_index]["spec"].get("kubelet").cloned();
        let agreed = claims.iter().all(|c| c.kubelet == claims[0].kubelet)
            && own.as_ref().is_none_or(|own| *own == claims[0].kubelet);
        if agreed {
            objects[class_index]["spec"]["kubelet"] = claims[0].kubelet.clone();
            continue;
        }
        let mut copies = Vec::new();
        for claim in claims {
            let copy_name = format!("{class}-{}", claim.node_pool);
            let mut copy = objects[class_index].clone();
            copy["metadata"] = json!({"name": copy_name});
            copy["spec"]["kubelet"] = claim.kubelet;
            copies.push(copy);
            if let Some(pool) = objects
                .iter_mut()
                .find(|o| is_node_pool(o, &claim.node_pool))
            {
                pool["spec"]["template"]["spec"]["nodeClassRef"] = class_reference(&copy_name);
            }
            warnings.push(Warning {
                object: claim.object,
                path: claim.path,
                reason: format!(
                    "differs from other users of EC2NodeClass {class}; moved to a copy of it, EC2NodeClass {copy_name}"
                ),
            });
        }
        let at = class_index + 1;
        objects.splice(at..at, copies);
    }
}

fn is_node_class(object: &Value, name: &str) -> bool {
    object["apiVersion"] == super::WINDLASS_API_VERSION
        && object["kind"] == "EC2NodeClass"
        && object["metadata"]["name"] == name
}

fn is_node_pool(object: &Value, name: &str) -> bool {
    object["apiVersion"] == super::WINDLASS_API_VERSION
        && object["kind"] == "NodePool"
        && object["metadata"]["name"] == name
}
