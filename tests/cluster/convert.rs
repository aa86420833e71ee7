//! Every Windlass object `windlass convert` produced for the golden fixtures
//! (tests/convert/*.out.yaml) is accepted by the API server: a server-side apply dry run with
//! strict field validation, so the CRDs' OpenAPI schema and CEL rules both judge it.

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

use crate::support::{FIELD_MANAGER, TestEnv, TestNamespace, install_crds};

/// The kinds of the namespaced Windlass objects; NodePools, EC2NodeClasses and
/// ClusterTriggerAuthentications are cluster-scoped.
const NAMESPACED: [&str; 3] = ["ScaledObject", "ScaledJob", "TriggerAuthentication"];

#[tokio::test]
async fn converted_manifests_are_accepted_by_the_api_server() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "convert").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert");
    let mut accepted = 0;
    let mut outputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".out.yaml"))
        .collect();
    outputs.sort();
    for path in outputs {
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let mut object: Value = serde::Deserialize::deserialize(document).unwrap();
            if object["apiVersion"] != "windlass.dev/v1alpha1" {
                continue;
            }
            let kind = object["kind"].as_str().unwrap().to_owned();
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("windlass.dev", "v1alpha1", &kind),
                &plural(&kind),
            );
            let api: Api<DynamicObject> = if NAMESPACED.contains(&kind.as_str()) {
                object["metadata"]["namespace"] = namespace.name.clone().into();
                Api::namespaced_with(env.client.clone(), &namespace.name, &resource)
            } else {
                Api::all_with(env.client.clone(), &resource)
            };
            let object: DynamicObject = serde_json::from_value(object).unwrap();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER)
                    .dry_run()
                    .validation_strict(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {kind} {name} refused: {e}", path.display()));
            accepted += 1;
        }
    }
    assert!(accepted >= 15, "only {accepted} objects applied");
    namespace.delete().await;
}

/// The resource name of a Windlass kind (`EC2NodeClass` → `ec2nodeclasses`).
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}
