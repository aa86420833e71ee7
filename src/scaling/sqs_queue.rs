//! Where an `aws-sqs-queue` trigger's queue is, as KEDA finds it: `queueURL` or the workload's
//! `queueURLFromEnv` variable gives a queue URL or a bare queue name; a name is looked up with
//! GetQueueUrl. The region is `awsRegion`, else the one the queue URL's host names, else the
//! controller's.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::container_env::{self, EnvError};
use crate::aws::sdk_errors;

/// A queue as a trigger gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueAddress<'a> {
    Url(&'a str),
    Name(&'a str),
}

/// Why a trigger's queue URL could not be found.
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueUrlError {
    #[error("queueURLFromEnv {var:?} of {owner}: {source}")]
    Env {
        var: String,
        owner: String,
        source: Box<EnvError>,
    },
    #[error(
        "queue {value:?} is neither a queue URL (https://...) nor a queue name (letters, digits, - and _, up to 80, .fifo allowed)"
    )]
    Malformed { value: String },
    #[error("SQS queue named {name:?} not found: {message}")]
    UnknownName { name: String, message: String },
    #[error("looking up SQS queue named {name:?}: {message}")]
    Lookup { name: String, message: String },
}

impl QueueUrlError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            QueueUrlError::Env { source, .. } => source.metric_label(),
            QueueUrlError::Malformed { .. } => "queue_malformed",
            QueueUrlError::UnknownName { .. } => "queue_unknown",
            QueueUrlError::Lookup { .. } => "queue_lookup",
        }
    }
}

/// Reads a trigger's queue: with a scheme a URL, otherwise a queue name.
pub fn address(value: &str) -> Result<QueueAddress<'_>, QueueUrlError> {
    if value.contains("://") {
        return Ok(QueueAddress::Url(value));
    }
    let base = value.strip_suffix(".fifo").unwrap_or(value);
    let is_name = !base.is_empty()
        && value.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if is_name {
        Ok(QueueAddress::Name(value))
    } else {
        Err(QueueUrlError::Malformed {
            value: value.to_owned(),
        })
    }
}

