//! Who may call the jobs API, and what they may do: the static bearer token (full access, for
//! local use) and Kubernetes ServiceAccount tokens, authenticated by a TokenReview and
//! authorized per namespace by a SubjectAccessReview. Answers are cached for [`REVIEW_TTL`] so a
//! burst of requests costs the API server one review each.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// How long a TokenReview's acceptance and a SubjectAccessReview's answer are reused.
pub const REVIEW_TTL: Duration = Duration::from_secs(10);

/// Cached answers kept at most; past it, expired ones go first, then all.
const CACHE_CAPACITY: usize = 10_000;

/// The API group of Windlass's kinds, which the RBAC checks name.
pub const API_GROUP: &str = "windlass.dev";

/// Compares a presented bearer token with the configured one through their SHA-256 digests in
/// constant time: the time taken depends on neither the tokens' content nor their lengths.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    presented.as_slice().ct_eq(expected.as_slice()).into()
}

/// A Kubernetes user as a TokenReview reports it and a SubjectAccessReview takes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Presented the static token: may do anything the controller may.
    StaticToken,
    Kubernetes(Identity),
}

impl Caller {
    /// The rate limiter's key for this caller.
    pub fn rate_key(&self) -> String {
        match self {
            Caller::StaticToken => "token:static".to_owned(),
            Caller::Kubernetes(identity) => format!("user:{}", identity.username),
        }
    }
}

/// One RBAC check: may the caller `verb` `resource[/subresource]` (named `name`) in `namespace`?
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    pub verb: &'static str,
    pub resource: &'static str,
    pub subresource: Option<&'static str>,
    pub namespace: String,
    pub name: Option<String>,
}

impl Permission {
    /// `resource` or `resource/subresource`, as RBAC rules spell it.
    pub fn resource_path(&self) -> String {
        match self.subresource {
            Some(subresource) => format!("{}/{subresource}", self.resource),
            None => self.resource.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("TokenReview failed: {0}")]
    TokenReview(kube::Error),
    #[error("SubjectAccessReview failed: {0}")]
    AccessReview(kube::Error),
}

/// Answers who a token belongs to and what they may do.
pub trait Authority: Send + Sync + 'static {
    /// The token's user, or `None` when the token is not valid.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>>;
    fn allows<'a>(
        &'a self,
        identity: &'a Identity,
        permission: &'a Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// The API server's answers: TokenReview and SubjectAccessReview.
pub struct KubernetesAuthority {
    pub client: kube::Client,
}

impl Authority for KubernetesAuthority {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_owned(),
                    audiences: None,
                },
                ..Default::default()
            };
            let reviewed = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(AuthError::TokenReview)?;
            let status = reviewed.status.unwrap_or_default();
            Ok(status
                .authenticated
                .unwrap_or(false)
                .then(|| status.user.unwrap_or_default())
                .and_then(|user| {
                    Some(Identity {
                        username: user.username.filter(|name| !name.is_empty())?,
                        uid: user.uid,
                        groups: user.groups.unwrap_or_default(),
                        extra: user.extra.unwrap_or_default().into_iter().collect(),
                    })
                }))
        })
    }

    fn allows<'a>(
        &'a self,
        identity: &'a Identity,
        permission: &'a Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(identity.username.clone()),
                    uid: identity.uid.clone(),
                    groups: Some(identity.groups.clone()),
                    extra: Some(identity.extra.clone().into_iter().collect()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(API_GROUP.to_owned()),
                        resource: Some(permission.resource.to_owned()),
                        subresource: permission.subresource.map(str::to_owned),
                        verb: Some(permission.verb.to_owned()),
                        namespace: Some(permission.namespace.clone()),
                        name: permission.name.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(AuthError::AccessReview)?;
            Ok(reviewed.status.is_some_and(|status| status.allowed))
        })
    }
}

/// Another authority's answers, reused for [`REVIEW_TTL`]. Tokens are kept as SHA-256 digests;
/// a rejected token is not cached (rejections are rate limited per remote address instead).
pub struct CachedAuthority<A> {
    inner: A,
    identities: TtlCache<[u8; 32], Identity>,
    decisions: TtlCache<(Identity, Permission), bool>,
}

impl<A: Authority> CachedAuthority<A> {
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            identities: TtlCache::default(),
            decisions: TtlCache::default(),
        }
    }
}

impl<A: Authority> Authority for CachedAuthority<A> {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(identity) = self.identities.get(&digest) {
                return Ok(Some(identity));
            }
            let identity = self.inner.review(token).await?;
            if let Some(identity) = &identity {
                self.identities.insert(digest, identity.clone());
            }
            Ok(identity)
        })
    }

    fn allows<'a>(
        &'a self,
        identity: &'a Identity,
        permission: &'a Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let key = (identity.clone(), permission.clone());
            if let Some(allowed) = self.decisions.get(&key) {
                return Ok(allowed);
            }
            let allowed = self.inner.allows(identity, permission).await?;
            self.decisions.insert(key, allowed);
            Ok(allowed)
        })
    }
}

