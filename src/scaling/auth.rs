//! Trigger authentication: a TriggerAuthentication (or ClusterTriggerAuthentication) resolved
//! to the AWS identity a scaler uses, and that identity turned into SDK configuration.
//! Resolving is pure over the Secrets it names; reading them is the caller's one I/O step.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_sqs::config::{Credentials, ProvideCredentials, Region, SharedCredentialsProvider};
use aws_types::origin::Origin;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, Client};

use super::container_env::{self, EnvError, EnvObjects};
use super::eks_pod_identity::{PodIdentityError, WorkloadPodIdentity};
use super::target::service_account;
use super::workload_identity::{ROLE_ARN_ANNOTATION, WorkloadWebIdentity};
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
    /// The scale target's ServiceAccount's IRSA role (`identityOwner: workload`).
    Workload {
        namespace: String,
        service_account: String,
        role_arn: String,
    },
    /// The role the cluster's EKS Pod Identity association gives the scale target's
    /// ServiceAccount (`identityOwner: workload`, provider `aws-eks-pod-identity`).
    WorkloadPodIdentity {
        namespace: String,
        service_account: String,
    },
}

/// The workload a trigger scales: its ServiceAccount (with the IRSA role on it, read when the
/// spec asks for `identityOwner: workload`) and its pod spec, which `env` parameters read, with
/// the Secrets and ConfigMaps that those containers' environment names.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    pub role_arn: Option<String>,
    pub pod_spec: serde_json::Value,
    pub env_objects: EnvObjects,
}

