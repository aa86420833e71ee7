//! The NodeClaim controller: each NodeClaim of this install goes through its lifecycle stages
//! (launch, registration, initialization), is given up when it misses a deadline or its Node is
//! deleted, and on deletion its termination finalizer runs termination. The Node gets the same
//! finalizer: deleting either the NodeClaim or its Node terminates the instance, then removes
//! the Node, then lets the NodeClaim go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::consolidatable::{self, PodsSeen};
use super::disrupting;
use super::drift;
use super::initialization::initialize;
use super::launch::{Launch, launch};
use super::liveness::missed_deadline;
use super::registration::register;
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{CLUSTER_LABEL, NODEPOOL_LABEL, TERMINATION_FINALIZER};
use crate::apis::node_claim::{NodeClaim, NodeClaimStatus};
use crate::cloud::{CloudError, CloudProvider, Instance};
use crate::events::Recorder;
use crate::failpoints;
use crate::metrics::{Metrics, PoolLabels};
use crate::state::ClusterState;
use crate::status::apply_status;
use crate::termination::{self, Drain};

/// How soon a drain looks at its pods again.
const DRAIN_RETRY: Duration = Duration::from_secs(1);

pub struct NodeClaims<C> {
    pub client: kube::Client,
    /// For the Eviction API only: it does not retry a 429 itself.
    pub evictions: kube::Client,
    /// Nodes are read from here, not listed.
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub cloud: Arc<C>,
    pub cluster: String,
    /// The pods last seen on each NodeClaim's node, for `lastPodEventTime`.
    pub pods_seen: std::sync::Mutex<PodsSeen>,
    /// This install's instances as garbage collection last listed them, by providerID: drift
    /// reads their subnets and security groups without a call of its own.
    pub instances: std::sync::RwLock<HashMap<String, Instance>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Termination(#[from] termination::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Runs the controller until `shutdown`.
pub async fn run<C: CloudProvider>(context: Arc<NodeClaims<C>>, shutdown: CancellationToken) {
    let api: Api<NodeClaim> = Api::all(context.client.clone());
    let config = watcher::Config::default().labels(&format!("{CLUSTER_LABEL}={}", context.cluster));
    let adopting = adopt_unlabelled(context.clone(), shutdown.clone());
    let collecting = super::garbage_collection::run(context.clone(), shutdown.clone());
    let controller = Controller::new(api, config);
    // A Node registering is its claim's cue: registration lifts the unregistered taint that
    // holds every pod off the Node, so it runs at once rather than at the claim's next requeue.
    // The cue comes from the store registration reads, once that store holds the Node.
    let claims = controller.store();
    let registering = context
        .state
        .registering_nodes()
        .filter_map(move |provider_id| {
            let claim = claims.find(|claim| {
                claim.status.as_ref().and_then(|s| s.provider_id.as_deref())
                    == Some(provider_id.as_str())
            });
            futures::future::ready(claim.map(|claim| ObjectRef::from_obj(claim.as_ref())))
        });
    let controller = controller
        .reconcile_on(registering)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()));
    futures::join!(adopting, collecting, controller);
}

/// A NodeClaim applied by hand carries no cluster label: the first install to see it labels it
/// as its own and launches it. The patch is guarded by the claim's resourceVersion, so when
/// several installs share the API server exactly one of them wins.
async fn adopt_unlabelled<C>(context: Arc<NodeClaims<C>>, shutdown: CancellationToken) {
    let api: Api<NodeClaim> = Api::all(context.client.clone());
    let config = watcher::Config::default().labels(&format!("!{CLUSTER_LABEL}"));
    let mut unlabelled = std::pin::pin!(
        watcher(api.clone(), config)
            .default_backoff()
            .applied_objects()
            .take_until(shutdown.cancelled_owned())
    );
    while let Some(claim) = unlabelled.next().await {
        let Ok(claim) = claim else { continue };
        let patch = json!({"metadata": {
            "resourceVersion": claim.resource_version(),
            "labels": {CLUSTER_LABEL: context.cluster},
        }});
        match api
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => info!(nodeclaim = %claim.name_any(), "adopted a NodeClaim made by hand"),
            Err(kube::Error::Api(response)) if response.code == 409 || response.code == 404 => {}
            Err(error) => {
                warn!(nodeclaim = %claim.name_any(), %error, "adopting a NodeClaim failed")
            }
        }
    }
}

