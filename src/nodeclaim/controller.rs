//! The NodeClaim controller: launches an instance for each NodeClaim (one CreateFleet call
//! whose ClientToken is the NodeClaim's UID, so a retry never launches twice), then follows it
//! through Launched → Registered (a Node with its providerID) → Initialized (that Node Ready,
//! startup taints gone). A NodeClaim not launched in 5 minutes, or not registered 15 minutes
//! after launch, is deleted. The Node gets the same termination finalizer: deleting either the
//! NodeClaim or its Node terminates the instance, then removes the Node, then lets the
//! NodeClaim go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::Recorder;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apis::conditions::{READY, condition};
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{
    ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_CPU_LABEL, INSTANCE_FAMILY_LABEL,
    INSTANCE_MEMORY_LABEL, INSTANCE_TYPE_LABEL, OS_LABEL, ZONE_LABEL,
};
use crate::apis::labels::{CLUSTER_LABEL, NODEPOOL_LABEL, REGISTERED_LABEL, TERMINATION_FINALIZER};
use crate::apis::node_claim::{
    CONDITION_INITIALIZED, CONDITION_LAUNCHED, CONDITION_REGISTERED, NodeClaim, NodeClaimStatus,
};
use crate::aws::capacity::{UnavailableOfferings, is_insufficient_capacity};
use crate::aws::launch::{LaunchInput, fleet_request};
use crate::aws::{Aws, CloudError, FleetOutcome};
use crate::aws::{instance_id, provider_id};
use crate::metrics::{Metrics, PoolLabels};
use crate::scheduling::requirements::Requirements;
use crate::state::ClusterState;
use crate::status::apply_status;
use crate::status::is_true;

const LAUNCH_TIMEOUT: SignedDuration = SignedDuration::from_secs(300);
const REGISTRATION_TIMEOUT: SignedDuration = SignedDuration::from_secs(900);
/// How often an initialized NodeClaim checks on its Node.
const NODE_CHECK: Duration = Duration::from_secs(10);

pub struct NodeClaims {
    pub client: kube::Client,
    /// Nodes are read from here, not listed.
    pub state: Arc<ClusterState>,
    pub metrics: Arc<Metrics>,
    /// Offerings that recently ran out of capacity, shared with the provisioner.
    pub unavailable: Arc<Mutex<UnavailableOfferings>>,
    pub recorder: Recorder,
    pub aws: Aws,
    pub cluster: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Runs the controller until `shutdown`.
pub async fn run(context: Arc<NodeClaims>, shutdown: CancellationToken) {
    let api: Api<NodeClaim> = Api::all(context.client.clone());
    let config = watcher::Config::default().labels(&format!("{CLUSTER_LABEL}={}", context.cluster));
    let adopting = adopt_unlabelled(context.clone(), shutdown.clone());
    let controller = Controller::new(api, config)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()));
    futures::join!(adopting, controller);
}

