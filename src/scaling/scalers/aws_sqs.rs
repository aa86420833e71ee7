//! The `aws-sqs-queue` scaler: queue depth from GetQueueAttributes, counted as KEDA counts it
//! (visible, plus in flight and delayed when asked), through the readings shared between polls
//! of the same tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::SharedCredentialsProvider;
use aws_sdk_sqs::types::QueueAttributeName;
use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Reading, Scaler, ScalerError};
use crate::apis::triggers::AwsSqsQueueTrigger;
use crate::aws::sdk_errors;
use crate::scaling::auth::ResolvedAuth;
use crate::scaling::queue_depths::{QueueAttributes, QueueDepths, QueueKey};
use crate::scaling::sqs_queue::QueueUrls;

/// The messages that count toward scaling.
pub fn messages(attributes: QueueAttributes, trigger: &AwsSqsQueueTrigger) -> u64 {
    let in_flight = if trigger.scale_on_in_flight {
        attributes.in_flight
    } else {
        0
    };
    let delayed = if trigger.scale_on_delayed {
        attributes.delayed
    } else {
        0
    };
    attributes.visible + in_flight + delayed
}

pub struct AwsSqsScaler {
    trigger: AwsSqsQueueTrigger,
    key: QueueKey,
    client: aws_sdk_sqs::Client,
    depths: QueueDepths,
    requests: Counter,
}

impl AwsSqsScaler {
    pub fn new(
        trigger: AwsSqsQueueTrigger,
        key: QueueKey,
        client: aws_sdk_sqs::Client,
        depths: QueueDepths,
        requests: Counter,
    ) -> Self {
        Self {
            trigger,
            key,
            client,
            depths,
            requests,
        }
    }
}

impl Scaler for AwsSqsScaler {
    fn read(&self, tick: Instant) -> BoxFuture<'_, Result<Reading, ScalerError>> {
        async move {
            let client = self.client.clone();
            let queue_url = self.key.queue_url.clone();
            let requests = self.requests.clone();
            let attributes = self
                .depths
                .get(self.key.clone(), tick, move || async move {
                    requests.inc();
                    get_queue_attributes(&client, &queue_url).await
                })
                .await
                .map_err(|message| ScalerError::Source {
                    queue: self.key.queue_url.clone(),
                    message,
                })?;
            Ok(Reading {
                value: messages(attributes, &self.trigger) as f64,
                target: self.trigger.queue_length as f64,
                activation: self.trigger.activation_queue_length as f64,
            })
        }
        .boxed()
    }

    fn source(&self) -> &str {
        &self.key.queue_url
    }

    fn keda_type_name(&self) -> &'static str {
        "awsSqsQueueScaler"
    }

    fn keda_metric_name(&self) -> String {
        format!("aws-sqs-{}", queue_name(&self.key.queue_url))
    }
}

/// The queue's name: the last segment of its URL, or the whole of what is not a URL, as KEDA
/// reads it.
fn queue_name(queue_url: &str) -> &str {
    if queue_url.contains("://") {
        queue_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(queue_url)
    } else {
        queue_url
    }
}

async fn get_queue_attributes(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<QueueAttributes, String> {
    let output = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|error| sdk_errors::describe(&error))?;
    let attributes = output
        .attributes()
        .ok_or("GetQueueAttributes returned no attributes")?;
    let count = |name: QueueAttributeName| -> Result<u64, String> {
        match attributes.get(&name) {
            Some(value) => value
                .parse()
                .map_err(|_| format!("{name} is {value:?}, not a count")),
            None => Ok(0),
        }
    };
    Ok(QueueAttributes {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
    })
}

/// Region, endpoint and identity key: what makes two SQS clients different.
type ClientKey = (Option<String>, Option<String>, String);

/// A client and the credentials provider it signs with.
type SqsClient = (aws_sdk_sqs::Client, Option<SharedCredentialsProvider>);

/// SQS clients by region, endpoint and identity, built once and reused.
#[derive(Clone)]
pub struct SqsClients {
    base: SdkConfig,
    kube: kube::Client,
    /// The controller's `--cluster-name`: workload Pod Identity associations are this cluster's.
    cluster: String,
    clients: Arc<Mutex<HashMap<ClientKey, SqsClient>>>,
    /// URLs of queues that triggers name rather than address.
    pub queue_urls: QueueUrls,
}

/// How long one attempt of a queue read (or send) may wait for SQS's answer, which comes in
/// milliseconds: a poll whose read never answers fails after this and its retries, and counts
/// toward `fallback`, instead of holding its object's polls for good.
pub const QUEUE_CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

impl SqsClients {
    pub fn new(base: SdkConfig, kube: kube::Client, cluster: String) -> Self {
        Self {
            base: crate::aws::sdk_clients::with_attempt_timeout(&base, QUEUE_CALL_ATTEMPT_TIMEOUT),
            kube,
            cluster,
            clients: Arc::default(),
            queue_urls: QueueUrls::default(),
        }
    }

    pub async fn client(
        &self,
        auth: &ResolvedAuth,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> aws_sdk_sqs::Client {
        self.client_with_credentials(auth, region, endpoint).await.0
    }

    /// The client for these credentials, with the provider it signs with (none for the SDK's
    /// default chain): the same provider, and so the same cached credentials, as its polls.
    pub async fn client_with_credentials(
        &self,
        auth: &ResolvedAuth,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> (aws_sdk_sqs::Client, Option<SharedCredentialsProvider>) {
        let key = (
            region.map(str::to_owned),
            endpoint.map(str::to_owned),
            auth.identity_key(),
        );
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        let config = auth
            .sdk_config(&self.base, &self.kube, &self.cluster, region, endpoint)
            .await;
        let client = (
            crate::aws::sdk_clients::sqs(&config),
            config.credentials_provider(),
        );
        clients.insert(key, client.clone());
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::triggers::QueueSource;

    fn trigger(scale_on_in_flight: bool, scale_on_delayed: bool) -> AwsSqsQueueTrigger {
        AwsSqsQueueTrigger {
            queue: QueueSource::Given("u".into()),
            queue_length: 5,
            activation_queue_length: 0,
            aws_region: None,
            aws_endpoint: None,
            scale_on_in_flight,
            scale_on_delayed,
            identity_owner: Default::default(),
        }
    }

    #[test]
    fn counts_visible_plus_in_flight_plus_delayed_as_configured() {
        let attributes = QueueAttributes {
            visible: 10,
            in_flight: 3,
            delayed: 2,
        };
        assert_eq!(
            messages(attributes, &trigger(true, false)),
            13,
            "KEDA's default: visible and in flight"
        );
        assert_eq!(messages(attributes, &trigger(false, false)), 10);
        assert_eq!(messages(attributes, &trigger(true, true)), 15);
        assert_eq!(messages(attributes, &trigger(false, true)), 12);
    }

    #[test]
    fn the_queue_name_is_the_urls_last_segment_or_the_whole_name() {
        assert_eq!(
            queue_name("https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo"),
            "orders.fifo"
        );
        assert_eq!(
            queue_name("http://localhost:4566/000000000000/jobs/"),
            "jobs"
        );
        assert_eq!(queue_name("orders"), "orders");
    }
}
