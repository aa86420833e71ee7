//! `identityOwner: workload` with EKS Pod Identity: the credentials the workload's own pods
//! would get. A token for the workload's ServiceAccount (TokenRequest, audience
//! `pods.eks.amazonaws.com`) is exchanged through EKS Auth AssumeRoleForPodIdentity, for the
//! controller's `--cluster-name`, for the role the cluster's Pod Identity association gives that
//! ServiceAccount, as the Pod Identity Agent does for the pod. The credentials are kept until
//! shortly before they expire; one set serves the setup check and every poll.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future;
use aws_sdk_eksauth::operation::assume_role_for_pod_identity::AssumeRoleForPodIdentityError;
use aws_sdk_sqs::config::{Credentials, ProvideCredentials};
use tokio::sync::Mutex;

use super::workload_identity::service_account_token;

/// The audience EKS Auth accepts a ServiceAccount token for.
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// The shortest lifetime a TokenRequest grants: the token is used once, right away.
const TOKEN_SECONDS: i64 = 600;
/// Credentials this close to expiry are fetched again rather than handed out.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Why the workload's EKS Pod Identity credentials could not be had.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodIdentityError {
    #[error("token for ServiceAccount {namespace}/{service_account}: {message}")]
    Token {
        namespace: String,
        service_account: String,
        message: String,
    },
    #[error(
        "ServiceAccount {namespace}/{service_account} has no EKS Pod Identity association in cluster {cluster} (identityOwner workload)"
    )]
    NoAssociation {
        namespace: String,
        service_account: String,
        cluster: String,
    },
    #[error(
        "EKS Auth AssumeRoleForPodIdentity for ServiceAccount {namespace}/{service_account} in cluster {cluster}: {message}"
    )]
    EksAuth {
        namespace: String,
        service_account: String,
        cluster: String,
        message: String,
    },
}

impl PodIdentityError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            PodIdentityError::Token { .. } => "pod_identity_token",
            PodIdentityError::NoAssociation { .. } => "pod_identity_no_association",
            PodIdentityError::EksAuth { .. } => "pod_identity_eks_auth",
        }
    }

    /// The Pod Identity error a credentials provider failed with, if it was one.
    pub fn of(error: &CredentialsError) -> Option<&PodIdentityError> {
        std::error::Error::source(error)?.downcast_ref()
    }
}

/// Whether credentials that expire at `expiry` can still be handed out at `now`. Credentials
/// without an expiry are never kept: EKS Auth always gives one.
fn still_fresh(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|expiry| now + REFRESH_BEFORE_EXPIRY < expiry)
}

#[derive(Clone)]
pub struct WorkloadPodIdentity {
    kube: kube::Client,
    eks_auth: aws_sdk_eksauth::Client,
    cluster: String,
    namespace: String,
    service_account: String,
    /// Held across a refresh, so concurrent callers wait for one exchange.
    cached: Arc<Mutex<Option<Credentials>>>,
}

impl std::fmt::Debug for WorkloadPodIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WorkloadPodIdentity({}/{} in {})",
            self.namespace, self.service_account, self.cluster
        )
    }
}

impl WorkloadPodIdentity {
    pub fn new(
        kube: kube::Client,
        eks_auth: aws_sdk_eksauth::Client,
        cluster: &str,
        namespace: &str,
        service_account: &str,
    ) -> Self {
        Self {
            kube,
            eks_auth,
            cluster: cluster.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            cached: Arc::default(),
        }
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref()
            && still_fresh(credentials.expiry(), SystemTime::now())
        {
            return Ok(credentials.clone());
        }
        let fresh = self
            .exchange()
            .await
            .map_err(CredentialsError::provider_error)?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn exchange(&self) -> Result<Credentials, PodIdentityError> {
        let token = service_account_token(
            &self.kube,
            &self.namespace,
            &self.service_account,
            AUDIENCE,
            TOKEN_SECONDS,
        )
        .await
        .map_err(|message| PodIdentityError::Token {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            message,
        })?;
        let eks_auth_error = |message: String| PodIdentityError::EksAuth {
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            cluster: self.cluster.clone(),
            message,
        };
        let assumed = self
            .eks_auth
            .assume_role_for_pod_identity()
            .cluster_name(&self.cluster)
            .token(token)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(AssumeRoleForPodIdentityError::ResourceNotFoundException(_)) => {
                    PodIdentityError::NoAssociation {
                        namespace: self.namespace.clone(),
                        service_account: self.service_account.clone(),
                        cluster: self.cluster.clone(),
                    }
                }
                _ => eks_auth_error(crate::aws::sdk_errors::describe(&e)),
            })?;
        let credentials = assumed
            .credentials()
            .ok_or_else(|| eks_auth_error("EKS Auth returned no credentials".into()))?;
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            SystemTime::try_from(*credentials.expiration()).ok(),
            "windlass-workload-pod-identity",
        ))
    }
}

impl ProvideCredentials for WorkloadPodIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_kept_until_five_minutes_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let in_minutes = |minutes: u64| Some(now + Duration::from_secs(minutes * 60));
        assert!(still_fresh(in_minutes(60), now));
        assert!(still_fresh(in_minutes(6), now));
        assert!(
            !still_fresh(in_minutes(5), now),
            "refreshed before expiry, not at it"
        );
        assert!(!still_fresh(in_minutes(0), now));
        assert!(!still_fresh(Some(now - Duration::from_secs(1)), now));
        assert!(!still_fresh(None, now), "without an expiry: fetched again");
    }

    #[test]
    fn a_pod_identity_error_survives_the_credentials_provider_and_names_service_account_and_cluster()
     {
        let missing = PodIdentityError::NoAssociation {
            namespace: "team-a".into(),
            service_account: "worker".into(),
            cluster: "prod".into(),
        };
        let wrapped = CredentialsError::provider_error(missing.clone());
        assert_eq!(PodIdentityError::of(&wrapped), Some(&missing));
        assert_eq!(
            missing.to_string(),
            "ServiceAccount team-a/worker has no EKS Pod Identity association in cluster prod (identityOwner workload)"
        );
        assert_eq!(missing.metric_label(), "pod_identity_no_association");
        assert_eq!(
            PodIdentityError::of(&CredentialsError::not_loaded("no source")),
            None
        );
    }
}
