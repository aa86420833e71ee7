//! Prometheus metrics, one registry for the process.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub namespace: String,
    pub name: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub namespace: String,
    pub name: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterruptionLabels {
    /// `spot-interruption`, `scheduled-change`, `state-change`, `rebalance-recommendation`,
    /// `ignored` or `unreadable`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub nodepool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisruptionLabels {
    pub nodepool: String,
    /// `empty`, `expired`, `drifted` or `underutilized`.
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    /// The last value each trigger read.
    pub scaler_value: Family<TriggerLabels, Gauge<f64, AtomicU64>>,
    /// Seconds one poll of an object's triggers took.
    pub scaler_latency: Family<ObjectLabels, Histogram>,
    /// Failed polls and setup errors, by kind.
    pub scaler_errors: Family<ErrorLabels, Counter>,
    /// 1 while an object is active.
    pub scaler_active: Family<ObjectLabels, Gauge>,
    /// GetQueueAttributes requests actually sent (shared readings are not counted twice).
    pub sqs_get_queue_attributes: Family<QueueLabels, Counter>,
    /// NodeClaims the provisioner created.
    pub nodeclaims_created: Family<PoolLabels, Counter>,
    /// Of those, the ones created for pods a scale-out was about to make, before they were
    /// pending.
    pub nodeclaims_created_ahead: Family<PoolLabels, Counter>,
    /// NodeClaims whose instance launched.
    pub nodeclaims_launched: Family<PoolLabels, Counter>,
    /// CreateFleet calls that launched nothing.
    pub nodeclaims_launch_failures: Family<PoolLabels, Counter>,
    /// NodeClaims the disruption loop deleted, by reason.
    pub disruption_actions: Family<DisruptionLabels, Counter>,
    /// Messages read from the interruption queue, by kind.
    pub interruption_messages: Family<InterruptionLabels, Counter>,
    /// Dollars per hour consolidation saved: the price of each node it removed less that of
    /// its replacement.
    pub consolidation_savings: Family<PoolLabels, Counter<f64, AtomicU64>>,
    /// Seconds one scheduling simulation of a batch took.
    pub scheduling_duration: Histogram,
    /// Pods marked Unschedulable at the last batch, nominated ones aside.
    pub pending_pods: Gauge,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// Instance types in the catalog as last read from EC2; 0 until the first read.
    pub instance_types: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("windlass");
        registry.register(
            "build",
            "Windlass build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let metrics = Self {
            scaler_value: Family::default(),
            scaler_latency: Family::new_with_constructor(latency_histogram),
            scaler_errors: Family::default(),
            scaler_active: Family::default(),
            sqs_get_queue_attributes: Family::default(),
            nodeclaims_created: Family::default(),
            nodeclaims_created_ahead: Family::default(),
            nodeclaims_launched: Family::default(),
            nodeclaims_launch_failures: Family::default(),
            disruption_actions: Family::default(),
            consolidation_savings: Family::default(),
            interruption_messages: Family::default(),
            scheduling_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            pending_pods: Gauge::default(),
            leader: Gauge::default(),
            instance_types: Gauge::default(),
            registry,
        };
        let mut metrics = metrics;
        let registry = &mut metrics.registry;
        registry.register(
            "scaler_metric_value",
            "Last value read per trigger",
            metrics.scaler_value.clone(),
        );
        registry.register(
            "scaler_poll_duration_seconds",
            "Time to poll an object's triggers",
            metrics.scaler_latency.clone(),
        );
        registry.register(
            "scaler_errors",
            "Failed polls and setup errors",
            metrics.scaler_errors.clone(),
        );
        registry.register(
            "scaler_active",
            "1 while a scaled object is active",
            metrics.scaler_active.clone(),
        );
        registry.register(
            "sqs_get_queue_attributes",
            "GetQueueAttributes requests sent",
            metrics.sqs_get_queue_attributes.clone(),
        );
        registry.register(
            "nodeclaims_created",
            "NodeClaims the provisioner created",
            metrics.nodeclaims_created.clone(),
        );
        registry.register(
            "nodeclaims_created_ahead",
            "NodeClaims created for pods a ScaledObject or ScaledJob was about to make, before they were pending",
            metrics.nodeclaims_created_ahead.clone(),
        );
        registry.register(
            "nodeclaims_launched",
            "NodeClaims whose instance launched",
            metrics.nodeclaims_launched.clone(),
        );
        registry.register(
            "nodeclaims_launch_failures",
            "CreateFleet calls that launched nothing",
            metrics.nodeclaims_launch_failures.clone(),
        );
        registry.register(
            "disruption_actions",
            "NodeClaims the disruption loop deleted, by reason",
            metrics.disruption_actions.clone(),
        );
        registry.register(
            "interruption_messages",
            "Messages read from the interruption queue, by kind",
            metrics.interruption_messages.clone(),
        );
        registry.register(
            "consolidation_savings_dollars_per_hour",
            "Hourly price of the nodes consolidation removed less that of their replacements",
            metrics.consolidation_savings.clone(),
        );
        registry.register(
            "scheduling_duration_seconds",
            "Time to simulate scheduling one batch of pending pods",
            metrics.scheduling_duration.clone(),
        );
        registry.register(
            "pending_pods",
            "Unschedulable pods at the last batch, nominated ones aside",
            metrics.pending_pods.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the writers",
            metrics.leader.clone(),
        );
        registry.register(
            "instance_types",
            "Instance types in the catalog as last read from EC2",
            metrics.instance_types.clone(),
        );
        metrics
    }
}