impl std::fmt::Debug for AwsIdentity {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsIdentity::Controller => f.write_str("Controller"),
            AwsIdentity::StaticKeys { access_key_id, .. } => {
                write!(f, "StaticKeys({access_key_id})")
            }
            AwsIdentity::Workload {
                namespace,
                service_account,
                role_arn,
            } => {
                write!(f, "Workload({namespace}/{service_account} as {role_arn})")
            }
            AwsIdentity::WorkloadPodIdentity {
                namespace,
                service_account,
            } => write!(f, "WorkloadPodIdentity({namespace}/{service_account})"),
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
            AwsIdentity::Workload {
                namespace,
                service_account,
                role_arn,
            } => {
                format!("workload:{namespace}/{service_account}:{role_arn}")
            }
            AwsIdentity::WorkloadPodIdentity {
                namespace,
                service_account,
            } => format!("workload-pod-identity:{namespace}/{service_account}"),
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
    /// `cluster` is the controller's `--cluster-name`, whose Pod Identity associations count.
    /// `endpoint` (a trigger's `awsEndpoint`) is the queue's: as in KEDA, the STS calls that
    /// get the credentials go where the controller's own would.
    pub async fn sdk_config(
        &self,
        base: &SdkConfig,
        kube: &Client,
        cluster: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> SdkConfig {
        // Without credentials: what STS is called with to get the workload's.
        let plain = located(base, region, None);
        let mut builder = plain.to_builder();
        match &self.identity {
            AwsIdentity::Controller => {}
            AwsIdentity::StaticKeys {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let credentials = Credentials::new(
                    access_key_id,
                    secret_access_key,
                    session_token.clone(),
                    None,
                    "windlass-trigger-authentication",
                );
                builder = builder.credentials_provider(SharedCredentialsProvider::new(credentials));
            }
            AwsIdentity::Workload {
                namespace,
                service_account,
                role_arn,
            } => {
                let provider = WorkloadWebIdentity {
                    kube: kube.clone(),
                    sts: crate::aws::sdk_clients::sts(&plain),
                    namespace: namespace.clone(),
                    service_account: service_account.clone(),
                    role_arn: role_arn.clone(),
                };
                builder = builder.credentials_provider(SharedCredentialsProvider::new(provider));
            }
            AwsIdentity::WorkloadPodIdentity {
                namespace,
                service_account,
            } => {
                // EKS Auth is the cluster's, in the controller's region and at its endpoint
                // (AWS_ENDPOINT_URL_EKS_AUTH), whatever the queue's region or awsEndpoint.
                let provider = WorkloadPodIdentity::new(
                    kube.clone(),
                    crate::aws::sdk_clients::eks_auth(base),
                    cluster,
                    namespace,
                    service_account,
                );
                builder = builder.credentials_provider(SharedCredentialsProvider::new(provider));
            }
        }
        let config = builder.build();
        let Some(role) = &self.assume_role else {
            return located(&config, None, endpoint);
        };
        let mut provider = AssumeRoleProvider::builder(&role.role_arn)
            .session_name("windlass")
            .configure(&config);
        if let Some(external_id) = &role.external_id {
            provider = provider.external_id(external_id);
        }
        let provider = provider.build().await;
        let assumed = config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        located(&assumed, None, endpoint)
    }
}

impl ResolvedAuth {
    /// Fetches a workload's EKS Pod Identity credentials once through `provider`, the one its
    /// trigger's client signs with, so that a ServiceAccount without an association is
    /// reported when the trigger is set up; the provider keeps the credentials for the polls.
    pub async fn check_credentials(
        &self,
        provider: Option<&SharedCredentialsProvider>,
    ) -> Result<(), AuthError> {
        if !matches!(self.identity, AwsIdentity::WorkloadPodIdentity { .. }) {
            return Ok(());
        }
        let Some(provider) = provider else {
            return Ok(());
        };
        match provider.provide_credentials().await {
            Ok(_) => Ok(()),
            Err(e) => Err(match PodIdentityError::of(&e) {
                Some(pod_identity) => pod_identity.clone().into(),
                None => AuthError::Read {
                    what: "EKS Pod Identity credentials".into(),
                    message: e.to_string(),
                },
            }),
        }
    }
}

/// `base` in `region` and at `endpoint` when given. The endpoint is marked as set in code: a
/// client built from the config then prefers it to a service-specific endpoint from the
/// environment or a profile (`AWS_ENDPOINT_URL_SQS`), which it otherwise puts first, so a
/// trigger's `awsEndpoint` would lose to the controller's own SQS endpoint.
fn located(base: &SdkConfig, region: Option<&str>, endpoint: Option<&str>) -> SdkConfig {
    let mut builder = base.to_builder();
    if let Some(region) = region {
        builder = builder.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
        builder.insert_origin("endpoint_url", Origin::shared_config());
    }
    builder.build()
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
    #[error("environment variable {var:?} of the workload (parameter {parameter}): {source}")]
    Env {
        var: String,
        parameter: &'static str,
        source: EnvError,
    },
    #[error(
        "ServiceAccount {namespace}/{name} has no {ROLE_ARN_ANNOTATION} annotation (identityOwner workload)"
    )]
    WorkloadRoleMissing { namespace: String, name: String },
    #[error(transparent)]
    PodIdentity(#[from] PodIdentityError),
    #[error("cannot read {what}: {message}")]
    Read { what: String, message: String },
}

impl AuthError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::NotFound { .. } => "auth_not_found",
            AuthError::SecretNotFound { .. } | AuthError::SecretKeyMissing { .. } => "auth_secret",
            AuthError::Incomplete(_)
            | AuthError::WorkloadRoleMissing { .. }
            | AuthError::Env { .. } => "auth_incomplete",
            AuthError::PodIdentity(e) => e.metric_label(),
            AuthError::Read { .. } => "auth_read",
        }
    }
}

/// The Secret keys an authentication spec reads: `(secret name, key)` → value, absent when the
/// Secret lacks the key; a Secret that does not exist has none of its entries.
pub type SecretValues = BTreeMap<(String, String), String>;

