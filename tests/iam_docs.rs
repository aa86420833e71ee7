//! The IAM documents agree: the CloudFormation template's controller policy is
//! docs/iam/controller-policy.json, statement for statement (the integration suite proves that
//! policy against the calls the controller makes).

use std::path::Path;

fn docs(file: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/iam")
            .join(file),
    )
    .unwrap()
}

#[test]
fn the_cloudformation_controller_policy_is_controller_policy_json() {
    let template: serde_yaml::Value = serde_yaml::from_str(&docs("cloudformation.yaml")).unwrap();
    let in_template: serde_json::Value = serde_json::to_value(
        &template["Resources"]["ControllerPolicy"]["Properties"]["PolicyDocument"],
    )
    .unwrap();
    let policy: serde_json::Value = serde_json::from_str(&docs("controller-policy.json")).unwrap();
    assert_eq!(
        in_template, policy,
        "docs/iam/cloudformation.yaml's ControllerPolicy differs from docs/iam/controller-policy.json"
    );
}
