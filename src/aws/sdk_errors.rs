//! AWS SDK errors as one readable line for conditions, Events and HTTP answers. The SDK's own
//! `DisplayErrorContext` appends the error's `Debug` form (kilobytes of metadata and the raw
//! response), which is noise to someone reading `kubectl describe`.

use std::error::Error;
use std::fmt::Debug;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// The service's error code and message (`QueueDoesNotExist: The specified queue does not
/// exist.`) when AWS answered; otherwise what went wrong with the request and its causes.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + Error + 'static,
    R: Debug,
{
    if let Some(code) = error.code() {
        return match error.message() {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        };
    }
    let mut line = error.to_string();
    let mut last = line.clone();
    let mut cause = error.source();
    while let Some(source) = cause {
        // Transport errors often repeat their cause word for word.
        let text = source.to_string();
        if text != last {
            line.push_str(": ");
            line.push_str(&text);
        }
        last = text;
        cause = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::config::http::HttpResponse;
    use aws_sdk_sqs::error::ErrorMetadata;
    use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    fn service_error(code: &str, message: &str) -> SdkError<GetQueueAttributesError, HttpResponse> {
        let metadata = ErrorMetadata::builder()
            .code(code)
            .message(message)
            .custom("aws_request_id", "f9a3b1c2-7d64-4e0b-9a55-3c1d2e4f5a6b")
            .build();
        SdkError::service_error(
            GetQueueAttributesError::generic(metadata),
            HttpResponse::new(
                400.try_into().unwrap(),
                SdkBody::from(r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist"}"#),
            ),
        )
    }

    #[test]
    fn an_answer_from_aws_is_its_code_and_message() {
        let error = service_error("QueueDoesNotExist", "The specified queue does not exist.");
        assert_eq!(
            describe(&error),
            "QueueDoesNotExist: The specified queue does not exist."
        );
    }

    #[test]
    fn a_request_without_an_answer_is_its_chain_of_causes() {
        let timed_out: SdkError<GetQueueAttributesError, HttpResponse> =
            SdkError::timeout_error(std::io::Error::other("no answer within 3.1 s"));
        assert_eq!(
            describe(&timed_out),
            "request has timed out: no answer within 3.1 s"
        );
    }
}
