//! Trigger authentication: a TriggerAuthentication (or ClusterTriggerAuthentication) resolved
//! to the AWS identity a scaler uses, and that identity turned into SDK configuration.
//! Resolving is pure over the Secrets it names; reading them is the caller's one I/O step.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_sqs::config::{Credentials, Region, SharedCredentialsProvider};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::apis::trigger_auth::{
    AwsAuthParameter, ClusterTriggerAuthentication, IdentityOwner, PodIdentity,
    PodIdentityProvider, TriggerAuthentication, TriggerAuthenticationSpec,
};
use crate::apis::triggers::{AuthenticationKind, AuthenticationRef};

/// Whose credentials a scaler uses.
#[derive(Clone, PartialEq, Eq)]
pub enum AwsIdentity {
    /// The controller's own: IRSA or EKS Pod Identity on its service account, or the environment.
    Controller,
    StaticKeys {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
}

impl std::fmt::Debug for AwsIdentity {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsIdentity::Controller => f.write_str("Controller"),
            AwsIdentity::StaticKeys { access_key_id, .. } => {
                write!(f, "StaticKeys({access_key_id})")
            }
        }
    }
}

/// An identity, optionally with a role assumed on top of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAuth {
    pub identity: AwsIdentity,
    pub assume_role: Option<AssumeRole>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
}

impl ResolvedAuth {
    pub const CONTROLLER: ResolvedAuth = ResolvedAuth {
        identity: AwsIdentity::Controller,
        assume_role: None,
    };

    /// Names these credentials without revealing them; equal keys may share clients and readings.
    pub fn identity_key(&self) -> String {
        let base = match &self.identity {
            AwsIdentity::Controller => "controller".to_owned(),
            AwsIdentity::StaticKeys { access_key_id, .. } => format!("key:{access_key_id}"),
        };
        match &self.assume_role {
            Some(role) => format!(
                "{base}+role:{}+{}",
                role.role_arn,
                role.external_id.as_deref().unwrap_or("")
            ),
            None => base,
        }
    }

    /// SDK configuration for these credentials, in `region` and at `endpoint` when given.
    pub async fn sdk_config(
        &self,
        base: &SdkConfig,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> SdkConfig {
        let mut builder = base.to_builder();
        if let Some(region) = region {
            builder = builder.region(Region::new(region.to_owned()));
        }
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let AwsIdentity::StaticKeys {
            access_key_id,
            secret_access_key,
            session_token,
        } = &self.identity
        {
            let credentials = Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "windlass-trigger-authentication",
            );
            builder = builder.credentials_provider(SharedCredentialsProvider::new(credentials));
        }
        let config = builder.build();
        let Some(role) = &self.assume_role else {
            return config;
        };
        let mut provider = AssumeRoleProvider::builder(&role.role_arn)
            .session_name("windlass")
            .configure(&config);
        if let Some(external_id) = &role.external_id {
            provider = provider.external_id(external_id);
        }
        let provider = provider.build().await;
        config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build()
    }
}

/// Why a trigger's authentication could not be resolved; shown as a condition and an Event.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound { namespace: String, name: String },
    #[error("Secret {name:?} has no key {key:?} (parameter {parameter})")]
    SecretKeyMissing {
        name: String,
        key: String,
        parameter: &'static str,
    },
    #[error("{0}")]
    Incomplete(&'static str),
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
    #[error("cannot read {what}: {message}")]
    Read { what: String, message: String },
}

impl AuthError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::NotFound { .. } => "auth_not_found",
            AuthError::SecretNotFound { .. } | AuthError::SecretKeyMissing { .. } => "auth_secret",
            AuthError::Incomplete(_) => "auth_incomplete",
            AuthError::Unsupported(_) => "auth_unsupported",
            AuthError::Read { .. } => "auth_read",
        }
    }
}

/// The Secret keys an authentication spec reads: `(secret name, key)` → value, absent when the
/// Secret lacks the key; a Secret that does not exist has none of its entries.
pub type SecretValues = BTreeMap<(String, String), String>;