fn error_policy<C>(object: Arc<NodeClaim>, error: &Error, _: Arc<NodeClaims<C>>) -> Action {
    warn!(name = %object.name_any(), %error, "NodeClaim reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile<C: CloudProvider>(
    object: Arc<NodeClaim>,
    context: Arc<NodeClaims<C>>,
) -> Result<Action, Error> {
    let api: Api<NodeClaim> = Api::all(context.client.clone());
    // A deleted NodeClaim's Node is drained before the finalizer's cleanup terminates the
    // instance; the finalizer helper would let the claim go as soon as cleanup returns.
    if object.metadata.deletion_timestamp.is_some()
        && object
            .finalizers()
            .iter()
            .any(|f| f == TERMINATION_FINALIZER)
    {
        let previous = object.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        disrupting::mark(&mut status, &object, Timestamp::now());
        if status != previous {
            write_status(&context, &object, &status).await?;
        }
        let drain = termination::drain(
            &context.client,
            &context.evictions,
            &context.state,
            &object,
            Timestamp::now(),
        )
        .await?;
        if let Drain::Draining { waiting, refused } = drain {
            if !refused.is_empty() {
                let note = format!(
                    "{waiting} pods still on the node; a PodDisruptionBudget refused evicting {}",
                    refused.join(", ")
                );
                crate::events::publish(
                    &context.recorder,
                    object.as_ref(),
                    EventType::Warning,
                    "FailedDraining",
                    note,
                    "Drain",
                )
                .await;
            }
            return Ok(Action::requeue(DRAIN_RETRY));
        }
    }
    finalizer(&api, TERMINATION_FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(claim) => apply(&context, &claim).await,
            Finalizer::Cleanup(claim) => {
                termination::terminate(&context.client, &*context.cloud, &context.state, &claim)
                    .await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .or_else(|e| match e {
        // A reconcile from a store that had not yet seen the claim go: it is already gone.
        kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
            if status.code == 404 =>
        {
            Ok(Action::await_change())
        }
        e => Err(Error::Finalizer(Box::new(e))),
    })
}

async fn apply<C: CloudProvider>(
    context: &NodeClaims<C>,
    claim: &NodeClaim,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    let previous = claim.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    if let Some(why) = missed_deadline(claim, now) {
        let note = format!("deleting the NodeClaim: {why}");
        return delete_claim(context, claim, EventType::Warning, "Expired", note).await;
    }
    let node = status
        .provider_id
        .as_deref()
        .and_then(|provider| context.state.node_by_provider_id(provider));
    if let Some(node) = node
        .as_ref()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
    {
        // Someone deleted the claim's Node: the NodeClaim goes too, and its finalizer
        // terminates the instance before it lets the Node go.
        let note = format!(
            "Node {} was deleted; deleting its NodeClaim",
            node.name_any()
        );
        return delete_claim(context, claim, EventType::Normal, "NodeDeleted", note).await;
    }
    let requeue = if status.provider_id.is_none() {
        launch_claim(context, claim, &mut status, now).await?
    } else if status.node_name.is_none() {
        register(&context.client, claim, &mut status, node.as_deref(), now)
            .await
            .map_err(Error::Kube)?
    } else {
        let action = initialize(claim, &mut status, node.as_deref(), now);
        if let Some(node) = &node {
            drift::mark(&mut status, claim, drifted(context, claim, node), now);
            let pods = context.state.pods_on(&node.name_any());
            let mut seen = context.pods_seen.lock().expect("pods seen lock");
            consolidatable::observe(&mut seen, claim, &pods, &mut status, now);
            let pool = claim
                .labels()
                .get(NODEPOOL_LABEL)
                .and_then(|name| context.state.node_pool(name));
            consolidatable::mark(&mut status, claim, pool.as_deref(), now);
        }
        action
    };
    disrupting::mark(&mut status, claim, now);
    if status != previous {
        write_status(context, claim, &status).await?;
    }
    Ok(requeue)
}

/// How the claim has drifted from its NodePool and EC2NodeClass, as the stores show them; not
/// at all while its pool is gone (deleting the pool deletes the claim).
fn drifted<C>(context: &NodeClaims<C>, claim: &NodeClaim, node: &Node) -> Option<drift::Drift> {
    let pool = context
        .state
        .node_pool(claim.labels().get(NODEPOOL_LABEL)?)?;
    let class = context.state.node_class(&claim.spec.node_class_ref.name);
    let instances = context.instances.read().expect("instances lock");
    let instance = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.as_ref())
        .and_then(|id| instances.get(id));
    drift::drift(claim, node.labels(), instance, &pool, class.as_deref())
}

async fn launch_claim<C: CloudProvider>(
    context: &NodeClaims<C>,
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    now: Timestamp,
) -> Result<Action, Error> {
    let name = claim.name_any();
    // The cache can lag our own status write: a claim whose instance is already recorded is
    // not launched again.
    let fresh = Api::<NodeClaim>::all(context.client.clone())
        .get(&name)
        .await
        .map_err(Error::Kube)?;
    if fresh
        .status
        .as_ref()
        .is_some_and(|s| s.provider_id.is_some())
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let class = Api::<EC2NodeClass>::all(context.client.clone())
        .get_opt(&claim.spec.node_class_ref.name)
        .await
        .map_err(Error::Kube)?;
    let labels = match launch(&*context.cloud, claim, class.as_ref(), status, now).await? {
        Launch::Launched { labels } => labels,
        Launch::NotLaunched { retry, warning } => {
            if let Some(note) = warning {
                crate::events::publish(
                    &context.recorder,
                    claim,
                    EventType::Warning,
                    "LaunchFailed",
                    note,
                    "Launch",
                )
                .await;
                context
                    .metrics
                    .nodeclaims_launch_failures
                    .get_or_create(&pool_labels(claim))
                    .inc();
            }
            return Ok(Action::requeue(retry));
        }
    };
    info!(nodeclaim = %name, provider_id = ?status.provider_id, "launched");
    failpoints::reached(failpoints::LAUNCHED_BEFORE_STATUS);
    // The providerID is recorded before anything else, so no later pass launches again.
    write_status(context, claim, status).await?;
    context
        .metrics
        .nodeclaims_launched
        .get_or_create(&pool_labels(claim))
        .inc();
    let labels = json!({"metadata": {"labels": labels}});
    Api::<NodeClaim>::all(context.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .map_err(Error::Kube)?;
    Ok(Action::requeue(Duration::from_secs(2)))
}

fn pool_labels(claim: &NodeClaim) -> PoolLabels {
    PoolLabels {
        nodepool: claim
            .labels()
            .get(NODEPOOL_LABEL)
            .cloned()
            .unwrap_or_default(),
    }
}

async fn delete_claim<C>(
    context: &NodeClaims<C>,
    claim: &NodeClaim,
    type_: EventType,
    reason: &str,
    note: String,
) -> Result<Action, Error> {
    crate::events::publish(&context.recorder, claim, type_, reason, note, "Terminate").await;
    Api::<NodeClaim>::all(context.client.clone())
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
        .map_err(Error::Kube)?;
    Ok(Action::await_change())
}

async fn write_status<C>(
    context: &NodeClaims<C>,
    claim: &NodeClaim,
    status: &NodeClaimStatus,
) -> Result<(), Error> {
    apply_status(
        &Api::<NodeClaim>::all(context.client.clone()),
        &claim.name_any(),
        status,
        None,
    )
    .await
    .map(drop)
    .map_err(Error::Kube)
}