/// Reads what `reference` names (the authentication object and its Secrets) and resolves it.
/// No reference means the controller's own identity. `workload_pod_spec` is the scale target's
/// (or Job template's) pod spec: its ServiceAccount and containers' environment.
pub async fn load(
    client: &Client,
    namespace: &str,
    controller_namespace: &str,
    reference: Option<&AuthenticationRef>,
    workload_pod_spec: &serde_json::Value,
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
    let (values, existing) = read_secrets(client, &spec, secret_namespace).await?;
    let workload_service_account = service_account(workload_pod_spec);
    let wants_role = spec.pod_identity.as_ref().is_some_and(|p| {
        p.identity_owner == IdentityOwner::Workload && p.provider == PodIdentityProvider::Aws
    });
    let role_arn = if wants_role {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let account = accounts
            .get_opt(&workload_service_account)
            .await
            .map_err(read_error(format!(
                "ServiceAccount {namespace}/{workload_service_account}"
            )))?;
        account
            .and_then(|a| a.metadata.annotations)
            .and_then(|mut a| a.remove(ROLE_ARN_ANNOTATION))
    } else {
        None
    };
    let mut env_sources = BTreeSet::new();
    for reference in &spec.env {
        // A container that is not there is reported by `resolve`, naming the parameter.
        if let Ok(container) =
            container_env::container(workload_pod_spec, reference.container_name.as_deref())
        {
            env_sources.extend(container_env::referenced_objects(&container));
        }
    }
    let env_objects = container_env::read_objects(client, namespace, env_sources)
        .await
        .map_err(|e| AuthError::Read {
            what: "the workload's environment".into(),
            message: e.to_string(),
        })?;
    let workload = Some(Workload {
        namespace: namespace.to_owned(),
        service_account: workload_service_account,
        role_arn,
        pod_spec: workload_pod_spec.clone(),
        env_objects,
    });
    resolve(
        &spec,
        &values,
        &existing,
        secret_namespace,
        workload.as_ref(),
    )
}

/// Reads the Secrets a spec names from `namespace`: their values, and the names of those that
/// exist.
pub async fn read_secrets(
    client: &Client,
    spec: &TriggerAuthenticationSpec,
    namespace: &str,
) -> Result<(SecretValues, Vec<String>), AuthError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut values = SecretValues::new();
    let mut existing = Vec::new();
    for name in spec.secret_target_ref.iter().map(|r| r.name.clone()) {
        if existing.contains(&name) {
            continue;
        }
        let Some(secret) = secrets.get_opt(&name).await.map_err(|e| AuthError::Read {
            what: format!("Secret {namespace}/{name}"),
            message: e.to_string(),
        })?
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
    Ok((values, existing))
}

/// What can be told about a spec on its own, before a workload uses it and without calling
/// AWS: the Secrets and keys it names exist, access keys come in pairs, and a workload's
/// identity is not combined with access keys. `env` parameters are checked when a workload uses them.
pub fn check(
    spec: &TriggerAuthenticationSpec,
    secrets: &SecretValues,
    existing_secrets: &[String],
    secret_namespace: &str,
) -> Result<(), AuthError> {
    let mut given: Vec<&'static str> =
        secret_parameters(spec, secrets, existing_secrets, secret_namespace)?
            .into_keys()
            .collect();
    given.extend(spec.env.iter().map(|r| parameter_name(r.parameter)));
    let has = |parameter| given.contains(&parameter);
    if has("awsAccessKeyID") != has("awsSecretAccessKey") {
        return Err(AuthError::Incomplete(HALF_A_KEY_PAIR));
    }
    match spec
        .pod_identity
        .as_ref()
        .filter(|p| p.identity_owner == IdentityOwner::Workload)
    {
        Some(pod_identity) => supports_workload_identity(pod_identity, has("awsAccessKeyID")),
        None => Ok(()),
    }
}

const HALF_A_KEY_PAIR: &str = "awsAccessKeyID and awsSecretAccessKey must be given together";

/// The parameters a spec's `secretTargetRef` gives, read from the Secrets.
fn secret_parameters(
    spec: &TriggerAuthenticationSpec,
    secrets: &SecretValues,
    existing_secrets: &[String],
    secret_namespace: &str,
) -> Result<BTreeMap<&'static str, String>, AuthError> {
    let mut parameters = BTreeMap::new();
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
    Ok(parameters)
}