/// A NodeClaim applied by hand carries no cluster label: the first install to see it labels it
/// as its own and launches it. The patch is guarded by the claim's resourceVersion, so when
/// several installs share the API server exactly one of them wins.
async fn adopt_unlabelled(context: Arc<NodeClaims>, shutdown: CancellationToken) {
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

fn error_policy(object: Arc<NodeClaim>, error: &Error, _: Arc<NodeClaims>) -> Action {
    warn!(name = %object.name_any(), %error, "NodeClaim reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(object: Arc<NodeClaim>, context: Arc<NodeClaims>) -> Result<Action, Error> {
    let api: Api<NodeClaim> = Api::all(context.client.clone());
    finalizer(&api, TERMINATION_FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(claim) => apply(&context, &claim).await,
            Finalizer::Cleanup(claim) => cleanup(&context, &claim).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(context: &NodeClaims, claim: &NodeClaim) -> Result<Action, Error> {
    let now = Timestamp::now();
    let previous = claim.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    if let Some(why) = missed_deadline(claim, now) {
        return expire(context, claim, why).await;
    }
    let node = status
        .provider_id
        .as_deref()
        .and_then(|provider| context.state.node_by_provider_id(provider));
    if let Some(node) = node
        .as_ref()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
    {
        return node_deleted(context, claim, node).await;
    }
    let requeue = if status.provider_id.is_none() {
        launch(context, claim, &mut status, now).await?
    } else if status.node_name.is_none() {
        register(context, claim, &mut status, node.as_deref(), now).await?
    } else {
        initialize(claim, &mut status, node.as_deref(), now)
    };
    if status != previous {
        write_status(context, claim, &status).await?;
    }
    Ok(requeue)
}

/// Why the NodeClaim is past its launch or registration deadline, if it is.
fn missed_deadline(claim: &NodeClaim, now: Timestamp) -> Option<&'static str> {
    let status = claim.status.clone().unwrap_or_default();
    if status.provider_id.is_none() {
        let created = claim.metadata.creation_timestamp.as_ref()?.0;
        return (now.duration_since(created) > LAUNCH_TIMEOUT)
            .then_some("not launched within 5 minutes");
    }
    if status.node_name.is_none() {
        let launched = condition_time(&status, CONDITION_LAUNCHED)?;
        return (now.duration_since(launched) > REGISTRATION_TIMEOUT)
            .then_some("no Node registered within 15 minutes of launch");
    }
    None
}

fn condition_time(status: &NodeClaimStatus, type_: &str) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

fn set(
    status: &mut NodeClaimStatus,
    claim: &NodeClaim,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let new = condition(
        &status.conditions,
        type_,
        ok,
        reason,
        message,
        claim.metadata.generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(new);
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

async fn launch(
    context: &NodeClaims,
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    now: Timestamp,
) -> Result<Action, Error> {
    let classes: Api<EC2NodeClass> = Api::all(context.client.clone());
    let class_name = &claim.spec.node_class_ref.name;
    let class = classes.get_opt(class_name).await.map_err(Error::Kube)?;
    let Some((class, class_status)) = class
        .and_then(|c| c.status.clone().map(|s| (c, s)))
        .filter(|(_, s)| is_true(&s.conditions, READY))
    else {
        set(
            status,
            claim,
            CONDITION_LAUNCHED,
            false,
            "NodeClassNotReady",
            format!("EC2NodeClass {class_name} is missing or not Ready"),
            now,
        );
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let mut requirements = Requirements::default();
    for requirement in &claim.spec.requirements {
        requirements.add(
            &requirement.key,
            crate::scheduling::requirements::Requirement::new(
                requirement.operator,
                &requirement.values,
            ),
        );
    }
    let candidates: Vec<String> = requirements
        .get(INSTANCE_TYPE_LABEL)
        .and_then(|r| r.finite_values())
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default();
    let shapes = context.aws.shapes(&candidates).await?;
    let architectures: BTreeMap<String, &'static str> = shapes
        .iter()
        .map(|(name, (_, arch))| (name.clone(), *arch))
        .collect();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = claim.name_any();
    let request = match fleet_request(&LaunchInput {
        cluster: &context.cluster,
        node_class: class_name,
        claim_name: &name,
        claim_uid: &uid,
        requirements: &requirements,
        labels: claim.labels(),
        spec: &class.spec,
        status: &class_status,
        architectures: &architectures,
        unavailable: &|capacity_type, instance_type, zone| {
            context
                .unavailable
                .lock()
                .expect("the offerings lock is never poisoned")
                .is_unavailable(
                    capacity_type,
                    instance_type,
                    zone,
                    std::time::Instant::now(),
                )
        },
    }) {
        Ok(request) => request,
        Err(reason) => {
            set(
                status,
                claim,
                CONDITION_LAUNCHED,
                false,
                "NoLaunchOption",
                reason.to_string(),
                now,
            );
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    for config in &request.configs {
        context.aws.ensure_launch_template(config).await?;
    }
    // The cache can lag our own status write, and a crash can come between CreateFleet and
    // that write: an instance already launched for this NodeClaim is adopted, not launched again.
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
    let outcome = match context
        .aws
        .instance_for_claim(&context.cluster, &name)
        .await?
    {
        Some(instance) => FleetOutcome {
            instance: Some(instance),
            errors: Vec::new(),
        },
        None => context.aws.create_fleet(&request).await?,
    };
    // Offerings EC2 reported out of capacity are left out for a while, whether or not
    // another offering launched.
    let zone_of = |subnet: &str| {
        class_status
            .subnets
            .iter()
            .find(|s| s.id == subnet)
            .map(|s| s.zone.clone())
    };
    {
        let mut unavailable = context
            .unavailable
            .lock()
            .expect("the offerings lock is never poisoned");
        for error in outcome
            .errors
            .iter()
            .filter(|e| is_insufficient_capacity(&e.code))
        {
            if let (Some(instance_type), Some(zone)) = (
                &error.instance_type,
                error.subnet.as_deref().and_then(zone_of),
            ) {
                unavailable.mark(
                    request.capacity_type,
                    instance_type,
                    &zone,
                    std::time::Instant::now(),
                );
            }
        }
    }
    let Some(instance) = outcome.instance else {
        let codes: Vec<String> = outcome
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        let message = format!(
            "CreateFleet launched nothing ({}): {}",
            request.capacity_type,
            codes.join("; ")
        );
        publish(context, claim, "LaunchFailed", &message).await;
        context
            .metrics
            .nodeclaims_launch_failures
            .get_or_create(&pool_labels(claim))
            .inc();
        set(
            status,
            claim,
            CONDITION_LAUNCHED,
            false,
            "LaunchFailed",
            message,
            now,
        );
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    info!(nodeclaim = %name, instance = %instance.id, instance_type = %instance.instance_type, zone = %instance.zone, "launched");
    if let Some((shape, _)) = shapes.get(&instance.instance_type) {
        let quantities = |r: crate::scheduling::resources::Resources| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(format!("{}m", r.cpu))),
                ("memory".to_owned(), Quantity(r.memory.to_string())),
                ("pods".to_owned(), Quantity(r.pods.to_string())),
            ])
        };
        status.capacity = quantities(shape.capacity());
        status.allocatable = quantities(shape.allocatable());
    }
    status.provider_id = Some(provider_id(&instance.zone, &instance.id));
    status.image_id = instance.image_id;
    set(
        status,
        claim,
        CONDITION_LAUNCHED,
        true,
        "Launched",
        format!("instance {} ({})", instance.id, instance.instance_type),
        now,
    );
    // The providerID is recorded before anything else, so no later pass launches again.
    write_status(context, claim, status).await?;
    context
        .metrics
        .nodeclaims_launched
        .get_or_create(&pool_labels(claim))
        .inc();
    let mut labels = BTreeMap::from([
        (
            INSTANCE_TYPE_LABEL.to_owned(),
            instance.instance_type.clone(),
        ),
        (ZONE_LABEL.to_owned(), instance.zone.clone()),
        (
            CAPACITY_TYPE_LABEL.to_owned(),
            request.capacity_type.to_owned(),
        ),
        (OS_LABEL.to_owned(), "linux".to_owned()),
    ]);
    if let Some((shape, arch)) = shapes.get(&instance.instance_type) {
        labels.insert(ARCH_LABEL.to_owned(), (*arch).to_owned());
        let family = instance.instance_type.split('.').next().unwrap_or_default();
        labels.insert(INSTANCE_FAMILY_LABEL.to_owned(), family.to_owned());
        labels.insert(INSTANCE_CPU_LABEL.to_owned(), shape.vcpus.to_string());
        labels.insert(
            INSTANCE_MEMORY_LABEL.to_owned(),
            shape.memory_mib.to_string(),
        );
    }
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

/// `node` is the Node with the claim's providerID, if there is one yet.
async fn register(
    context: &NodeClaims,
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    node: Option<&Node>,
    now: Timestamp,
) -> Result<Action, Error> {
    let provider = status.provider_id.clone().unwrap_or_default();
    let Some(node) = node else {
        set(
            status,
            claim,
            CONDITION_REGISTERED,
            false,
            "AwaitingNode",
            format!("no Node with providerID {provider} yet"),
            now,
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    sync_node(context, claim, node).await?;
    status.node_name = node.metadata.name.clone();
    set(
        status,
        claim,
        CONDITION_REGISTERED,
        true,
        "Registered",
        format!("Node {}", node.name_any()),
        now,
    );
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Gives the Node its NodeClaim's labels and taints (startup taints included), whatever the
/// kubelet registered with, marks it registered, and puts the termination finalizer on it, so
/// deleting the Node terminates its instance first. The patch carries the resourceVersion: a
/// concurrent change to the taint or finalizer lists fails it instead of being overwritten.
async fn sync_node(context: &NodeClaims, claim: &NodeClaim, node: &Node) -> Result<(), Error> {
    let mut labels: BTreeMap<String, String> = claim
        .labels()
        .iter()
        .filter(|(key, _)| key.as_str() != CLUSTER_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(REGISTERED_LABEL.to_owned(), "true".to_owned());
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    for wanted in claim.spec.taints.iter().chain(&claim.spec.startup_taints) {
        if !taints
            .iter()
            .any(|t| t.key == wanted.key && t.effect == wanted.effect)
        {
            taints.push(wanted.clone());
        }
    }
    let mut finalizers = node.finalizers().to_vec();
    if !finalizers.iter().any(|f| f == TERMINATION_FINALIZER) {
        finalizers.push(TERMINATION_FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {"labels": labels, "finalizers": finalizers, "resourceVersion": node.resource_version()},
        "spec": {"taints": taints}
    });
    Api::<Node>::all(context.client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
        .map_err(Error::Kube)
}

fn initialize(
    claim: &NodeClaim,
    status: &mut NodeClaimStatus,
    node: Option<&Node>,
    now: Timestamp,
) -> Action {
    let provider = status.provider_id.clone().unwrap_or_default();
    let Some(node) = node else {
        set(
            status,
            claim,
            READY,
            false,
            "NodeGone",
            format!("the Node with providerID {provider} is gone"),
            now,
        );
        return Action::requeue(Duration::from_secs(10));
    };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let node_taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let startup_left = claim.spec.startup_taints.iter().any(|t| {
        node_taints
            .iter()
            .any(|n| n.key == t.key && n.effect == t.effect)
    });
    let initialized = ready && !startup_left;
    let message = match (ready, startup_left) {
        (false, _) => "the Node is not Ready".to_owned(),
        (true, true) => "startup taints are still on the Node".to_owned(),
        (true, false) => format!("Node {} is Ready", node.name_any()),
    };
    set(
        status,
        claim,
        CONDITION_INITIALIZED,
        initialized,
        if initialized {
            "Initialized"
        } else {
            "NotInitialized"
        },
        message.clone(),
        now,
    );
    set(
        status,
        claim,
        READY,
        initialized,
        if initialized { "Ready" } else { "NotReady" },
        message,
        now,
    );
    // Nodes are not watched here: an initialized claim looks at its Node (in memory) now and
    // then, to see it deleted.
    if initialized {
        Action::requeue(NODE_CHECK)
    } else {
        Action::requeue(Duration::from_secs(2))
    }
}

/// Deletes a NodeClaim that missed a deadline; the finalizer terminates what it launched.
async fn expire(context: &NodeClaims, claim: &NodeClaim, why: &str) -> Result<Action, Error> {
    let note = format!("deleting the NodeClaim: {why}");
    delete_claim(context, claim, EventType::Warning, "Expired", note).await
}

/// Someone deleted the claim's Node: the NodeClaim goes too, and its finalizer terminates the
/// instance before it lets the Node go.
async fn node_deleted(
    context: &NodeClaims,
    claim: &NodeClaim,
    node: &Node,
) -> Result<Action, Error> {
    let note = format!(
        "Node {} was deleted; deleting its NodeClaim",
        node.name_any()
    );
    delete_claim(context, claim, EventType::Normal, "NodeDeleted", note).await
}

async fn delete_claim(
    context: &NodeClaims,
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

/// Terminates the instance, then deletes the Node and takes the finalizer off it.
async fn cleanup(context: &NodeClaims, claim: &NodeClaim) -> Result<Action, Error> {
    let status = claim.status.clone().unwrap_or_default();
    if let Some(id) = status.provider_id.as_deref().and_then(instance_id) {
        context.aws.terminate(id).await?;
        info!(nodeclaim = %claim.name_any(), instance = %id, "terminated");
    }
    let node_name = status.node_name.clone().or_else(|| {
        let provider = status.provider_id.as_deref()?;
        context
            .state
            .node_by_provider_id(provider)
            .map(|n| n.name_any())
    });
    if let Some(node) = node_name {
        release_node(context, &node).await?;
    }
    Ok(Action::await_change())
}

/// Takes the termination finalizer off the Node and deletes it.
async fn release_node(context: &NodeClaims, name: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(context.client.clone());
    let Some(node) = nodes.get_opt(name).await.map_err(Error::Kube)? else {
        return Ok(());
    };
    let ignore_gone = |result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other.map_err(Error::Kube),
    };
    if node.finalizers().iter().any(|f| f == TERMINATION_FINALIZER) {
        let finalizers: Vec<&String> = node
            .finalizers()
            .iter()
            .filter(|f| *f != TERMINATION_FINALIZER)
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
        ignore_gone(
            nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop),
        )?;
    }
    ignore_gone(nodes.delete(name, &DeleteParams::default()).await.map(drop))
}

async fn write_status(
    context: &NodeClaims,
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

async fn publish(context: &NodeClaims, claim: &NodeClaim, reason: &str, note: &str) {
    crate::events::publish(
        &context.recorder,
        claim,
        EventType::Warning,
        reason,
        note.to_owned(),
        "Launch",
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(status: serde_json::Value) -> NodeClaim {
        serde_json::from_value(json!({
            "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
            "metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                     "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
            "status": status
        }))
        .unwrap()
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    #[test]
    fn unlaunched_claims_expire_five_minutes_after_creation() {
        let pending = claim(json!({}));
        assert_eq!(missed_deadline(&pending, at("2026-01-01T00:05:00Z")), None);
        assert_eq!(
            missed_deadline(&pending, at("2026-01-01T00:05:01Z")),
            Some("not launched within 5 minutes")
        );
    }

    #[test]
    fn unregistered_claims_expire_fifteen_minutes_after_launch() {
        let launched = claim(json!({
            "providerID": "aws:///z/i-1",
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                            "lastTransitionTime": "2026-01-01T00:04:00Z"}]
        }));
        assert_eq!(missed_deadline(&launched, at("2026-01-01T00:19:00Z")), None);
        assert_eq!(
            missed_deadline(&launched, at("2026-01-01T00:19:01Z")),
            Some("no Node registered within 15 minutes of launch")
        );
        let registered = claim(json!({
            "providerID": "aws:///z/i-1", "nodeName": "n",
            "conditions": [{"type": "Launched", "status": "True", "reason": "Launched", "message": "",
                            "lastTransitionTime": "2026-01-01T00:04:00Z"}]
        }));
        assert_eq!(
            missed_deadline(&registered, at("2027-01-01T00:00:00Z")),
            None
        );
    }
}
