//! Integration tests against a real cluster and AWS endpoint: the local stack
//! (hack/stack/stack.sh), or kind + LocalStack via KUBECONFIG and AWS_ENDPOINT_URL.
//! Run them with `hack/test.sh`.

mod api_restart;
mod chart;
mod controller;
mod convert;
mod disruption;
mod faults;
mod invariants;
mod jobs_api;
mod keda_metrics;
mod kills;
mod node_classes;
mod pod_identity;
mod provisioning;
mod reaction;
mod release;
mod scaled_job;
mod scaled_object;
mod soak;
mod stack;
mod support;
mod top;
mod unworkable;
