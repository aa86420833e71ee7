//! After the integration suite: what the controller used, against what the install grants it.
//! The suite runs every controller as the chart's ServiceAccount with a recording AWS SDK
//! interceptor; the API server's audit log and the interceptor's record are compared here with
//! the chart's RBAC and `docs/iam/controller-policy.json`. `hack/test.sh` runs this right after
//! the suite, on the same stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The suite's release (tests/cluster/release.rs): its ServiceAccount and RBAC objects.
const RELEASE: &str = "windlass";
const RELEASE_NAMESPACE: &str = "windlass";

/// Granted rules no test exercises, each with why it stays.
const UNUSED_RULES_KEPT: &[(&str, &str, &str, &str)] = &[
    ("apps", "statefulsets", "get", STATEFULSET_TARGET),
    ("apps", "statefulsets/scale", "get", STATEFULSET_TARGET),
    ("apps", "statefulsets/scale", "patch", STATEFULSET_TARGET),
];

/// Granted rules whose use depends on timing: a run may or may not exercise them, so neither
/// their use nor their absence fails the check.
const RULES_USED_UNDER_LOAD: &[(&str, &str, &str, &str)] =
    &[("batch", "jobs", "get", JOB_STORE_LAG)];

const JOB_STORE_LAG: &str = "a ScaledJob poll looks up a Job it created only when the Jobs \
    watch has not shown it for 10 s, which in the suite happens only under load";

const STATEFULSET_TARGET: &str = "a ScaledObject may target a StatefulSet, through the same \
    /scale code as a Deployment; the suite's ScaledObjects all target Deployments";

fn recorded_file(var: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run this after the integration suite, through hack/test.sh")
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{var}={path} cannot be read ({e}): did the suite run?"));
    assert!(
        !text.trim().is_empty(),
        "{path} is empty: did the suite run?"
    );
    text
}

fn kubectl_json(args: &[&str]) -> Value {
    let output = Command::new("kubectl")
        .args(args)
        .args(["-o", "json"])
        .output()
        .expect("kubectl on PATH");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A permission as RBAC spells it: API group ("" for core), resource[/subresource], verb; a
/// rule with resourceNames grants `resource[name]` for each name.
type Permission = (String, String, String);

/// The namespace outside the release's where the chart grants something: kube-system, for the
/// kube-dns Service's address.
const DNS_NAMESPACE: &str = "kube-system";

fn granted(role: &Value) -> BTreeSet<Permission> {
    let mut permissions = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "this check does not know rule {rule}"
        );
        let names = rule.get("resourceNames").map(|_| strings("resourceNames"));
        for group in strings("apiGroups") {
            let resources = strings("resources")
                .into_iter()
                .flat_map(|resource| match &names {
                    Some(names) => names.iter().map(|n| format!("{resource}[{n}]")).collect(),
                    None => vec![resource],
                });
            for resource in resources {
                for verb in strings("verbs") {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "wildcard in {rule}"
                    );
                    permissions.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    permissions
}

#[test]
fn every_rbac_rule_the_chart_grants_was_used_and_nothing_was_forbidden() {
    let audit = recorded_file("WINDLASS_AUDIT_LOG");
    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{RELEASE}");
    // Cluster-wide uses, and uses in the release's namespace (where the Role applies).
    let mut used: BTreeSet<Permission> = BTreeSet::new();
    let mut used_in_release_namespace: BTreeSet<Permission> = BTreeSet::new();
    let mut used_in_dns_namespace: BTreeSet<Permission> = BTreeSet::new();
    let mut forbidden: BTreeMap<String, usize> = BTreeMap::new();
    for line in audit.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["user"]["username"] != user.as_str() {
            continue;
        }
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            continue;
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let permission = (
            object["apiGroup"].as_str().unwrap_or("").to_owned(),
            resource,
            event["verb"].as_str().unwrap().to_owned(),
        );
        if event["annotations"]["authorization.k8s.io/decision"] == "forbid" {
            *forbidden
                .entry(format!("{permission:?} in {}", object["namespace"]))
                .or_default() += 1;
            continue;
        }
        if object["namespace"] == RELEASE_NAMESPACE {
            used_in_release_namespace.insert(permission.clone());
        }
        if object["namespace"] == DNS_NAMESPACE
            && let Some(name) = object["name"].as_str()
        {
            let (group, resource, verb) = permission.clone();
            used_in_dns_namespace.insert((group, format!("{resource}[{name}]"), verb));
        }
        used.insert(permission);
    }
    assert!(
        !used.is_empty(),
        "the audit log holds no request by {user}: did the suite run as the chart's ServiceAccount?"
    );
    assert!(
        forbidden.is_empty(),
        "the chart's RBAC refused the controller (a rule is missing): {forbidden:#?}"
    );

    let cluster_role = granted(&kubectl_json(&["get", "clusterrole", RELEASE]));
    let role = granted(&kubectl_json(&[
        "get",
        "role",
        RELEASE,
        "-n",
        RELEASE_NAMESPACE,
    ]));
    let dns_role = granted(&kubectl_json(&[
        "get",
        "role",
        &format!("{RELEASE}-dns"),
        "-n",
        DNS_NAMESPACE,
    ]));
    let permissions = |rules: &[(&str, &str, &str, &str)]| -> BTreeSet<Permission> {
        rules
            .iter()
            .map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string()))
            .collect()
    };
    let kept = permissions(UNUSED_RULES_KEPT);
    let under_load = permissions(RULES_USED_UNDER_LOAD);
    let unused: Vec<_> = cluster_role
        .difference(&used)
        .chain(role.difference(&used_in_release_namespace))
        .chain(dns_role.difference(&used_in_dns_namespace))
        .filter(|p| !kept.contains(*p) && !under_load.contains(*p))
        .collect();
    assert!(
        unused.is_empty(),
        "granted but never used by the suite (drop them, or keep them in UNUSED_RULES_KEPT with why): {unused:#?}"
    );
    let stale: Vec<_> = kept
        .iter()
        .filter(|p| used.contains(*p) || !(cluster_role.contains(*p) || role.contains(*p)))
        .collect();
    assert!(
        stale.is_empty(),
        "UNUSED_RULES_KEPT lists rules that are used or not granted: {stale:?}"
    );
}

