//! `identityOwner: workload` with IRSA: the credentials the workload's own pods would get. A
//! token for the workload's ServiceAccount (TokenRequest, audience `sts.amazonaws.com`) is
//! exchanged for the role in its `eks.amazonaws.com/role-arn` annotation through STS
//! AssumeRoleWithWebIdentity, as the pod's SDK does with its projected token. The SDK caches
//! the credentials and asks again before they expire.

use std::time::SystemTime;

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future;
use aws_sdk_sqs::config::{Credentials, ProvideCredentials};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;

/// The ServiceAccount annotation IRSA reads.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
const AUDIENCE: &str = "sts.amazonaws.com";

#[derive(Clone)]
pub struct WorkloadWebIdentity {
    pub kube: kube::Client,
    pub sts: aws_sdk_sts::Client,
    pub namespace: String,
    pub service_account: String,
    pub role_arn: String,
}

impl std::fmt::Debug for WorkloadWebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WorkloadWebIdentity({}/{} as {})",
            self.namespace, self.service_account, self.role_arn
        )
    }
}

/// A token for `namespace/service_account` with `audience`, lasting `seconds`, as the kubelet
/// projects one into the ServiceAccount's pods. The error is the reason, without the account.
pub async fn service_account_token(
    kube: &kube::Client,
    namespace: &str,
    service_account: &str,
    audience: &str,
    seconds: i64,
) -> Result<String, String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .map_err(|e| e.to_string())?
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| "TokenRequest returned no token".to_owned())
}

impl WorkloadWebIdentity {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let token = service_account_token(
            &self.kube,
            &self.namespace,
            &self.service_account,
            AUDIENCE,
            3600,
        )
        .await
        .map_err(|reason| {
            CredentialsError::provider_error(format!(
                "token for ServiceAccount {}/{}: {reason}",
                self.namespace, self.service_account
            ))
        })?;
        let assumed = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name("windlass")
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "assuming {}: {}",
                    self.role_arn,
                    crate::aws::sdk_errors::describe(&e)
                ))
            })?;
        let credentials = assumed
            .credentials()
            .ok_or_else(|| CredentialsError::provider_error("STS returned no credentials"))?;
        let expiry = SystemTime::try_from(*credentials.expiration()).ok();
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            expiry,
            "windlass-workload-identity",
        ))
    }
}

impl ProvideCredentials for WorkloadWebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}