/// The region an SQS queue URL's host names: `sqs.<region>.amazonaws.com` (also `sqs-fips.`,
/// `.amazonaws.com.cn` and the dual-stack `.api.aws`), the legacy `<region>.queue.amazonaws.com`
/// (and `queue.amazonaws.com`, which is us-east-1), and interface endpoints
/// `vpce-....sqs.<region>.vpce.amazonaws.com`. `None` for any other host, such as an emulator's.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next()?;
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_and_port
        .split_once(':')
        .map_or(host_and_port, |(h, _)| h)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let service_labels = ["amazonaws.com", "amazonaws.com.cn", "api.aws"]
        .iter()
        .find_map(|suffix| {
            host.strip_suffix(suffix)
                .and_then(|rest| rest.strip_suffix('.'))
        })
        .map(|rest| rest.split('.').collect::<Vec<_>>())?;
    let region = match service_labels.as_slice() {
        ["queue"] if host == "queue.amazonaws.com" => "us-east-1",
        [region, "queue"] => region,
        [service, region] if matches!(*service, "sqs" | "sqs-fips") => region,
        [endpoint, "sqs", region, "vpce"] if endpoint.starts_with("vpce-") => region,
        _ => return None,
    };
    is_region(region).then(|| region.to_owned())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`: letters in dashed groups, then
/// a number.
fn is_region(candidate: &str) -> bool {
    let mut groups = candidate.split('-');
    let number = groups.next_back().unwrap_or_default();
    let words: Vec<&str> = groups.collect();
    words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// What a queue name is looked up under: region, endpoint, identity and name. Two accounts may
/// each have a queue of one name, so the identity is part of it.
type NameKey = (Option<String>, Option<String>, String, String);

/// Queue URLs found by name, kept for the controller's life: a queue's URL follows from its
/// account, region and name, so it does not change while the queue exists.
#[derive(Clone, Default)]
pub struct QueueUrls {
    found: Arc<Mutex<HashMap<NameKey, String>>>,
}

impl QueueUrls {
    /// The URL of the queue `name`, from the cache or GetQueueUrl.
    pub async fn url(
        &self,
        client: &aws_sdk_sqs::Client,
        region: Option<&str>,
        endpoint: Option<&str>,
        identity: String,
        name: &str,
    ) -> Result<String, QueueUrlError> {
        let key = (
            region.map(str::to_owned),
            endpoint.map(str::to_owned),
            identity,
            name.to_owned(),
        );
        if let Some(url) = self.found.lock().await.get(&key) {
            return Ok(url.clone());
        }
        let output = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|error| {
                let message = sdk_errors::describe(&error);
                let unknown = error
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist())
                    || message.contains("NonExistentQueue");
                if unknown {
                    QueueUrlError::UnknownName {
                        name: name.to_owned(),
                        message,
                    }
                } else {
                    QueueUrlError::Lookup {
                        name: name.to_owned(),
                        message,
                    }
                }
            })?;
        let url = output.queue_url.ok_or_else(|| QueueUrlError::Lookup {
            name: name.to_owned(),
            message: "GetQueueUrl returned no URL".into(),
        })?;
        self.found.lock().await.insert(key, url.clone());
        Ok(url)
    }
}

/// The value of `queueURLFromEnv`'s variable `var` in the workload `owner`.
pub async fn from_env(
    client: &kube::Client,
    namespace: &str,
    pod_spec: &serde_json::Value,
    container: Option<&str>,
    var: &str,
    owner: &str,
) -> Result<String, QueueUrlError> {
    container_env::resolve(client, namespace, pod_spec, container, var)
        .await
        .map_err(|source| QueueUrlError::Env {
            var: var.to_owned(),
            owner: owner.to_owned(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(url: &str) -> Option<String> {
        region_from_queue_url(url)
    }

    #[test]
    fn the_region_comes_from_every_aws_queue_host_form() {
        let cases = [
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
                "eu-west-1",
            ),
            (
                "https://sqs.us-gov-west-1.amazonaws.com/123456789012/q",
                "us-gov-west-1",
            ),
            (
                "https://sqs-fips.us-east-2.amazonaws.com/123456789012/q",
                "us-east-2",
            ),
            (
                "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
                "cn-north-1",
            ),
            (
                "https://sqs.ap-southeast-3.api.aws/123456789012/q.fifo",
                "ap-southeast-3",
            ),
            (
                "https://ap-northeast-1.queue.amazonaws.com/123456789012/q",
                "ap-northeast-1",
            ),
            ("https://queue.amazonaws.com/123456789012/q", "us-east-1"),
            (
                "https://vpce-0a1b2c3d4e5f67890-abcdefgh.sqs.eu-central-1.vpce.amazonaws.com/123456789012/q",
                "eu-central-1",
            ),
            (
                "HTTPS://SQS.EU-WEST-3.AMAZONAWS.COM:443/123456789012/q",
                "eu-west-3",
            ),
            (
                "sqs.il-central-1.amazonaws.com/123456789012/q",
                "il-central-1",
            ),
            (
                "https://sqs.us-isob-east-1.amazonaws.com/123456789012/q",
                "us-isob-east-1",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(region(url).as_deref(), Some(expected), "{url}");
        }
    }

    #[test]
    fn other_hosts_name_no_region() {
        for url in [
            "http://127.0.0.1:5000/123456789012/orders",
            "http://localhost:4566/000000000000/q",
            "http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q",
            "https://sqs.amazonaws.com/123456789012/q",
            "https://sqs.not_a-region.amazonaws.com/123456789012/q",
            "https://sqs.eu-west.amazonaws.com/123456789012/q",
            "https://sqs.eu-west-1.example.com/123456789012/q",
            "https://evil.com/sqs.eu-west-1.amazonaws.com/q",
            "https://sqs.eu-west-1.amazonaws.com.evil.com/123456789012/q",
            "https://x.sqs.eu-west-1.vpce.amazonaws.com/123456789012/q",
            "https://sqs.eu-west-1.vpce.amazonaws.com/123456789012/q",
            "https://a.b.queue.amazonaws.com/1/q",
            "",
            "orders",
        ] {
            assert_eq!(region(url), None, "{url}");
        }
    }

    #[test]
    fn credentials_in_the_authority_do_not_fool_the_host() {
        assert_eq!(
            region("https://sqs.eu-west-1.amazonaws.com@127.0.0.1:5000/1/q"),
            None
        );
        assert_eq!(
            region("https://user@sqs.eu-west-1.amazonaws.com/1/q"),
            Some("eu-west-1".to_owned())
        );
    }

    #[test]
    fn a_value_with_a_scheme_is_a_url_and_a_bare_word_a_queue_name() {
        assert_eq!(
            address("https://sqs.eu-west-1.amazonaws.com/1/q").unwrap(),
            QueueAddress::Url("https://sqs.eu-west-1.amazonaws.com/1/q")
        );
        assert_eq!(
            address("http://127.0.0.1:5000/1/q").unwrap(),
            QueueAddress::Url("http://127.0.0.1:5000/1/q")
        );
        assert_eq!(address("orders").unwrap(), QueueAddress::Name("orders"));
        assert_eq!(
            address("Orders_2-high.fifo").unwrap(),
            QueueAddress::Name("Orders_2-high.fifo")
        );
        let longest = "q".repeat(80);
        assert_eq!(address(&longest).unwrap(), QueueAddress::Name(&longest));
        for malformed in [
            "sqs.eu-west-1.amazonaws.com/1/q",
            "my queue",
            ".fifo",
            &"q".repeat(81),
            "orders.txt",
        ] {
            let error = address(malformed).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("queue {malformed:?} is neither")),
                "{error}"
            );
        }
    }
}
