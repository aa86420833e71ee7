//! Status writes and condition queries shared by every controller: status is written with
//! server-side apply under one field manager, never read-modify-write. The one exception is
//! status shared by installs, where each install applies its own part under its own manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The field manager of every status write: status has one writer.
pub const FIELD_MANAGER: &str = "windlass";

/// Server-side applies `status` as the object's status. With `resource_version`, the write
/// fails with 409 Conflict if the object changed since that version was read.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    resource_version: Option<&str>,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_status_as(api, name, status, resource_version, FIELD_MANAGER).await
}

/// [`apply_status`] under `manager`: for status that several installs share, each owning the
/// part it writes (see `TriggerAuthenticationStatus::users`).
pub async fn apply_status_as<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
    resource_version: Option<&str>,
    manager: &str,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let mut patch =
        json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    if let Some(version) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// Whether the condition `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn only_a_true_condition_of_that_type_counts() {
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.into(),
            status: status.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            message: String::new(),
            reason: "Test".into(),
            observed_generation: None,
        };
        let conditions = [condition("Ready", "False"), condition("Active", "True")];
        assert!(is_true(&conditions, "Active"));
        assert!(!is_true(&conditions, "Ready"));
        assert!(!is_true(&conditions, "Paused"));
    }
}