/// Reads what `reference` names (the authentication object and its Secrets) and resolves it.
/// No reference means the controller's own identity.
pub async fn load(
    client: &Client,
    namespace: &str,
    controller_namespace: &str,
    reference: Option<&AuthenticationRef>,
) -> Result<ResolvedAuth, AuthError> {
    let Some(reference) = reference else {
        return Ok(ResolvedAuth::CONTROLLER);
    };
    let read_error = |what: String| {
        move |e: kube::Error| AuthError::Read {
            what,
            message: e.to_string(),
        }
    };
    let (kind, spec, secret_namespace) = match reference.kind {
        AuthenticationKind::TriggerAuthentication => {
            let api: Api<TriggerAuthentication> = Api::namespaced(client.clone(), namespace);
            let found = api
                .get_opt(&reference.name)
                .await
                .map_err(read_error(format!(
                    "TriggerAuthentication {}",
                    reference.name
                )))?;
            ("TriggerAuthentication", found.map(|a| a.spec), namespace)
        }
        AuthenticationKind::ClusterTriggerAuthentication => {
            let api: Api<ClusterTriggerAuthentication> = Api::all(client.clone());
            let found = api
                .get_opt(&reference.name)
                .await
                .map_err(read_error(format!(
                    "ClusterTriggerAuthentication {}",
                    reference.name
                )))?;
            (
                "ClusterTriggerAuthentication",
                found.map(|a| a.spec.authentication),
                controller_namespace,
            )
        }
    };
    let spec = spec.ok_or_else(|| AuthError::NotFound {
        kind,
        name: reference.name.clone(),
    })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), secret_namespace);
    let mut values = SecretValues::new();
    let mut existing = Vec::new();
    for name in spec.secret_target_ref.iter().map(|r| r.name.clone()) {
        if existing.contains(&name) {
            continue;
        }
        let Some(secret) = secrets
            .get_opt(&name)
            .await
            .map_err(read_error(format!("Secret {secret_namespace}/{name}")))?
        else {
            continue;
        };
        for (key, value) in secret.data.unwrap_or_default() {
            values.insert(
                (name.clone(), key),
                String::from_utf8_lossy(&value.0).into_owned(),
            );
        }
        existing.push(name);
    }
    resolve(&spec, &values, &existing, secret_namespace)
}

/// Resolves a spec over the Secret values read for it. `secret_namespace` is only for messages.
pub fn resolve(
    spec: &TriggerAuthenticationSpec,
    secrets: &SecretValues,
    existing_secrets: &[String],
    secret_namespace: &str,
) -> Result<ResolvedAuth, AuthError> {
    if !spec.env.is_empty() {
        return Err(AuthError::Unsupported(
            "env parameters (read from the scale target's containers)",
        ));
    }
    let mut parameters: BTreeMap<&'static str, String> = BTreeMap::new();
    for reference in &spec.secret_target_ref {
        let parameter = parameter_name(reference.parameter);
        if !existing_secrets.contains(&reference.name) {
            return Err(AuthError::SecretNotFound {
                namespace: secret_namespace.to_owned(),
                name: reference.name.clone(),
            });
        }
        let value = secrets
            .get(&(reference.name.clone(), reference.key.clone()))
            .ok_or_else(|| AuthError::SecretKeyMissing {
                name: reference.name.clone(),
                key: reference.key.clone(),
                parameter,
            })?;
        parameters.insert(parameter, value.clone());
    }
    let identity = match (
        parameters.remove("awsAccessKeyID"),
        parameters.remove("awsSecretAccessKey"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => AwsIdentity::StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: parameters.remove("awsSessionToken"),
        },
        (None, None) => AwsIdentity::Controller,
        _ => {
            return Err(AuthError::Incomplete(
                "awsAccessKeyID and awsSecretAccessKey must be given together",
            ));
        }
    };
    let secret_role = parameters.remove("awsRoleArn").map(|role_arn| AssumeRole {
        role_arn,
        external_id: None,
    });
    let pod_role = match &spec.pod_identity {
        None => None,
        Some(pod_identity) => pod_identity_role(pod_identity)?,
    };
    Ok(ResolvedAuth {
        identity,
        assume_role: pod_role.or(secret_role),
    })
}

fn pod_identity_role(pod_identity: &PodIdentity) -> Result<Option<AssumeRole>, AuthError> {
    match (pod_identity.provider, pod_identity.identity_owner) {
        (PodIdentityProvider::None, _) => Ok(None),
        (_, IdentityOwner::Workload) => Err(AuthError::Unsupported("identityOwner workload")),
        (PodIdentityProvider::AwsEksPodIdentity, IdentityOwner::Keda)
        | (PodIdentityProvider::Aws, IdentityOwner::Keda) => {
            Ok(pod_identity.role_arn.clone().map(|role_arn| AssumeRole {
                role_arn,
                external_id: pod_identity.external_id.clone(),
            }))
        }
    }
}

