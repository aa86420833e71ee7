//! The shipped examples and manifests in KEDA's and Karpenter's published shapes load into the
//! Windlass types without losing a field, and carry the documented defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use windlass::apis::ec2_node_class::{EC2NodeClass, HttpTokens, Toggle};
use windlass::apis::job_schedule::JobSchedule;
use windlass::apis::node_claim::NodeClaim;
use windlass::apis::node_pool::{ConsolidationPolicy, NodePool, RequirementOperator};
use windlass::apis::scaled_job::{JobScalingStrategy, MultipleScalersCalculation, ScaledJob};
use windlass::apis::scaled_object::{FallbackBehavior, ScaledObject};
use windlass::apis::trigger_auth::{
    ClusterTriggerAuthentication, IdentityOwner, PodIdentityProvider, TriggerAuthentication,
};
use windlass::apis::triggers::{AuthenticationKind, AwsSqsQueueTrigger, QueueSource};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every YAML document in a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of `kind` in a file, with its apiVersion set to ours.
fn ported(path: &str, kind: &str) -> Value {
    let mut doc = documents(&repo_path(path))
        .into_iter()
        .find(|doc| doc["kind"] == kind)
        .unwrap_or_else(|| panic!("{path} has no {kind}"));
    doc["apiVersion"] = Value::from("windlass.dev/v1alpha1");
    doc
}

/// Loads `doc` as `K`, and checks that serializing it again keeps every field `doc` had and that
/// the result loads to the same value.
fn load<K: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(doc: &Value) -> K {
    let typed: K =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]));
    let again = serde_json::to_value(&typed).unwrap();
    assert_contains(doc, &again, String::new());
    assert_eq!(serde_json::from_value::<K>(again).unwrap(), typed);
    typed
}

/// Every leaf of `expected` is in `actual` with the same value (a YAML number may come back as
/// the quantity string it denotes).
fn assert_contains(expected: &Value, actual: &Value, at: String) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let path = format!("{at}.{key}");
                let found = got
                    .get(key)
                    .unwrap_or_else(|| panic!("field {path} was dropped"));
                assert_contains(value, found, path);
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            assert_eq!(want.len(), got.len(), "list {at} changed length");
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                assert_contains(w, g, format!("{at}[{i}]"));
            }
        }
        (Value::Number(n), Value::String(s)) => assert_eq!(n.to_string(), *s, "{at}"),
        _ => assert_eq!(expected, actual, "{at}"),
    }
}

fn sqs(trigger: &windlass::apis::triggers::Trigger) -> AwsSqsQueueTrigger {
    AwsSqsQueueTrigger::from_metadata(&trigger.metadata).unwrap()
}

#[test]
fn examples_cover_every_kind_and_round_trip() {
    let mut kinds = BTreeSet::new();
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        for doc in documents(&path) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "ScaledObject" => drop(load::<ScaledObject>(&doc)),
                "ScaledJob" => drop(load::<ScaledJob>(&doc)),
                "TriggerAuthentication" => drop(load::<TriggerAuthentication>(&doc)),
                "ClusterTriggerAuthentication" => drop(load::<ClusterTriggerAuthentication>(&doc)),
                "NodePool" => drop(load::<NodePool>(&doc)),
                "EC2NodeClass" => drop(load::<EC2NodeClass>(&doc)),
                "NodeClaim" => drop(load::<NodeClaim>(&doc)),
                "JobSchedule" => drop(load::<JobSchedule>(&doc)),
                _ => continue,
            }
            kinds.insert(kind);
        }
    }
    let all: BTreeSet<String> = windlass::apis::all_crds()
        .into_iter()
        .map(|crd| crd.spec.names.kind)
        .collect();
    assert_eq!(kinds, all, "every kind has an example");
}

#[test]
fn scaled_object_example_has_keda_defaults() {
    let so: ScaledObject = load(&ported("examples/scaledobject-sqs.yaml", "ScaledObject"));
    assert_eq!(so.spec.scale_target_ref.api_version, "apps/v1");
    assert_eq!(so.spec.scale_target_ref.kind, "Deployment");
    assert_eq!(so.spec.initial_cooldown_period, 0);
    assert_eq!(so.spec.idle_replica_count, None);
    assert_eq!(
        so.spec.fallback.as_ref().unwrap().behavior,
        FallbackBehavior::Static
    );
    let trigger = sqs(&so.spec.triggers[0]);
    assert_eq!(trigger.queue, QueueSource::FromEnv("QUEUE_URL".into()));
    assert_eq!(trigger.activation_queue_length, 0);
    assert!(trigger.scale_on_in_flight);
    assert!(!trigger.scale_on_delayed);
    assert_eq!(
        so.spec.triggers[0]
            .authentication_ref
            .as_ref()
            .unwrap()
            .kind,
        AuthenticationKind::TriggerAuthentication
    );
}

#[test]
fn minimal_scaled_object_gets_every_default() {
    let so: ScaledObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "m"},
        "spec": {"scaleTargetRef": {"name": "web"}, "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]}
    }))
    .unwrap();
    assert_eq!(
        (
            so.spec.polling_interval,
            so.spec.cooldown_period,
            so.spec.min_replica_count,
            so.spec.max_replica_count
        ),
        (30, 300, 0, 100)
    );
    assert_eq!(sqs(&so.spec.triggers[0]).queue_length, 5);
}

