//! Golden tests: each `tests/convert/<case>.yaml` converts to `<case>.out.yaml` with the
//! warnings in `<case>.warnings`, and every converted object reads as Windlass's Rust type
//! without losing a field. `WINDLASS_UPDATE_GOLDEN=1` rewrites the expected files.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_pool::NodePool;
use crate::apis::scaled_job::ScaledJob;
use crate::apis::scaled_object::ScaledObject;
use crate::apis::trigger_auth::{ClusterTriggerAuthentication, TriggerAuthentication};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert")
}

fn cases() -> Vec<PathBuf> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".out.yaml")
        })
        .collect();
    inputs.sort();
    inputs
}

fn convert_text(name: &str, text: &str) -> Result<Conversion, ConvertError> {
    convert(&[(name.to_owned(), text.to_owned())])
}

#[test]
fn golden_outputs_match() {
    let update = std::env::var_os("WINDLASS_UPDATE_GOLDEN").is_some();
    let inputs = cases();
    assert!(inputs.len() >= 6, "only {} golden cases", inputs.len());
    for input in inputs {
        let text = std::fs::read_to_string(&input).unwrap();
        let conversion = convert_text(&input.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        let warnings: String = conversion
            .warnings
            .iter()
            .map(|w| format!("{w}\n"))
            .collect();
        let output_path = input.with_extension("out.yaml");
        let warnings_path = input.with_extension("warnings");
        if update {
            std::fs::write(&output_path, &conversion.yaml).unwrap();
            std::fs::write(&warnings_path, &warnings).unwrap();
        }
        let expected = std::fs::read_to_string(&output_path).unwrap_or_else(|_| {
            panic!(
                "{} missing: run with WINDLASS_UPDATE_GOLDEN=1",
                output_path.display()
            )
        });
        assert_eq!(conversion.yaml, expected, "{}", input.display());
        assert_eq!(
            warnings,
            std::fs::read_to_string(&warnings_path).unwrap(),
            "{}",
            input.display()
        );
    }
}

/// Every field of `object` survives a round trip through `T`: the Rust type knows it.
fn assert_reads_as<T: DeserializeOwned + Serialize>(object: &Value) {
    let typed: T =
        serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{e}: {object:#}"));
    let round_trip = serde_json::to_value(typed).unwrap();
    assert_contained(object, &round_trip, "");
}

fn assert_contained(part: &Value, whole: &Value, path: &str) {
    match (part, whole) {
        (Value::Object(part), Value::Object(whole)) => {
            for (key, value) in part {
                let inner = format!("{path}.{key}");
                let other = whole
                    .get(key)
                    .unwrap_or_else(|| panic!("{inner} is not a field of the Windlass type"));
                assert_contained(value, other, &inner);
            }
        }
        (Value::Array(part), Value::Array(whole)) => {
            assert_eq!(part.len(), whole.len(), "{path}");
            for (index, (a, b)) in part.iter().zip(whole).enumerate() {
                assert_contained(a, b, &format!("{path}[{index}]"));
            }
        }
        _ => assert_eq!(part, whole, "{path}"),
    }
}

#[test]
fn every_converted_object_is_a_windlass_object() {
    let mut checked = 0;
    for input in cases() {
        let text = std::fs::read_to_string(&input).unwrap();
        let conversion = convert_text("golden", &text).unwrap();
        for document in serde_yaml::Deserializer::from_str(&conversion.yaml) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            if object["apiVersion"] != WINDLASS_API_VERSION {
                continue;
            }
            match object["kind"].as_str().unwrap() {
                "ScaledObject" => assert_reads_as::<ScaledObject>(&object),
                "ScaledJob" => assert_reads_as::<ScaledJob>(&object),
                "TriggerAuthentication" => assert_reads_as::<TriggerAuthentication>(&object),
                "ClusterTriggerAuthentication" => {
                    assert_reads_as::<ClusterTriggerAuthentication>(&object)
                }
                "NodePool" => assert_reads_as::<NodePool>(&object),
                "EC2NodeClass" => assert_reads_as::<EC2NodeClass>(&object),
                other => panic!("unexpected kind {other}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} objects checked");
}

#[test]
fn output_is_deterministic() {
    for input in cases() {
        let text = std::fs::read_to_string(&input).unwrap();
        assert_eq!(
            convert_text("a", &text).unwrap(),
            convert_text("a", &text).unwrap()
        );
    }
}

#[test]
fn unsupported_trigger_names_the_type_and_the_object() {
    let error = convert_text(
        "so.yaml",
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  scaleTargetRef: {name: web}\n  triggers:\n  - type: aws-sqs-queue\n    metadata: {queueURL: q}\n  - type: kafka\n    metadata: {topic: t}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConvertError::UnsupportedTrigger { index: 1, trigger_type, .. } if trigger_type == "kafka")
    );
    assert_eq!(
        error.to_string(),
        "ScaledObject shop/web: trigger 1 has type kafka, which Windlass does not support (only aws-sqs-queue)"
    );
}

#[test]
fn kiam_identity_is_refused() {
    let error = convert_text(
        "ta.yaml",
        "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: kiam, namespace: a}\nspec:\n  podIdentity: {provider: aws-kiam}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConvertError::Unconvertible { path, .. } if path == "spec.podIdentity.provider"),
        "{error}"
    );
    assert!(error.to_string().contains("aws-kiam"), "{error}");
}

#[test]
fn unknown_peer_kinds_and_versions_are_refused() {
    for (api_version, kind) in [
        ("keda.sh/v1alpha1", "CloudEventSource"),
        ("karpenter.sh/v1", "NodeClaim"),
        ("karpenter.sh/v1alpha5", "NodePool"),
        ("karpenter.k8s.aws/v1alpha1", "EC2NodeClass"),
    ] {
        let error = convert_text(
            "x.yaml",
            &format!(
                "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n"
            ),
        )
        .unwrap_err();
        assert!(
            matches!(error, ConvertError::UnknownKind { .. }),
            "{api_version} {kind}: {error}"
        );
    }
}

#[test]
fn invalid_yaml_names_the_source_and_document() {
    let error = convert_text(
        "bad.yaml",
        "kind: ConfigMap\napiVersion: v1\n---\nspec: [unclosed\n",
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConvertError::InvalidYaml { document: 2, .. }),
        "{error}"
    );
    assert!(
        error.to_string().starts_with("bad.yaml: document 2"),
        "{error}"
    );
}

#[test]
fn trigger_identity_owner_operator_means_the_controllers_identity() {
    let conversion = convert_text(
        "sj.yaml",
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledJob\nmetadata: {name: j, namespace: a}\nspec:\n  jobTargetRef: {template: {spec: {containers: []}}}\n  triggers:\n  - type: aws-sqs-queue\n    authenticationRef: {name: keys}\n    metadata: {queueURL: q, identityOwner: operator}\n",
    )
    .unwrap();
    let job: ScaledJob = serde_yaml::from_str(&conversion.yaml).unwrap();
    let trigger = &job.spec.triggers[0];
    assert_eq!(trigger.authentication_ref, None);
    assert!(!trigger.metadata.contains_key("identityOwner"));
    assert!(conversion.warnings.is_empty(), "{:?}", conversion.warnings);
}

#[test]
fn provisioner_without_expiry_or_emptiness_keeps_its_nodes() {
    let conversion = convert_text(
        "p.yaml",
        "apiVersion: karpenter.sh/v1alpha5\nkind: Provisioner\nmetadata: {name: p}\nspec:\n  providerRef: {name: t}\n",
    )
    .unwrap();
    let pool: NodePool = serde_yaml::from_str(&conversion.yaml).unwrap();
    assert_eq!(pool.spec.template.spec.expire_after, "Never");
    assert_eq!(pool.spec.disruption.consolidate_after, "Never");
    // The class is not in the input: nothing to warn about, the pool still names it.
    assert_eq!(pool.spec.template.spec.node_class_ref.name, "t");
}

#[test]
fn kubelet_without_its_class_in_the_input_is_a_warning() {
    let conversion = convert_text(
        "np.yaml",
        "apiVersion: karpenter.sh/v1beta1\nkind: NodePool\nmetadata: {name: p}\nspec:\n  template:\n    spec:\n      nodeClassRef: {name: elsewhere}\n      kubelet: {maxPods: 30}\n",
    )
    .unwrap();
    assert_eq!(conversion.warnings.len(), 1, "{:?}", conversion.warnings);
    assert_eq!(
        conversion.warnings[0].to_string(),
        "warning: NodePool p: spec.template.spec.kubelet belongs on EC2NodeClass elsewhere, which is not in the input; dropped (set it there as spec.kubelet)"
    );
}

#[test]
fn node_template_without_instance_profile_is_refused() {
    let error = convert_text(
        "t.yaml",
        "apiVersion: karpenter.k8s.aws/v1alpha1\nkind: AWSNodeTemplate\nmetadata: {name: t}\nspec:\n  subnetSelector: {a: b}\n  securityGroupSelector: {a: b}\n",
    )
    .unwrap_err();
    assert!(error.to_string().contains("instanceProfile"), "{error}");
}
