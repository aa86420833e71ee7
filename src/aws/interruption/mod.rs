//! The interruption queue (`--interruption-queue`): EventBridge delivers EC2 spot interruption
//! warnings, rebalance recommendations, instance state changes and AWS Health scheduled
//! changes to an SQS queue; this loop long-polls it and acts ahead of the loss. A spot
//! interruption or a scheduled change deletes the instance's NodeClaim now (so the node is
//! tainted and drained while the instance still runs, and the provisioner finds the evicted
//! pods a new home), and a spot interruption leaves that offering out for a while; an
//! instance stopping or gone deletes its NodeClaim; a rebalance recommendation is an Event.
//! Every message is deleted once handled; one that cannot be read is deleted with a warning.

pub mod message;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use kube::api::DeleteParams;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apis::labels::{CAPACITY_TYPE_LABEL, CLUSTER_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::aws::{AwsCloud, instance_id, sdk_errors};
use crate::events::Recorder;
use crate::metrics::{InterruptionLabels, Metrics};
use crate::state::ClusterState;
use message::{Interruption, parse};

/// How long a receive waits for messages (SQS's longest).
const LONG_POLL_SECONDS: i32 = 20;
/// How long to wait after the queue could not be read.
const RETRY: Duration = Duration::from_secs(5);

pub struct Interruptions {
    pub client: kube::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The queue's URL, or its name.
    pub queue: String,
    pub state: Arc<ClusterState>,
    pub cloud: Arc<AwsCloud>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Only this install's NodeClaims are acted on.
    pub cluster: String,
}

/// Runs until `shutdown`.
pub async fn run(interruptions: Arc<Interruptions>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = interruptions.state.wait_until_ready() => if ready.is_err() { return },
    }
    let Some(queue_url) = queue_url(&interruptions, &shutdown).await else {
        return;
    };
    info!(queue = %queue_url, "watching the interruption queue");
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            received = interruptions
                .sqs
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(LONG_POLL_SECONDS)
                .send() => received,
        };
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                let error = sdk_errors::describe(&error);
                warn!(queue = %queue_url, %error, "reading the interruption queue failed");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        for message in messages {
            // A message whose NodeClaim could not be deleted stays, and comes back once its
            // visibility timeout runs out.
            if handle(&interruptions, &message).await {
                delete(&interruptions, &queue_url, &message).await;
            }
        }
    }
}

/// The queue's URL: as given, or looked up by name (retried until it exists).
async fn queue_url(interruptions: &Interruptions, shutdown: &CancellationToken) -> Option<String> {
    let queue = &interruptions.queue;
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Some(queue.clone());
    }
    loop {
        match interruptions
            .sqs
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
        {
            Ok(output) => return output.queue_url,
            Err(error) => {
                let error = sdk_errors::describe(&error);
                warn!(queue = %queue, %error, "finding the interruption queue failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Acts on one message; whether it is done with (false: try it again later).
async fn handle(interruptions: &Interruptions, message: &Message) -> bool {
    let body = message.body().unwrap_or_default();
    let interruption = match parse(body) {
        Ok(interruption) => interruption,
        Err(error) => {
            warn!(%error, "an interruption-queue message Windlass cannot read; deleting it");
            count(interruptions, "unreadable");
            return true;
        }
    };
    match interruption {
        Interruption::SpotInterruption { instance } => {
            count(interruptions, "spot-interruption");
            if let Some(claim) = claim_of(interruptions, &instance) {
                leave_out_offering(interruptions, &claim);
                let note = format!(
                    "EC2 will reclaim spot instance {instance} in two minutes: draining its node now"
                );
                return remove(interruptions, &claim, "SpotInterrupted", note).await;
            }
        }
        Interruption::ScheduledChange { instances } => {
            count(interruptions, "scheduled-change");
            let mut done = true;
            for instance in instances {
                if let Some(claim) = claim_of(interruptions, &instance) {
                    let note = format!(
                        "AWS Health scheduled a change to instance {instance}: draining its node now"
                    );
                    done &= remove(interruptions, &claim, "ScheduledChange", note).await;
                }
            }
            return done;
        }
        Interruption::StateChange { instance, state } => {
            count(interruptions, "state-change");
            if let Some(claim) = claim_of(interruptions, &instance) {
                let note = format!("instance {instance} is {state}: deleting its NodeClaim");
                return remove(interruptions, &claim, "InstanceStopped", note).await;
            }
        }
        Interruption::RebalanceRecommendation { instance } => {
            count(interruptions, "rebalance-recommendation");
            if let Some(claim) = claim_of(interruptions, &instance) {
                let note = format!(
                    "EC2 recommends rebalancing spot instance {instance}: it is at higher risk of interruption"
                );
                crate::events::publish(
                    &interruptions.recorder,
                    &*claim,
                    EventType::Normal,
                    "RebalanceRecommendation",
                    note,
                    "Interruption",
                )
                .await;
            }
        }
        Interruption::Ignored { .. } => count(interruptions, "ignored"),
    }
    true
}

fn count(interruptions: &Interruptions, kind: &str) {
    interruptions
        .metrics
        .interruption_messages
        .get_or_create(&InterruptionLabels { kind: kind.into() })
        .inc();
}

/// This install's NodeClaim for the instance, if any.
fn claim_of(interruptions: &Interruptions, instance: &str) -> Option<Arc<NodeClaim>> {
    interruptions
        .state
        .node_claims
        .state()
        .into_iter()
        .find(|c| {
            c.labels().get(CLUSTER_LABEL) == Some(&interruptions.cluster)
                && c.status
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .and_then(instance_id)
                    == Some(instance)
        })
}

/// Leaves the interrupted spot offering (type and zone, from the claim's Node) out for a while.
fn leave_out_offering(interruptions: &Interruptions, claim: &NodeClaim) {
    let node = claim
        .status
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .and_then(|name| {
            interruptions
                .state
                .nodes
                .state()
                .into_iter()
                .find(|n| n.name_any() == *name)
        });
    let Some(node) = node else { return };
    let labels = node.labels();
    if let (Some(instance_type), Some(zone)) =
        (labels.get(INSTANCE_TYPE_LABEL), labels.get(ZONE_LABEL))
    {
        let capacity_type = labels
            .get(CAPACITY_TYPE_LABEL)
            .map_or("spot", String::as_str);
        interruptions
            .cloud
            .leave_out(capacity_type, instance_type, zone);
    }
}

/// Deletes the NodeClaim with a Warning Event; false if the API refused for now.
async fn remove(
    interruptions: &Interruptions,
    claim: &NodeClaim,
    reason: &str,
    note: String,
) -> bool {
    if claim.metadata.deletion_timestamp.is_some() {
        return true;
    }
    let api: Api<NodeClaim> = Api::all(interruptions.client.clone());
    match api
        .delete(&claim.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            info!(nodeclaim = %claim.name_any(), reason, "interrupted: deleting");
            crate::events::publish(
                &interruptions.recorder,
                claim,
                EventType::Warning,
                reason,
                note,
                "Interruption",
            )
            .await;
            true
        }
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(error) => {
            warn!(nodeclaim = %claim.name_any(), %error, "deleting an interrupted NodeClaim failed");
            false
        }
    }
}

async fn delete(interruptions: &Interruptions, queue_url: &str, message: &Message) {
    let Some(receipt) = message.receipt_handle() else {
        return;
    };
    if let Err(error) = interruptions
        .sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        let error = sdk_errors::describe(&error);
        warn!(queue = %queue_url, %error, "deleting an interruption message failed");
    }
}
