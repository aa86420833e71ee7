//! Every AWS SDK client the controller uses, built from one `SdkConfig`, and how long a call
//! may wait for its answer. In builds with the `cluster-tests` feature, each client also records
//! the operations it invokes, as IAM actions (`ec2:CreateFleet`), into the file
//! `WINDLASS_AWS_CALL_LOG` names: the integration suite compares that record with
//! `docs/iam/controller-policy.json`.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;

/// How long one attempt of any AWS call may wait for its answer before the SDK gives up on it
/// and retries. The SDK's own default is forever, so a connection that never answered held
/// the controller loop awaiting it for good. No call Windlass makes takes more than seconds in
/// AWS; moto's DescribeInstanceTypes of 1,400 types takes 2 s alone and tens of seconds under
/// the integration suite's load, and the interruption queue's long poll 20 s.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);

/// `config` with each call attempt cut off after `timeout`; its other timeouts (the SDK's
/// connect timeout) kept.
pub fn with_attempt_timeout(config: &SdkConfig, timeout: Duration) -> SdkConfig {
    let mut timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(timeout)
        .build();
    if let Some(own) = config.timeout_config() {
        timeouts.take_defaults_from(own);
    }
    config.to_builder().timeout_config(timeouts).build()
}

macro_rules! client {
    ($(#[$doc:meta])* $name:ident, $sdk:ident) => {
        $(#[$doc])*
        pub fn $name(config: &SdkConfig) -> $sdk::Client {
            #[allow(unused_mut)]
            let mut builder = $sdk::config::Builder::from(config);
            #[cfg(feature = "cluster-tests")]
            if let Some(log) = call_log::from_env() {
                builder = builder.interceptor(log);
            }
            $sdk::Client::from_conf(builder.build())
        }
    };
}

client!(ec2, aws_sdk_ec2);
client!(ssm, aws_sdk_ssm);
client!(iam, aws_sdk_iam);
client!(sqs, aws_sdk_sqs);
client!(sts, aws_sdk_sts);
client!(eks, aws_sdk_eks);
client!(eks_auth, aws_sdk_eksauth);
client!(pricing, aws_sdk_pricing);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_timeout_is_set_and_the_other_timeouts_kept() {
        let connect = Duration::from_millis(3100);
        let config = SdkConfig::builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(connect)
                    .operation_attempt_timeout(Duration::from_secs(1))
                    .build(),
            )
            .build();
        let timeouts = with_attempt_timeout(&config, ATTEMPT_TIMEOUT)
            .timeout_config()
            .cloned()
            .unwrap();
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.connect_timeout(), Some(connect));
        assert_eq!(timeouts.operation_timeout(), None);
    }

    #[test]
    fn a_config_without_timeouts_gets_the_attempt_timeout_alone() {
        let config = SdkConfig::builder().build();
        let timeouts = with_attempt_timeout(&config, Duration::from_secs(10))
            .timeout_config()
            .cloned()
            .unwrap();
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(timeouts.connect_timeout(), None);
    }
}

#[cfg(feature = "cluster-tests")]
mod call_log {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};

    use aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef;
    use aws_sdk_ec2::config::{ConfigBag, Intercept};
    use aws_smithy_runtime_api::box_error::BoxError;
    use aws_smithy_runtime_api::client::orchestrator::Metadata;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

    /// Appends each operation's IAM action to a file, once per process.
    #[derive(Debug)]
    pub struct CallLog {
        path: PathBuf,
        recorded: Mutex<BTreeSet<String>>,
    }

    /// The process's one log, if `WINDLASS_AWS_CALL_LOG` names a file.
    pub fn from_env() -> Option<&'static CallLog> {
        static LOG: OnceLock<Option<CallLog>> = OnceLock::new();
        LOG.get_or_init(|| {
            std::env::var_os("WINDLASS_AWS_CALL_LOG").map(|path| CallLog {
                path: path.into(),
                recorded: Mutex::default(),
            })
        })
        .as_ref()
    }

    impl Intercept for &'static CallLog {
        fn name(&self) -> &'static str {
            "CallLog"
        }

        // Not read_before_execution: a client's interceptors run that before the operation's
        // configuration, which holds its Metadata, is in the bag.
        fn read_before_serialization(
            &self,
            _context: &BeforeSerializationInterceptorContextRef<'_>,
            _runtime_components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let Some(operation) = cfg.load::<Metadata>() else {
                return Ok(());
            };
            // IAM's prefix is the service name in lower case, words joined by `-` (EKS Auth:
            // `eks-auth`).
            let action = format!(
                "{}:{}",
                operation.service().to_lowercase().replace(' ', "-"),
                operation.name()
            );
            let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
            if recorded.insert(action.clone()) {
                // Several processes append to one file; a short line in one write stays whole.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .and_then(|mut file| file.write_all(format!("{action}\n").as_bytes()))?;
            }
            Ok(())
        }
    }
}