impl Metrics {
    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_build_info_in_text_format() {
        let text = Metrics::default().encode();
        assert!(text.contains("windlass_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counts_requests_per_queue() {
        let metrics = Metrics::default();
        metrics
            .sqs_get_queue_attributes
            .get_or_create(&QueueLabels { queue: "q".into() })
            .inc();
        assert!(
            metrics
                .encode()
                .contains("windlass_sqs_get_queue_attributes_total{queue=\"q\"} 1")
        );
    }

    /// Every `windlass_*` name the Grafana dashboard's PromQL uses is a sample name the registry
    /// serves once each family has a sample (prometheus-client leaves empty families out).
    #[test]
    fn every_metric_the_dashboard_queries_is_served() {
        let metrics = Metrics::default();
        let object = ObjectLabels {
            namespace: "n".into(),
            name: "o".into(),
        };
        let trigger = TriggerLabels {
            namespace: "n".into(),
            name: "o".into(),
            trigger: "t".into(),
        };
        let error = ErrorLabels {
            namespace: "n".into(),
            name: "o".into(),
            error: "e".into(),
        };
        let pool = PoolLabels {
            nodepool: "p".into(),
        };
        metrics.scaler_value.get_or_create(&trigger).set(1.0);
        metrics.scaler_latency.get_or_create(&object).observe(0.1);
        metrics.scaler_errors.get_or_create(&error).inc();
        metrics.scaler_active.get_or_create(&object).set(1);
        metrics
            .sqs_get_queue_attributes
            .get_or_create(&QueueLabels { queue: "q".into() })
            .inc();
        metrics.nodeclaims_created.get_or_create(&pool).inc();
        metrics.nodeclaims_created_ahead.get_or_create(&pool).inc();
        metrics.nodeclaims_launched.get_or_create(&pool).inc();
        metrics
            .nodeclaims_launch_failures
            .get_or_create(&pool)
            .inc();
        metrics
            .disruption_actions
            .get_or_create(&DisruptionLabels {
                nodepool: "p".into(),
                reason: "empty".into(),
            })
            .inc();
        metrics
            .interruption_messages
            .get_or_create(&InterruptionLabels {
                kind: "ignored".into(),
            })
            .inc();
        metrics
            .consolidation_savings
            .get_or_create(&pool)
            .inc_by(0.5);
        let text = metrics.encode();
        let served: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../docs/grafana/windlass.json")).unwrap();
        let name = regex::Regex::new(r"windlass_[a-z_]+").unwrap();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                for metric in name.find_iter(target["expr"].as_str().unwrap()) {
                    queried += 1;
                    assert!(
                        served.contains(metric.as_str()),
                        "panel {} queries {}, which is not served; served: {served:?}",
                        panel["title"],
                        metric.as_str()
                    );
                }
            }
        }
        assert!(
            queried >= 10,
            "the dashboard queries only {queried} metrics"
        );
    }
}
