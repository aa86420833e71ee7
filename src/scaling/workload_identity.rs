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

impl WorkloadWebIdentity {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![AUDIENCE.to_owned()]),
                expiration_seconds: Some(3600),
                bound_object_ref: None,
            }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "token for ServiceAccount {}/{}: {e}",
                    self.namespace, self.service_account
                ))
            })?
            .status
            .and_then(|status| status.token)
            .ok_or_else(|| CredentialsError::provider_error("TokenRequest returned no token"))?;
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