fn policy_actions(policy: &Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|statement| match &statement["Action"] {
            Value::String(action) => vec![action.clone()],
            Value::Array(actions) => actions
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
            other => panic!("Action {other} is neither a string nor a list"),
        })
        .collect()
}

fn note_keys(notes: &Value, section: &str) -> BTreeSet<String> {
    notes[section]
        .as_object()
        .unwrap_or_else(|| panic!("controller-policy-notes.json has no {section}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_aws_action_called_is_granted_and_every_grant_was_called_or_says_why() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/iam");
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(docs.join(file)).unwrap()).unwrap()
    };
    let policy = policy_actions(&read("controller-policy.json"));
    let notes = read("controller-policy-notes.json");
    let granted_not_called = note_keys(&notes, "grantedNotCalled");
    let called_outside_record = note_keys(&notes, "calledOutsideTheRecord");
    let called_not_granted = note_keys(&notes, "calledNotGranted");
    let called: BTreeSet<String> = recorded_file("WINDLASS_AWS_CALL_LOG")
        .lines()
        .map(str::to_owned)
        .collect();

    let missing: Vec<_> = called
        .iter()
        .filter(|a| !policy.contains(*a) && !called_not_granted.contains(*a))
        .collect();
    assert!(
        missing.is_empty(),
        "called but not in docs/iam/controller-policy.json: {missing:?}"
    );
    let unexplained: Vec<_> = policy
        .iter()
        .filter(|a| {
            !called.contains(*a)
                && !granted_not_called.contains(*a)
                && !called_outside_record.contains(*a)
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "granted but never called by the suite, and not explained in controller-policy-notes.json: {unexplained:?}"
    );
    for action in granted_not_called.iter().chain(&called_outside_record) {
        assert!(
            policy.contains(action) && !called.contains(action),
            "controller-policy-notes.json explains {action}, which is not granted or was called"
        );
    }
    for action in &called_not_granted {
        assert!(
            !policy.contains(action),
            "controller-policy-notes.json says {action} is not granted, but it is"
        );
    }
}