/// Resolves a spec over the Secret values read for it. `secret_namespace` is only for messages.
pub fn resolve(
    spec: &TriggerAuthenticationSpec,
    secrets: &SecretValues,
    existing_secrets: &[String],
    secret_namespace: &str,
    workload: Option<&Workload>,
) -> Result<ResolvedAuth, AuthError> {
    let mut parameters: BTreeMap<&'static str, String> = BTreeMap::new();
    for reference in &spec.env {
        let parameter = parameter_name(reference.parameter);
        let workload = workload.ok_or(AuthError::Incomplete(
            "env parameters need the workload's pod spec",
        ))?;
        let value =
            container_env::container(&workload.pod_spec, reference.container_name.as_deref())
                .and_then(|container| {
                    container_env::value(
                        &container,
                        &reference.name,
                        &workload.env_objects,
                        &workload.namespace,
                    )
                })
                .map_err(|source| AuthError::Env {
                    var: reference.name.clone(),
                    parameter,
                    source,
                })?;
        parameters.insert(parameter, value);
    }
    parameters.extend(secret_parameters(
        spec,
        secrets,
        existing_secrets,
        secret_namespace,
    )?);
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
        _ => return Err(AuthError::Incomplete(HALF_A_KEY_PAIR)),
    };
    let secret_role = parameters.remove("awsRoleArn").map(|role_arn| AssumeRole {
        role_arn,
        external_id: None,
    });
    // With provider none there is no workload identity to take: the keys and role stand.
    if let Some(pod_identity) = spec.pod_identity.as_ref().filter(|p| {
        p.identity_owner == IdentityOwner::Workload && p.provider != PodIdentityProvider::None
    }) {
        return workload_identity(pod_identity, identity, workload);
    }
    let pod_role = spec.pod_identity.as_ref().and_then(controller_role);
    Ok(ResolvedAuth {
        identity,
        assume_role: pod_role.or(secret_role),
    })
}

/// `identityOwner: workload`: the workload's IRSA role or EKS Pod Identity, in place of the
/// controller's identity.
fn workload_identity(
    pod_identity: &PodIdentity,
    keys: AwsIdentity,
    workload: Option<&Workload>,
) -> Result<ResolvedAuth, AuthError> {
    supports_workload_identity(pod_identity, keys != AwsIdentity::Controller)?;
    let workload = workload.ok_or(AuthError::Incomplete(
        "identityOwner workload needs the workload's ServiceAccount",
    ))?;
    if pod_identity.provider == PodIdentityProvider::AwsEksPodIdentity {
        return Ok(ResolvedAuth {
            identity: AwsIdentity::WorkloadPodIdentity {
                namespace: workload.namespace.clone(),
                service_account: workload.service_account.clone(),
            },
            assume_role: None,
        });
    }
    let role_arn = workload
        .role_arn
        .clone()
        .ok_or_else(|| AuthError::WorkloadRoleMissing {
            namespace: workload.namespace.clone(),
            name: workload.service_account.clone(),
        })?;
    let identity = AwsIdentity::Workload {
        namespace: workload.namespace.clone(),
        service_account: workload.service_account.clone(),
        role_arn,
    };
    Ok(ResolvedAuth {
        identity,
        assume_role: None,
    })
}

/// Whether `identityOwner: workload` can be used with this provider, given whether access keys
/// are also given.
fn supports_workload_identity(
    pod_identity: &PodIdentity,
    with_keys: bool,
) -> Result<(), AuthError> {
    match pod_identity.provider {
        PodIdentityProvider::None => Ok(()),
        PodIdentityProvider::Aws | PodIdentityProvider::AwsEksPodIdentity if with_keys => Err(
            AuthError::Incomplete("identityOwner workload cannot be combined with access keys"),
        ),
        PodIdentityProvider::Aws | PodIdentityProvider::AwsEksPodIdentity => Ok(()),
    }
}

