//! The errors of the binary's top level: configuration, connecting, serving.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no usable Kubernetes configuration (set KUBECONFIG or run in a cluster): {0}")]
    KubeConfig(#[source] kube::config::InferConfigError),

    #[error("cannot build a Kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),

    #[error("cannot reach the Kubernetes API server at {url}: {source}")]
    ApiServerUnreachable {
        url: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    JobsTls(#[from] crate::jobs::tls::TlsError),

    #[error("server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Simulate(String),

    #[error("cannot read stdin: {0}")]
    ReadStdin(#[source] std::io::Error),

    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),

    #[error("cannot render CRD {name} as YAML: {source}")]
    RenderCrd {
        name: String,
        #[source]
        source: serde_yaml::Error,
    },

    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),

    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),

    #[error("cannot read the AWS Price List: {0}")]
    Pricing(#[from] crate::aws::pricing::PricingError),

    #[error(transparent)]
    Leader(#[from] crate::operator::leader::LeaderError),

    #[error(transparent)]
    Top(#[from] crate::top::TopError),

    #[error(transparent)]
    Failpoints(#[from] crate::failpoints::FailpointsError),

    #[error("lost the leader Lease {lease}: stopped so that the new leader acts alone")]
    LeadershipLost { lease: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
