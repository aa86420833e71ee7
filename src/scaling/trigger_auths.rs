//! The TriggerAuthentication controller: Ready says whether the authentication can be used, as
//! far as that can be told before a workload uses it and without calling AWS (`auth::check`):
//! the Secrets and keys it names exist, access keys come in pairs, its pod identity is
//! supported. Secrets are read, not watched (that would cache every Secret of the cluster), so
//! each object is checked on every change and again every minute.
//!
//! ClusterTriggerAuthentications get no status: each install reads their Secrets from its own
//! namespace, so whether one is usable depends on the install asking, and installs writing one
//! shared status would overwrite each other's answers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::auth::{self, AuthError};
use super::{Scaling, publish};
use crate::apis::conditions::{self, condition};
use crate::apis::trigger_auth::{TriggerAuthentication, TriggerAuthenticationStatus};
use crate::status::apply_status;

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

/// Runs the controller until `shutdown`.
pub async fn run(scaling: Arc<Scaling>, shutdown: CancellationToken) {
    Controller::new(
        scaling.watched::<TriggerAuthentication>(),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile, error_policy, scaling)
    .for_each(|_| futures::future::ready(()))
    .await;
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
    let status = TriggerAuthenticationStatus {
        observed_generation: generation,
        conditions: vec![ready],
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