/// `identityOwner: keda`: a role assumed on top of the controller's identity, if any.
fn controller_role(pod_identity: &PodIdentity) -> Option<AssumeRole> {
    match pod_identity.provider {
        PodIdentityProvider::None => None,
        PodIdentityProvider::Aws | PodIdentityProvider::AwsEksPodIdentity => {
            pod_identity.role_arn.clone().map(|role_arn| AssumeRole {
                role_arn,
                external_id: pod_identity.external_id.clone(),
            })
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
            None,
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
            None,
        )
        .unwrap();
        assert_eq!(auth.identity_key(), "key:AKIA1");
        assert!(!format!("{auth:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_missing_secret_or_key_is_named() {
        let missing = resolve(&keys_spec(), &SecretValues::new(), &[], "team-a", None).unwrap_err();
        assert_eq!(missing.to_string(), "Secret team-a/creds not found");
        let no_key = resolve(
            &keys_spec(),
            &values(&[("id", "AKIA1")]),
            &["creds".into()],
            "ns",
            None,
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
        let error = resolve(
            &spec,
            &values(&[("id", "AKIA1")]),
            &["creds".into()],
            "ns",
            None,
        )
        .unwrap_err();
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
        let auth = resolve(&spec, &SecretValues::new(), &[], "ns", None).unwrap();
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
    fn provider_none_keeps_the_keys_and_role_whoever_owns_the_identity() {
        let mut spec = keys_spec();
        spec.secret_target_ref
            .push(secret_ref(AwsAuthParameter::RoleArn, "role"));
        let secrets = values(&[
            ("id", "AKIA1"),
            ("secret", "s3cr3t"),
            ("role", "arn:aws:iam::123456789012:role/reader"),
        ]);
        for owner in [IdentityOwner::Keda, IdentityOwner::Workload] {
            spec.pod_identity = Some(PodIdentity {
                provider: PodIdentityProvider::None,
                role_arn: None,
                external_id: None,
                identity_owner: owner,
            });
            let auth = resolve(&spec, &secrets, &["creds".into()], "ns", None).unwrap();
            assert_eq!(
                auth.identity_key(),
                "key:AKIA1+role:arn:aws:iam::123456789012:role/reader+",
                "{owner:?}"
            );
        }
    }

    fn workload_spec(provider: PodIdentityProvider) -> TriggerAuthenticationSpec {
        TriggerAuthenticationSpec {
            pod_identity: Some(PodIdentity {
                provider,
                role_arn: None,
                external_id: None,
                identity_owner: IdentityOwner::Workload,
            }),
            ..Default::default()
        }
    }

    fn account(role_arn: Option<&str>) -> Workload {
        Workload {
            namespace: "team-a".into(),
            service_account: "worker".into(),
            role_arn: role_arn.map(str::to_owned),
            pod_spec: serde_json::json!({"containers": [{"name": "app", "env": [
                {"name": "AWS_KEY", "value": "AKIA-ENV"},
                {"name": "AWS_SECRET", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "s"}}}
            ]}]}),
            env_objects: [(
                (container_env::EnvObjectKind::Secret, "keys".to_owned()),
                [("s".to_owned(), "from-secret".to_owned())].into(),
            )]
            .into(),
        }
    }

    #[test]
    fn env_parameters_come_from_the_workloads_containers() {
        use crate::apis::trigger_auth::EnvTargetRef;
        let env = |parameter, name: &str| EnvTargetRef {
            parameter,
            name: name.into(),
            container_name: Some("app".into()),
        };
        let spec = TriggerAuthenticationSpec {
            env: vec![
                env(AwsAuthParameter::AccessKeyId, "AWS_KEY"),
                env(AwsAuthParameter::SecretAccessKey, "AWS_SECRET"),
            ],
            ..Default::default()
        };
        let auth = resolve(
            &spec,
            &SecretValues::new(),
            &[],
            "team-a",
            Some(&account(None)),
        )
        .unwrap();
        assert_eq!(auth.identity_key(), "key:AKIA-ENV");
        assert!(
            matches!(&auth.identity, AwsIdentity::StaticKeys { secret_access_key, .. }
                if secret_access_key == "from-secret"),
            "the secret key comes through the container's secretKeyRef"
        );
        let missing = TriggerAuthenticationSpec {
            env: vec![env(AwsAuthParameter::AccessKeyId, "NOPE")],
            ..Default::default()
        };
        let error = resolve(
            &missing,
            &SecretValues::new(),
            &[],
            "team-a",
            Some(&account(None)),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable \"NOPE\" of the workload (parameter awsAccessKeyID): not set in container \"app\""
        );
    }

    #[test]
    fn workload_identity_uses_the_service_accounts_irsa_role() {
        let role = "arn:aws:iam::123456789012:role/worker";
        let auth = resolve(
            &workload_spec(PodIdentityProvider::Aws),
            &SecretValues::new(),
            &[],
            "team-a",
            Some(&account(Some(role))),
        )
        .unwrap();
        let expected = AwsIdentity::Workload {
            namespace: "team-a".into(),
            service_account: "worker".into(),
            role_arn: role.into(),
        };
        assert_eq!(auth.identity, expected);
        assert_eq!(
            auth.identity_key(),
            format!("workload:team-a/worker:{role}")
        );
    }

    #[test]
    fn workload_identity_without_an_irsa_annotation_names_the_service_account() {
        let error = resolve(
            &workload_spec(PodIdentityProvider::Aws),
            &SecretValues::new(),
            &[],
            "team-a",
            Some(&account(None)),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "ServiceAccount team-a/worker has no eks.amazonaws.com/role-arn annotation (identityOwner workload)"
        );
    }

    #[test]
    fn workload_owned_eks_pod_identity_is_the_service_accounts_without_an_annotation() {
        let auth = resolve(
            &workload_spec(PodIdentityProvider::AwsEksPodIdentity),
            &SecretValues::new(),
            &[],
            "team-a",
            Some(&account(None)),
        )
        .unwrap();
        assert_eq!(
            auth.identity,
            AwsIdentity::WorkloadPodIdentity {
                namespace: "team-a".into(),
                service_account: "worker".into(),
            }
        );
        assert_eq!(auth.assume_role, None);
        assert_eq!(
            auth.identity_key(),
            "workload-pod-identity:team-a/worker",
            "distinct from the same ServiceAccount's IRSA role and from the controller"
        );
        let with_keys = TriggerAuthenticationSpec {
            pod_identity: workload_spec(PodIdentityProvider::AwsEksPodIdentity).pod_identity,
            ..keys_spec()
        };
        assert_eq!(
            resolve(
                &with_keys,
                &values(&[("id", "AKIA1"), ("secret", "s3cr3t")]),
                &["creds".into()],
                "team-a",
                Some(&account(None)),
            ),
            Err(AuthError::Incomplete(
                "identityOwner workload cannot be combined with access keys"
            ))
        );
    }

    #[test]
    fn a_spec_is_checked_on_its_own_without_a_workload() {
        let found = values(&[("id", "AKIA1"), ("secret", "s3cr3t")]);
        let creds = ["creds".to_owned()];
        assert_eq!(check(&keys_spec(), &found, &creds, "ns"), Ok(()));
        assert_eq!(
            check(&keys_spec(), &SecretValues::new(), &[], "team-a"),
            Err(AuthError::SecretNotFound {
                namespace: "team-a".into(),
                name: "creds".into()
            })
        );
        assert!(matches!(
            check(&keys_spec(), &values(&[("id", "AKIA1")]), &creds, "ns"),
            Err(AuthError::SecretKeyMissing { .. })
        ));
        let half = TriggerAuthenticationSpec {
            secret_target_ref: vec![secret_ref(AwsAuthParameter::AccessKeyId, "id")],
            ..Default::default()
        };
        assert!(matches!(
            check(&half, &found, &creds, "ns"),
            Err(AuthError::Incomplete(_))
        ));
        let from_env = TriggerAuthenticationSpec {
            env: vec![crate::apis::trigger_auth::EnvTargetRef {
                parameter: AwsAuthParameter::SecretAccessKey,
                name: "AWS_SECRET".into(),
                container_name: None,
            }],
            ..half
        };
        assert_eq!(
            check(&from_env, &found, &creds, "ns"),
            Ok(()),
            "one half from a Secret, the other from the workload's environment"
        );
        assert_eq!(
            check(
                &workload_spec(PodIdentityProvider::AwsEksPodIdentity),
                &SecretValues::new(),
                &[],
                "ns"
            ),
            Ok(()),
            "the association is looked up when a workload uses it"
        );
        assert_eq!(
            check(
                &workload_spec(PodIdentityProvider::Aws),
                &SecretValues::new(),
                &[],
                "ns"
            ),
            Ok(()),
            "the workload's role is read when a workload uses it"
        );
    }

    /// The SDK's reading of `AWS_ENDPOINT_URL_SQS` (or a profile's `services` section).
    #[derive(Debug)]
    struct SqsEndpointSetting(String);

    impl aws_types::service_config::LoadServiceConfig for SqsEndpointSetting {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            (key.service_id() == "SQS" && key.env() == "AWS_ENDPOINT_URL").then(|| self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_triggers_endpoint_wins_over_the_controllers_own_sqs_endpoint_setting() {
        let trigger_endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Nothing listens on port 1: a request sent there is refused and never accepted below.
        let base = SdkConfig::builder()
            .service_config(SqsEndpointSetting("http://127.0.0.1:1".into()))
            .region(Region::new("us-east-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKID", "secret", None, None, "test",
            )))
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let endpoint = format!("http://{}", trigger_endpoint.local_addr().unwrap());
        let sqs = crate::aws::sdk_clients::sqs(&located(&base, None, Some(&endpoint)));
        let request = tokio::spawn(async move {
            sqs.get_queue_attributes()
                .queue_url("http://127.0.0.1:1/000000000000/orders")
                .send()
                .await
        });
        let accepted = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            trigger_endpoint.accept(),
        )
        .await;
        request.abort();
        assert!(
            accepted.is_ok_and(|connection| connection.is_ok()),
            "GetQueueAttributes did not reach the trigger's awsEndpoint"
        );
    }

    #[tokio::test]
    async fn a_triggers_endpoint_is_the_queues_and_assume_role_calls_the_controllers_sts() {
        let controller_endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trigger_endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The loader, unlike a bare builder, gives the time source and sleep AssumeRole needs.
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(format!(
                "http://{}",
                controller_endpoint.local_addr().unwrap()
            ))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "secret", None, None, "test"))
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .load()
            .await;
        let auth = ResolvedAuth {
            identity: AwsIdentity::StaticKeys {
                access_key_id: "AKID".into(),
                secret_access_key: "secret".into(),
                session_token: None,
            },
            assume_role: Some(AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/reader".into(),
                external_id: None,
            }),
        };
        let no_api_server = tower::service_fn(|_: axum::http::Request<kube::client::Body>| async {
            Err::<axum::http::Response<kube::client::Body>, _>(std::io::Error::other(
                "no API server in unit tests",
            ))
        });
        let kube = Client::new(no_api_server, "default");
        let trigger = format!("http://{}", trigger_endpoint.local_addr().unwrap());
        let config = auth
            .sdk_config(&base, &kube, "prod", None, Some(&trigger))
            .await;
        assert_eq!(config.endpoint_url(), Some(trigger.as_str()));
        let provider = config.credentials_provider().unwrap();
        let assuming = tokio::spawn(async move { provider.provide_credentials().await });
        let reached = tokio::select! {
            _ = controller_endpoint.accept() => "the controller's endpoint",
            _ = trigger_endpoint.accept() => "the trigger's awsEndpoint",
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => "nowhere",
        };
        assuming.abort();
        assert_eq!(
            reached, "the controller's endpoint",
            "AssumeRole went to {reached}"
        );
    }
}