/// A bounded map whose entries expire [`REVIEW_TTL`] after insertion.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().expect("cache lock is never poisoned");
        entries
            .get(key)
            .filter(|(stored, _)| stored.elapsed() < REVIEW_TTL)
            .map(|(_, value)| value.clone())
    }

    fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("cache lock is never poisoned");
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (stored, _)| stored.elapsed() < REVIEW_TTL);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// How the jobs API authenticates: either way or both. A token equal to the static one is
/// accepted without asking the API server; any other goes to the TokenReview.
#[derive(Clone, Default)]
pub struct Authentication {
    pub static_token: Option<String>,
    pub kubernetes: Option<Arc<dyn Authority>>,
}

impl Authentication {
    pub fn is_enabled(&self) -> bool {
        self.static_token.is_some() || self.kubernetes.is_some()
    }

    /// The caller presenting `token`, `None` if no mode accepts it.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Caller>, AuthError> {
        if self
            .static_token
            .as_deref()
            .is_some_and(|expected| token_matches(token, expected))
        {
            return Ok(Some(Caller::StaticToken));
        }
        match &self.kubernetes {
            Some(authority) => Ok(authority.review(token).await?.map(Caller::Kubernetes)),
            None => Ok(None),
        }
    }

    /// Whether `caller` holds `permission`; the static token holds every one.
    pub async fn authorize(
        &self,
        caller: &Caller,
        permission: &Permission,
    ) -> Result<bool, AuthError> {
        match (caller, &self.kubernetes) {
            (Caller::StaticToken, _) => Ok(true),
            (Caller::Kubernetes(identity), Some(authority)) => {
                authority.allows(identity, permission).await
            }
            (Caller::Kubernetes(_), None) => Ok(false),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cres", "s3cret"));
        assert!(!token_matches("s3cret-longer", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    /// Knows one token per user and grants `create scaledjobs/jobs` in each user's own
    /// namespace only; counts the questions it is asked.
    #[derive(Default)]
    pub(crate) struct FakeAuthority {
        pub reviews: AtomicUsize,
        pub decisions: AtomicUsize,
    }

    /// `token-<ns>` belongs to `system:serviceaccount:<ns>:submitter`.
    pub(crate) fn user_of(namespace: &str) -> Identity {
        Identity {
            username: format!("system:serviceaccount:{namespace}:submitter"),
            uid: None,
            groups: vec!["system:serviceaccounts".into()],
            extra: BTreeMap::new(),
        }
    }

    impl Authority for FakeAuthority {
        fn review<'a>(
            &'a self,
            token: &'a str,
        ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
            self.reviews.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(token.strip_prefix("token-").map(user_of)) })
        }

        fn allows<'a>(
            &'a self,
            identity: &'a Identity,
            permission: &'a Permission,
        ) -> BoxFuture<'a, Result<bool, AuthError>> {
            self.decisions.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(*identity == user_of(&permission.namespace)) })
        }
    }

    fn submit_in(namespace: &str) -> Permission {
        Permission {
            verb: "create",
            resource: "scaledjobs",
            subresource: Some("jobs"),
            namespace: namespace.into(),
            name: Some("data-processor".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reviews_are_reused_for_the_ttl_and_asked_again_after() {
        let cached = CachedAuthority::new(FakeAuthority::default());
        for _ in 0..5 {
            assert_eq!(cached.review("token-a").await.unwrap(), Some(user_of("a")));
            assert!(cached.allows(&user_of("a"), &submit_in("a")).await.unwrap());
            assert!(!cached.allows(&user_of("a"), &submit_in("b")).await.unwrap());
        }
        assert_eq!(cached.inner.reviews.load(Ordering::SeqCst), 1);
        assert_eq!(cached.inner.decisions.load(Ordering::SeqCst), 2);

        // Rejections are not cached.
        assert_eq!(cached.review("bogus").await.unwrap(), None);
        assert_eq!(cached.review("bogus").await.unwrap(), None);
        assert_eq!(cached.inner.reviews.load(Ordering::SeqCst), 3);

        tokio::time::advance(REVIEW_TTL).await;
        cached.review("token-a").await.unwrap();
        cached.allows(&user_of("a"), &submit_in("a")).await.unwrap();
        assert_eq!(cached.inner.reviews.load(Ordering::SeqCst), 4);
        assert_eq!(cached.inner.decisions.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_static_token_wins_without_a_review_and_holds_every_permission() {
        let authority = Arc::new(FakeAuthority::default());
        let both = Authentication {
            static_token: Some("s3cret".into()),
            kubernetes: Some(authority.clone()),
        };
        assert_eq!(
            both.authenticate("s3cret").await.unwrap(),
            Some(Caller::StaticToken)
        );
        assert_eq!(authority.reviews.load(Ordering::SeqCst), 0);
        assert!(
            both.authorize(&Caller::StaticToken, &submit_in("b"))
                .await
                .unwrap()
        );
        assert_eq!(
            both.authenticate("token-a").await.unwrap(),
            Some(Caller::Kubernetes(user_of("a")))
        );
        assert_eq!(both.authenticate("nope").await.unwrap(), None);

        let static_only = Authentication {
            static_token: Some("s3cret".into()),
            kubernetes: None,
        };
        assert_eq!(static_only.authenticate("token-a").await.unwrap(), None);
        assert!(
            !static_only
                .authorize(&Caller::Kubernetes(user_of("a")), &submit_in("a"))
                .await
                .unwrap()
        );
    }
}
