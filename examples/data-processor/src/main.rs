//! data-processor: the example worker a Windlass ScaledJob runs. Each run takes at most one
//! message from `QUEUE_URL`, processes it, and
//! - deletes it and exits 0 on success,
//! - makes it visible again at once and exits 1 on failure, so a retry can take it: the
//!   Job's next attempt (`backoffLimit`), or another Job's pod that asks first,
//! - exits 2 for a message that is not a job (left for the queue's redrive policy),
//! - exits 0 without work when no message arrives within `WAIT_SECONDS` (default 20).
//!
//! The message is what Windlass's jobs API enqueues: `{"id", "payload", "submittedAt"}`. The
//! payload may steer the run: `{"outcome": "fail"}` fails every attempt, `{"failTimes": n}`
//! fails the first n receives and then succeeds, `{"sleepSeconds": s}` works for s seconds.

use std::process::ExitCode;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct JobMessage {
    id: String,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instructions {
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    fail_times: u32,
    #[serde(default)]
    sleep_seconds: u64,
}

/// An SQS error as a one-line reason naming what was being done.
fn failed<E: std::error::Error>(doing: String) -> impl FnOnce(E) -> String {
    move |error| {
        format!(
            "{doing}: {}",
            aws_sdk_sqs::error::DisplayErrorContext(error)
        )
    }
}

enum Outcome {
    Succeeded,
    Failed(String),
}

/// What the payload asks of this attempt, the message's `receive_count`-th delivery.
fn decide(instructions: &Instructions, receive_count: u32) -> Outcome {
    if instructions.outcome.as_deref() == Some("fail") {
        return Outcome::Failed("the payload asks to fail".into());
    }
    if receive_count <= instructions.fail_times {
        return Outcome::Failed(format!(
            "the payload asks to fail the first {} attempts; this is attempt {receive_count}",
            instructions.fail_times
        ));
    }
    Outcome::Succeeded
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(reason) => {
            eprintln!("data-processor: {reason}");
            ExitCode::from(3)
        }
    }
}

async fn run() -> Result<ExitCode, String> {
    let queue_url = std::env::var("QUEUE_URL").map_err(|_| "QUEUE_URL is not set".to_owned())?;
    let wait_seconds: i32 = match std::env::var("WAIT_SECONDS") {
        Ok(value) => value
            .parse()
            .ok()
            .filter(|seconds| (0..=20).contains(seconds))
            .ok_or_else(|| format!("WAIT_SECONDS={value:?} is not 0-20"))?,
        Err(_) => 20,
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = Client::new(&config);
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(1)
        .wait_time_seconds(wait_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(failed(format!("receiving from {queue_url}")))?;
    let Some(message) = received.messages().first() else {
        println!("no message within {wait_seconds}s; nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let receipt = message.receipt_handle().unwrap_or_default();
    let job: JobMessage = match serde_json::from_str(message.body().unwrap_or_default()) {
        Ok(job) => job,
        Err(error) => {
            eprintln!(
                "data-processor: message {} is not a job: {error}",
                message.message_id().unwrap_or_default()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let instructions: Instructions =
        serde_json::from_value(job.payload.clone()).unwrap_or_default();
    let receive_count = message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .unwrap_or(1);
    println!("job {} (attempt {receive_count}): {}", job.id, job.payload);
    if instructions.sleep_seconds > 0 {
        // Keep the message ours while we work.
        let hold = i32::try_from(instructions.sleep_seconds + 30).unwrap_or(i32::MAX);
        sqs.change_message_visibility()
            .queue_url(&queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(hold)
            .send()
            .await
            .map_err(failed(format!(
                "extending the visibility of job {}",
                job.id
            )))?;
        tokio::time::sleep(Duration::from_secs(instructions.sleep_seconds)).await;
    }
    match decide(&instructions, receive_count) {
        Outcome::Succeeded => {
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .map_err(failed(format!("deleting job {}", job.id)))?;
            println!("job {} succeeded", job.id);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Failed(reason) => {
            // Visible again at once: a retry, this Job's after its backoff or another's, takes it.
            sqs.change_message_visibility()
                .queue_url(&queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(failed(format!("returning job {}", job.id)))?;
            eprintln!("data-processor: job {} failed: {reason}", job.id);
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instructions(payload: serde_json::Value) -> Instructions {
        serde_json::from_value(payload).unwrap()
    }

    #[test]
    fn the_payload_decides_each_attempt() {
        assert!(matches!(
            decide(&Instructions::default(), 1),
            Outcome::Succeeded
        ));
        assert!(matches!(
            decide(&instructions(serde_json::json!({"outcome": "fail"})), 5),
            Outcome::Failed(_)
        ));
        let twice = instructions(serde_json::json!({"failTimes": 2}));
        assert!(matches!(decide(&twice, 1), Outcome::Failed(_)));
        assert!(matches!(decide(&twice, 2), Outcome::Failed(_)));
        assert!(matches!(decide(&twice, 3), Outcome::Succeeded));
    }
}