#[test]
fn scaled_job_example_has_keda_defaults() {
    let sj: ScaledJob = load(&ported(
        "examples/scaledjob-data-processor.yaml",
        "ScaledJob",
    ));
    assert_eq!(sj.spec.min_replica_count, 0);
    assert_eq!(sj.spec.max_replica_count, 10);
    assert_eq!(sj.spec.job_target_ref.backoff_limit, Some(2));
    assert_eq!(
        sj.spec.scaling_strategy.strategy,
        JobScalingStrategy::Default
    );
    assert_eq!(
        sj.spec.scaling_strategy.multiple_scalers_calculation,
        MultipleScalersCalculation::Max
    );
    assert_eq!(sqs(&sj.spec.triggers[0]).queue_length, 1);
    let minimal: ScaledJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "m"},
        "spec": {"jobTargetRef": {"template": {}}, "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": "u"}}]}
    }))
    .unwrap();
    assert_eq!(
        (
            minimal.spec.polling_interval,
            minimal.spec.successful_jobs_history_limit,
            minimal.spec.failed_jobs_history_limit,
            minimal.spec.max_replica_count
        ),
        (30, 100, 100, 100)
    );
}

#[test]
fn node_examples_have_karpenter_defaults() {
    let pool: NodePool = load(&ported("examples/nodepool.yaml", "NodePool"));
    assert_eq!(pool.spec.limits["cpu"].0, "4");
    assert_eq!(pool.spec.limits["memory"].0, "8Gi");
    assert_eq!(pool.spec.disruption.budgets.len(), 1);
    assert_eq!(pool.spec.disruption.budgets[0].nodes, "10%");
    assert_eq!(pool.spec.weight, None);
    let class: EC2NodeClass = load(&ported("examples/ec2nodeclass.yaml", "EC2NodeClass"));
    assert_eq!(class.spec.metadata_options.http_endpoint, Toggle::Enabled);
    assert_eq!(
        class.spec.metadata_options.http_protocol_ipv6,
        Toggle::Disabled
    );
    assert_eq!(class.spec.metadata_options.http_put_response_hop_limit, 1);
    assert_eq!(
        class.spec.metadata_options.http_tokens,
        HttpTokens::Required
    );
    let claim: NodeClaim = load(&ported("examples/nodeclaim.yaml", "NodeClaim"));
    assert_eq!(claim.spec.expire_after, "720h");
}

#[test]
fn auth_and_schedule_examples_have_defaults() {
    let auth: TriggerAuthentication = load(&ported(
        "examples/triggerauthentication.yaml",
        "TriggerAuthentication",
    ));
    let identity = auth.spec.pod_identity.unwrap();
    assert_eq!(identity.provider, PodIdentityProvider::Aws);
    assert_eq!(identity.identity_owner, IdentityOwner::Keda);
    let schedule: JobSchedule = load(&ported("examples/jobschedule.yaml", "JobSchedule"));
    assert!(!schedule.spec.suspend);
    assert_eq!(schedule.spec.time_zone, "Europe/Berlin");
    let minimal: JobSchedule = serde_json::from_value(serde_json::json!({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "JobSchedule", "metadata": {"name": "m"},
        "spec": {"schedule": "*/5 * * * *", "scaledJob": "data-processor"}
    }))
    .unwrap();
    assert_eq!(minimal.spec.time_zone, "UTC");
    assert_eq!(minimal.spec.starting_deadline_seconds, None);
}

#[test]
fn keda_manifests_load_after_changing_only_api_version() {
    let so: ScaledObject = load(&ported(
        "tests/fixtures/upstream/keda-scaledobject.yaml",
        "ScaledObject",
    ));
    assert_eq!(
        so.spec.fallback.unwrap().behavior,
        FallbackBehavior::CurrentReplicasIfHigher
    );
    assert_eq!(sqs(&so.spec.triggers[0]).activation_queue_length, 2);
    let sj: ScaledJob = load(&ported(
        "tests/fixtures/upstream/keda-scaledjob.yaml",
        "ScaledJob",
    ));
    assert_eq!(
        sj.spec.scaling_strategy.strategy,
        JobScalingStrategy::Custom
    );
    assert_eq!(
        sj.spec.triggers[0]
            .authentication_ref
            .as_ref()
            .unwrap()
            .kind,
        AuthenticationKind::ClusterTriggerAuthentication
    );
    let auth: TriggerAuthentication = load(&ported(
        "tests/fixtures/upstream/keda-triggerauthentication.yaml",
        "TriggerAuthentication",
    ));
    assert_eq!(
        auth.spec.pod_identity.unwrap().identity_owner,
        IdentityOwner::Workload
    );
    assert_eq!(auth.spec.secret_target_ref.len(), 2);
}

#[test]
fn karpenter_manifests_load_after_changing_only_api_version() {
    let pool: NodePool = load(&ported(
        "tests/fixtures/upstream/karpenter-nodepool.yaml",
        "NodePool",
    ));
    assert_eq!(pool.spec.limits["cpu"].0, "1000");
    assert_eq!(pool.spec.weight, Some(10));
    assert_eq!(
        pool.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(pool.spec.disruption.budgets.len(), 3);
    assert_eq!(
        pool.spec.template.spec.requirements[1].operator,
        RequirementOperator::Gt
    );
    assert_eq!(pool.spec.template.spec.requirements[0].min_values, Some(2));
    let class: EC2NodeClass = load(&ported(
        "tests/fixtures/upstream/karpenter-ec2nodeclass.yaml",
        "EC2NodeClass",
    ));
    assert_eq!(class.spec.kubelet.unwrap().max_pods, Some(20));
    assert_eq!(class.spec.ami_selector_terms.len(), 3);
}
