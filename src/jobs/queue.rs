//! Sending a job message to a ScaledJob's queue: the queue of its first SQS trigger, reached
//! with that trigger's authentication. Used by `POST /jobs` and by the JobSchedule controller.

use kube::Api;

use crate::apis::scaled_job::ScaledJob;
use crate::aws::sdk_errors;
use crate::scaling::Scaling;
use crate::scaling::auth_users::AuthUses;
use crate::scaling::triggers::{self, EnvSource};

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("ScaledJob {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("ScaledJob {namespace}/{name} cannot take jobs: {reason}")]
    Unusable {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("reading ScaledJob {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("sending to {queue_url}: {reason}")]
    Send { queue_url: String, reason: String },
}

/// Reads a ScaledJob that the controller handles; one outside the watched namespace is not
/// found, as it would be to the controller.
pub async fn scaled_job(
    scaling: &Scaling,
    namespace: &str,
    name: &str,
) -> Result<ScaledJob, EnqueueError> {
    let not_found = || EnqueueError::NotFound {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    if !scaling.watches(namespace) {
        return Err(not_found());
    }
    let api: Api<ScaledJob> = Api::namespaced(scaling.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|source| EnqueueError::Read {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(not_found)
}

/// Sends `body` to the ScaledJob's queue under the id `id`. A FIFO queue gets the id as its
/// deduplication id, so SQS itself drops a resend of the same message within five minutes.
pub async fn send(
    scaling: &Scaling,
    scaled_job: &ScaledJob,
    id: &str,
    body: String,
) -> Result<(), EnqueueError> {
    let namespace = scaled_job.metadata.namespace.clone().unwrap_or_default();
    let name = scaled_job.metadata.name.clone().unwrap_or_default();
    let unusable = |reason: String| EnqueueError::Unusable {
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    let trigger = scaled_job
        .spec
        .triggers
        .first()
        .ok_or_else(|| unusable("it has no trigger".into()))?;
    let env = EnvSource {
        pod_spec: serde_json::to_value(&scaled_job.spec.job_target_ref.template.spec)
            .unwrap_or_default(),
        owner: format!("ScaledJob {name:?} jobTargetRef"),
    };
    let queue = triggers::resolve_sqs_queue(
        scaling,
        &namespace,
        trigger,
        &env,
        scaled_job.spec.env_source_container_name.as_deref(),
        // The ScaledJob's own loop reports its authentication's users; a submission does not.
        &mut AuthUses::default(),
    )
    .await
    .map_err(|e| unusable(e.to_string()))?;
    let (client, queue_url) = (queue.client, queue.url);
    let mut request = client
        .send_message()
        .queue_url(&queue_url)
        .message_body(body);
    if queue_url.ends_with(".fifo") {
        request = request.message_group_id(&name).message_deduplication_id(id);
    }
    request.send().await.map_err(|e| EnqueueError::Send {
        queue_url: queue_url.clone(),
        reason: sdk_errors::describe(&e),
    })?;
    Ok(())
}
