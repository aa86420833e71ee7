//! The TriggerAuthentication controller: Ready says whether the authentication can be used, as
//! far as that can be told before a workload uses it and without calling AWS (`auth::check`):
//! the Secrets and keys it names exist, access keys come in pairs, its pod identity is
//! supported. Secrets are read, not watched (that would cache every Secret of the cluster), so
//! each object is checked on every change and again every minute.
//!
//! Both kinds list their users (`auth_users`): written when a user appears, goes away or its
//! credentials start or stop resolving. A ClusterTriggerAuthentication gets no Ready: each
//! install reads its Secrets from its own namespace, so whether one is usable depends on the
//! install asking. Its users are shared by installs, so each applies the entries of the
//! namespaces it watches under a field manager of its own, and server-side apply keeps the rest.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::auth::{self, AuthError};
use super::auth_users::{AuthKey, Usage};
use super::{Scaling, publish};
use crate::apis::conditions::{self, condition};
use crate::apis::trigger_auth::{
    ClusterTriggerAuthentication, TriggerAuthentication, TriggerAuthenticationStatus,
};
use crate::status::{FIELD_MANAGER, apply_status, apply_status_as};

/// How often an unchanged object's Secrets are read again.
const RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TriggerAuthentication has no namespace")]
    NoNamespace,
    #[error(transparent)]
    Read(AuthError),
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
}

/// Runs the controller until `shutdown`; each wake-up in `users_changed` reconciles every object,
/// and only those whose status differs are written.
pub async fn run(
    scaling: Arc<Scaling>,
    users_changed: UnboundedReceiver<()>,
    shutdown: CancellationToken,
) {
    Controller::new(
        scaling.watched::<TriggerAuthentication>(),
        watcher::Config::default(),
    )
    .reconcile_all_on(coalesced(users_changed))
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, scaling)
    .for_each(|_| futures::future::ready(()))
    .await;
}

/// One wake-up for every burst of changes already queued (many loops set up at start).
fn coalesced(changes: UnboundedReceiver<()>) -> impl futures::Stream<Item = ()> {
    changes.ready_chunks(1024).map(|_| ())
}

fn error_policy(object: Arc<TriggerAuthentication>, error: &Error, _: Arc<Scaling>) -> Action {
    warn!(name = %object.name_any(), %error, "TriggerAuthentication reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(
    object: Arc<TriggerAuthentication>,
    scaling: Arc<Scaling>,
) -> Result<Action, Error> {
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let (values, existing) = auth::read_secrets(&scaling.client, &object.spec, &namespace)
        .await
        .map_err(Error::Read)?;
    let checked = auth::check(&object.spec, &values, &existing, &namespace);
    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let ready = match &checked {
        Ok(()) => condition(
            &previous.conditions,
            conditions::READY,
            true,
            "Checked",
            "the Secrets and keys it names exist and its settings are complete",
            generation,
            Timestamp::now(),
        ),
        Err(error) => condition(
            &previous.conditions,
            conditions::READY,
            false,
            "AuthenticationError",
            error.to_string(),
            generation,
            Timestamp::now(),
        ),
    };
    let key = AuthKey::Namespaced {
        namespace: namespace.clone(),
        name: object.name_any(),
    };
    let usage = Usage::of(
        scaling.auth_users.users_of(&key),
        &previous.users,
        |namespace| scaling.watches(namespace),
        false,
    );
    let status = TriggerAuthenticationStatus {
        observed_generation: generation,
        conditions: vec![ready],
        scaled_objects: usage.scaled_objects,
        scaled_jobs: usage.scaled_jobs,
        users: usage.own,
    };
    if status == previous {
        return Ok(Action::requeue(RECHECK));
    }
    if let Err(error) = &checked {
        let was = previous
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::READY);
        if was.is_none_or(|c| c.message != error.to_string()) {
            publish(
                &scaling,
                object.as_ref(),
                EventType::Warning,
                "AuthenticationError",
                error.to_string(),
            )
            .await;
        }
    }
    let api: Api<TriggerAuthentication> = Api::namespaced(scaling.client.clone(), &namespace);
    apply_status(&api, &object.name_any(), &status, None)
        .await
        .map_err(Error::Status)?;
    Ok(Action::requeue(RECHECK))
}

/// Runs the ClusterTriggerAuthentication controller until `shutdown`: users only.
pub async fn run_cluster(
    scaling: Arc<Scaling>,
    users_changed: UnboundedReceiver<()>,
    shutdown: CancellationToken,
) {
    Controller::new(
        Api::<ClusterTriggerAuthentication>::all(scaling.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(coalesced(users_changed))
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile_cluster, error_policy_cluster, scaling)
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn error_policy_cluster(
    object: Arc<ClusterTriggerAuthentication>,
    error: &Error,
    _: Arc<Scaling>,
) -> Action {
    warn!(name = %object.name_any(), %error, "ClusterTriggerAuthentication reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile_cluster(
    object: Arc<ClusterTriggerAuthentication>,
    scaling: Arc<Scaling>,
) -> Result<Action, Error> {
    let written = object.status.clone().unwrap_or_default();
    let key = AuthKey::Cluster {
        name: object.name_any(),
    };
    let in_scope = |namespace: &str| scaling.watches(namespace);
    let usage = Usage::of(
        scaling.auth_users.users_of(&key),
        &written.users,
        in_scope,
        true,
    );
    if usage.shown_by(
        &written.users,
        &written.scaled_objects,
        &written.scaled_jobs,
        in_scope,
    ) {
        return Ok(Action::await_change());
    }
    let status = TriggerAuthenticationStatus {
        scaled_objects: usage.scaled_objects,
        scaled_jobs: usage.scaled_jobs,
        users: usage.own,
        ..TriggerAuthenticationStatus::default()
    };
    let manager = match &scaling.watch_namespace {
        Some(namespace) => format!("{FIELD_MANAGER}-{namespace}"),
        None => FIELD_MANAGER.to_owned(),
    };
    let api: Api<ClusterTriggerAuthentication> = Api::all(scaling.client.clone());
    apply_status_as(&api, &object.name_any(), &status, None, &manager)
        .await
        .map_err(Error::Status)?;
    Ok(Action::await_change())
}