fn parameter_name(parameter: AwsAuthParameter) -> &'static str {
    match parameter {
        AwsAuthParameter::AccessKeyId => "awsAccessKeyID",
        AwsAuthParameter::SecretAccessKey => "awsSecretAccessKey",
        AwsAuthParameter::SessionToken => "awsSessionToken",
        AwsAuthParameter::RoleArn => "awsRoleArn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::trigger_auth::SecretTargetRef;

    fn secret_ref(parameter: AwsAuthParameter, key: &str) -> SecretTargetRef {
        SecretTargetRef {
            parameter,
            name: "creds".into(),
            key: key.into(),
        }
    }

    fn values(pairs: &[(&str, &str)]) -> SecretValues {
        pairs
            .iter()
            .map(|(k, v)| (("creds".to_owned(), k.to_string()), v.to_string()))
            .collect()
    }

    fn keys_spec() -> TriggerAuthenticationSpec {
        TriggerAuthenticationSpec {
            secret_target_ref: vec![
                secret_ref(AwsAuthParameter::AccessKeyId, "id"),
                secret_ref(AwsAuthParameter::SecretAccessKey, "secret"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn no_authentication_means_the_controllers_identity() {
        let auth = resolve(
            &TriggerAuthenticationSpec::default(),
            &SecretValues::new(),
            &[],
            "ns",
        )
        .unwrap();
        assert_eq!(auth, ResolvedAuth::CONTROLLER);
        assert_eq!(auth.identity_key(), "controller");
    }

    #[test]
    fn static_keys_come_from_the_secret_and_never_print() {
        let auth = resolve(
            &keys_spec(),
            &values(&[("id", "AKIA1"), ("secret", "s3cr3t")]),
            &["creds".into()],
            "ns",
        )
        .unwrap();
        assert_eq!(auth.identity_key(), "key:AKIA1");
        assert!(!format!("{auth:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_missing_secret_or_key_is_named() {
        let missing = resolve(&keys_spec(), &SecretValues::new(), &[], "team-a").unwrap_err();
        assert_eq!(missing.to_string(), "Secret team-a/creds not found");
        let no_key = resolve(
            &keys_spec(),
            &values(&[("id", "AKIA1")]),
            &["creds".into()],
            "ns",
        )
        .unwrap_err();
        assert_eq!(
            no_key.to_string(),
            "Secret \"creds\" has no key \"secret\" (parameter awsSecretAccessKey)"
        );
    }

    #[test]
    fn half_a_key_pair_is_rejected() {
        let spec = TriggerAuthenticationSpec {
            secret_target_ref: vec![secret_ref(AwsAuthParameter::AccessKeyId, "id")],
            ..Default::default()
        };
        let error =
            resolve(&spec, &values(&[("id", "AKIA1")]), &["creds".into()], "ns").unwrap_err();
        assert!(matches!(error, AuthError::Incomplete(_)));
    }

    #[test]
    fn pod_identity_role_is_assumed_on_the_controllers_identity() {
        let spec = TriggerAuthenticationSpec {
            pod_identity: Some(PodIdentity {
                provider: PodIdentityProvider::Aws,
                role_arn: Some("arn:aws:iam::123456789012:role/reader".into()),
                external_id: Some("ext".into()),
                identity_owner: IdentityOwner::Keda,
            }),
            ..Default::default()
        };
        let auth = resolve(&spec, &SecretValues::new(), &[], "ns").unwrap();
        assert_eq!(auth.identity, AwsIdentity::Controller);
        assert_eq!(
            auth.assume_role.clone().unwrap().external_id.as_deref(),
            Some("ext")
        );
        assert_eq!(
            auth.identity_key(),
            "controller+role:arn:aws:iam::123456789012:role/reader+ext"
        );
    }

    #[test]
    fn workload_identity_is_reported_as_unsupported_not_ignored() {
        let spec = TriggerAuthenticationSpec {
            pod_identity: Some(PodIdentity {
                provider: PodIdentityProvider::Aws,
                role_arn: None,
                external_id: None,
                identity_owner: IdentityOwner::Workload,
            }),
            ..Default::default()
        };
        assert_eq!(
            resolve(&spec, &SecretValues::new(), &[], "ns").unwrap_err(),
            AuthError::Unsupported("identityOwner workload")
        );
    }
}
