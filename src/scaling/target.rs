//! The workload a ScaledObject scales: any kind with a `/scale` subresource, found through
//! discovery, read and written through that subresource. Its pod spec feeds `...FromEnv`
//! trigger metadata (`container_env`) and authentication.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::apis::scaled_object::ScaleTargetRef;

#[derive(Clone, Debug, thiserror::Error)]
pub enum TargetError {
    #[error("scaleTargetRef {kind}: {message}")]
    Unknown { kind: String, message: String },
    #[error("scaleTargetRef {kind} has no /scale subresource")]
    NotScalable { kind: String },
    #[error("scaleTargetRef {kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{what} of {kind} {name:?}: {message}")]
    Api {
        what: &'static str,
        kind: String,
        name: String,
        message: String,
    },
}

impl TargetError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            TargetError::Unknown { .. } | TargetError::NotScalable { .. } => "target_kind",
            TargetError::NotFound { .. } => "target_not_found",
            TargetError::Api { .. } => "target_api",
        }
    }
}

pub struct ScaleTarget {
    api: Api<DynamicObject>,
    kind: String,
    name: String,
}

impl ScaleTarget {
    pub async fn resolve(
        client: &Client,
        namespace: &str,
        target: &ScaleTargetRef,
    ) -> Result<Self, TargetError> {
        let (group, version) = target
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", target.api_version.as_str()));
        let kind = format!("{}.{}", target.api_version, target.kind);
        let gvk = GroupVersionKind::gvk(group, version, &target.kind);
        let (resource, capabilities) =
            discovery::pinned_kind(client, &gvk)
                .await
                .map_err(|e| TargetError::Unknown {
                    kind: kind.clone(),
                    message: e.to_string(),
                })?;
        if !capabilities
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "scale")
        {
            return Err(TargetError::NotScalable { kind });
        }
        Ok(Self {
            api: Api::namespaced_with(client.clone(), namespace, &resource),
            kind,
            name: target.name.clone(),
        })
    }

    /// The kind, as `apps/v1.Deployment`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// `spec.replicas` from the `/scale` subresource.
    pub async fn replicas(&self) -> Result<i32, TargetError> {
        let scale = self
            .api
            .get_scale(&self.name)
            .await
            .map_err(|e| self.error("reading /scale", e))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    pub async fn scale(&self, replicas: i32) -> Result<(), TargetError> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        self.api
            .patch_scale(&self.name, &PatchParams::default(), &patch)
            .await
            .map_err(|e| self.error("writing /scale", e))?;
        Ok(())
    }

    /// The pod spec of the target's template (`spec.template.spec`).
    pub async fn pod_spec(&self) -> Result<Value, TargetError> {
        Ok(self
            .template_field("/spec/template/spec")
            .await?
            .unwrap_or_default())
    }

    /// The target's pod template (`spec.template`) as it is now, if it has one that reads as
    /// one: what its pods look like.
    pub async fn pod_template(&self) -> Result<Option<PodTemplateSpec>, TargetError> {
        Ok(self
            .template_field("/spec/template")
            .await?
            .and_then(|template| serde_json::from_value(template).ok()))
    }

    /// The field at `pointer` of the target as it is now.
    async fn template_field(&self, pointer: &str) -> Result<Option<Value>, TargetError> {
        let object = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| self.error("reading", e))?;
        Ok(object.data.pointer(pointer).cloned())
    }

    /// The target as messages name it: `apps/v1.Deployment "worker"`.
    pub fn describe(&self) -> String {
        format!("{} {:?}", self.kind, self.name)
    }

    fn error(&self, what: &'static str, error: kube::Error) -> TargetError {
        match error {
            kube::Error::Api(status) if status.code == 404 => TargetError::NotFound {
                kind: self.kind.clone(),
                name: self.name.clone(),
            },
            other => TargetError::Api {
                what,
                kind: self.kind.clone(),
                name: self.name.clone(),
                message: other.to_string(),
            },
        }
    }
}

/// The ServiceAccount a pod spec runs as.
pub fn service_account(pod_spec: &Value) -> String {
    pod_spec["serviceAccountName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_run_as_the_default_service_account_unless_named() {
        assert_eq!(
            service_account(&json!({"serviceAccountName": "worker"})),
            "worker"
        );
        assert_eq!(service_account(&json!({})), "default");
    }
}
