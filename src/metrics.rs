//! Prometheus metrics: the `windlass_*` registry, and KEDA's `keda_*` families beside it
//! unless turned off, served together on one `/metrics`.

pub mod keda;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
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

/// A ScaledJob's finished-Job totals, as its status counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FinishedJobs {
    pub succeeded: i64,
    pub failed: i64,
    pub retries: i64,
}

/// Per ScaledJob (labels `namespace`, `name`): Jobs created, unfinished and finished.
#[derive(Default)]
pub struct ScaledJobMetrics {
    /// Jobs this process created.
    pub created: Family<ObjectLabels, Counter>,
    /// Unfinished Jobs after the last poll.
    pub running: Family<ObjectLabels, Gauge>,
    /// Of those, the ones whose pod has not started.
    pub pending: Family<ObjectLabels, Gauge>,
    succeeded: Family<ObjectLabels, Counter>,
    failed: Family<ObjectLabels, Counter>,
    retries: Family<ObjectLabels, Counter>,
    /// The totals already counted into the counters above, per ScaledJob.
    counted: Mutex<HashMap<ObjectLabels, FinishedJobs>>,
}

impl ScaledJobMetrics {
    /// Counts the finished Jobs a poll added to the status, once the status is written:
    /// `before` is the status the poll started from, `after` the one it wrote. A status read
    /// again before the watch delivered the written one counts nothing twice.
    pub fn finished(&self, labels: &ObjectLabels, before: FinishedJobs, after: FinishedJobs) {
        let mut counted = self.counted.lock().expect("scaled job counts lock");
        let from = *counted.entry(labels.clone()).or_insert(before);
        for (family, new, old) in [
            (&self.succeeded, after.succeeded, from.succeeded),
            (&self.failed, after.failed, from.failed),
            (&self.retries, after.retries, from.retries),
        ] {
            family
                .get_or_create(labels)
                .inc_by((new - old).max(0) as u64);
        }
        counted.insert(labels.clone(), after);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "scaled_job_jobs_created",
            "Jobs created per ScaledJob",
            self.created.clone(),
        );
        registry.register(
            "scaled_job_jobs_running",
            "Unfinished Jobs per ScaledJob at the last poll",
            self.running.clone(),
        );
        registry.register(
            "scaled_job_jobs_pending",
            "Unfinished Jobs whose pod has not started, per ScaledJob at the last poll",
            self.pending.clone(),
        );
        registry.register(
            "scaled_job_jobs_succeeded",
            "Jobs that ended Complete, per ScaledJob",
            self.succeeded.clone(),
        );
        registry.register(
            "scaled_job_jobs_failed",
            "Jobs that ended Failed, per ScaledJob",
            self.failed.clone(),
        );
        registry.register(
            "scaled_job_retries",
            "Pod failures that a Job's backoffLimit retried, per ScaledJob",
            self.retries.clone(),
        );
    }
}

pub struct Metrics {
    registry: Registry,
    /// KEDA's families; served only when `keda_registry` is set.
    pub keda: keda::KedaMetrics,
    keda_registry: Option<Registry>,
    pub scaled_jobs: ScaledJobMetrics,
    /// The last value each trigger read.
    pub scaler_value: Family<TriggerLabels, Gauge<f64, AtomicU64>>,
    /// Seconds one poll of an object's triggers took.
    pub scaler_latency: Family<ObjectLabels, Histogram>,
    /// Seconds each poll started after its tick: how far the polling loops fall behind.
    pub scaler_poll_lag: Histogram,
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

/// Fine around 10 ms, the lag the polling loops aim to stay under with 1,000 objects.
fn poll_lag_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.0125,
        0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    /// With KEDA's families served, as `windlass run` does by default.
    fn default() -> Self {
        Self::new(true)
    }
}

impl Metrics {
    /// The registry, serving KEDA's `keda_*` families beside Windlass's when `keda_metrics`.
    pub fn new(keda_metrics: bool) -> Self {
        let mut registry = Registry::with_prefix("windlass");
        registry.register(
            "build",
            "Windlass build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let metrics = Self {
            scaler_value: Family::default(),
            scaler_latency: Family::new_with_constructor(latency_histogram),
            scaler_poll_lag: poll_lag_histogram(),
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
            keda: keda::KedaMetrics::default(),
            keda_registry: None,
            scaled_jobs: ScaledJobMetrics::default(),
            registry,
        };
        let mut metrics = metrics;
        if keda_metrics {
            metrics.keda_registry = Some(metrics.keda.registry());
        }
        let registry = &mut metrics.registry;
        metrics.scaled_jobs.register(registry);
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
            "scaler_poll_lag_seconds",
            "How late each poll of a ScaledObject or ScaledJob started after its scheduled tick",
            metrics.scaler_poll_lag.clone(),
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

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        if let Some(keda) = &self.keda_registry {
            encode_registry(&mut out, keda).expect("writing to a String cannot fail");
        }
        encode_eof(&mut out).expect("writing to a String cannot fail");
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

    use super::keda::{ScalableKind, ScalerSeries, metric_name};
    use std::time::Duration;

    fn sqs_series(kind: ScalableKind, object: &str, scaler: &str) -> ScalerSeries {
        ScalerSeries {
            namespace: "jobs".into(),
            object: object.into(),
            kind,
            scaler: scaler.into(),
            trigger_index: 0,
            metric: metric_name(0, "aws-sqs-orders"),
        }
    }

    /// The sample lines of `text` whose name is `name`, sorted (a family's order is not).
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|line| line.split(['{', ' ']).next() == Some(name))
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn keda_families_carry_kedas_names_labels_and_types() {
        let metrics = Metrics::new(true);
        let keda = &metrics.keda;
        let object = sqs_series(ScalableKind::ScaledObject, "worker", "queue");
        keda.read(&object, 7.0, Some(true), Duration::from_millis(250));
        keda.object_polled(ScalableKind::ScaledObject, "jobs", "worker");
        keda.paused("jobs", "worker", false);
        let job = sqs_series(ScalableKind::ScaledJob, "batch", "awsSqsQueueScaler");
        keda.read(&job, 3.0, Some(false), Duration::from_millis(500));
        keda.read_failed(&job, Duration::from_secs(2));
        let text = metrics.encode();

        let object_labels = r#"{metric="s0-aws-sqs-orders",namespace="jobs",scaledObject="worker",scaler="queue",triggerIndex="0",type="scaledobject"}"#;
        let job_labels = r#"{metric="s0-aws-sqs-orders",namespace="jobs",scaledObject="batch",scaler="awsSqsQueueScaler",triggerIndex="0",type="scaledjob"}"#;
        assert_eq!(
            samples(&text, "keda_scaler_metrics_value"),
            [
                format!("keda_scaler_metrics_value{job_labels} 3.0"),
                format!("keda_scaler_metrics_value{object_labels} 7.0"),
            ],
            "{text}"
        );
        assert!(
            text.contains("# TYPE keda_scaler_metrics_latency_seconds gauge\n"),
            "a gauge, as KEDA 2.16+: {text}"
        );
        assert_eq!(
            samples(&text, "keda_scaler_metrics_latency_seconds"),
            [
                format!("keda_scaler_metrics_latency_seconds{job_labels} 2.0"),
                format!("keda_scaler_metrics_latency_seconds{object_labels} 0.25"),
            ],
            "the latest read's, failed or not"
        );
        assert_eq!(
            samples(&text, "keda_scaler_active"),
            [
                format!("keda_scaler_active{job_labels} 0"),
                format!("keda_scaler_active{object_labels} 1"),
            ]
        );
        assert!(text.contains("# TYPE keda_scaler_detail_errors counter\n"));
        assert_eq!(
            samples(&text, "keda_scaler_detail_errors_total"),
            [
                format!("keda_scaler_detail_errors_total{job_labels} 1"),
                format!("keda_scaler_detail_errors_total{object_labels} 0"),
            ]
        );
        assert_eq!(
            samples(&text, "keda_scaled_object_paused"),
            [r#"keda_scaled_object_paused{namespace="jobs",scaledObject="worker"} 0"#]
        );
        assert_eq!(
            samples(&text, "keda_scaled_object_errors_total"),
            [r#"keda_scaled_object_errors_total{namespace="jobs",scaledObject="worker"} 0"#]
        );
        assert_eq!(
            samples(&text, "keda_scaled_job_errors_total"),
            [r#"keda_scaled_job_errors_total{namespace="jobs",scaledJob="batch"} 1"#]
        );
        assert!(
            text.contains("windlass_build_info") && text.ends_with("# EOF\n"),
            "one exposition, windlass_* first and one EOF: {text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn keda_families_are_not_served_when_turned_off() {
        let metrics = Metrics::new(false);
        let series = sqs_series(ScalableKind::ScaledObject, "worker", "queue");
        metrics
            .keda
            .read(&series, 7.0, Some(true), Duration::from_millis(250));
        metrics.keda.paused("jobs", "worker", true);
        metrics
            .keda
            .object_error(ScalableKind::ScaledJob, "jobs", "batch");
        let text = metrics.encode();
        assert!(!text.contains("keda_"), "{text}");
        assert!(text.contains("windlass_build_info"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_formula_is_keda_s_composite_metric_and_its_triggers_report_no_activity() {
        let metrics = Metrics::default();
        let trigger = sqs_series(ScalableKind::ScaledObject, "worker", "queue");
        metrics
            .keda
            .read(&trigger, 4.0, None, Duration::from_millis(10));
        metrics
            .keda
            .composed(&ScalerSeries::composite("jobs", "worker"), 12.0, true);
        let text = metrics.encode();
        let composite = r#"{metric="composite-metric",namespace="jobs",scaledObject="worker",scaler="composite-metric",triggerIndex="0",type="scaledobject"}"#;
        assert_eq!(
            samples(&text, "keda_scaler_active"),
            [format!("keda_scaler_active{composite} 1")],
            "{text}"
        );
        assert!(
            samples(&text, "keda_scaler_metrics_value")
                .contains(&format!("keda_scaler_metrics_value{composite} 12.0").as_str())
        );
    }

    #[test]
    fn a_removed_trigger_and_a_deleted_object_leave_no_keda_series() {
        let metrics = Metrics::default();
        let keda = &metrics.keda;
        let first = sqs_series(ScalableKind::ScaledObject, "worker", "first");
        let second = sqs_series(ScalableKind::ScaledObject, "worker", "second");
        let other = sqs_series(ScalableKind::ScaledObject, "other", "first");
        for series in [&first, &second, &other] {
            keda.read(series, 1.0, Some(true), Duration::from_millis(10));
        }
        keda.read_failed(&second, Duration::from_millis(10));
        keda.paused("jobs", "worker", true);

        keda.retain_scalers(
            ScalableKind::ScaledObject,
            "jobs",
            "worker",
            std::slice::from_ref(&first),
        );
        let text = metrics.encode();
        assert!(!text.contains(r#"scaler="second""#), "{text}");
        assert_eq!(samples(&text, "keda_scaler_metrics_value").len(), 2);

        keda.forget(ScalableKind::ScaledObject, "jobs", "worker");
        let text = metrics.encode();
        assert!(!text.contains(r#"scaledObject="worker""#), "{text}");
        assert_eq!(
            samples(&text, "keda_scaler_metrics_value").len(),
            1,
            "the other object's series stay: {text}"
        );
    }

    #[test]
    fn keda_metric_names_carry_the_trigger_index_and_dashes() {
        assert_eq!(metric_name(0, "aws-sqs-orders"), "s0-aws-sqs-orders");
        assert_eq!(
            metric_name(2, "aws-sqs-orders.fifo"),
            "s2-aws-sqs-orders-fifo"
        );
        assert_eq!(metric_name(1, "a/b:c%d(e)"), "s1-a-b-c-d-e-");
    }

    #[test]
    fn scaled_job_counters_count_each_finished_job_once() {
        let metrics = Metrics::default();
        let labels = ObjectLabels {
            namespace: "jobs".into(),
            name: "batch".into(),
        };
        let totals = |succeeded, failed, retries| FinishedJobs {
            succeeded,
            failed,
            retries,
        };
        let jobs = &metrics.scaled_jobs;
        // Status counted before this process started: not this process's to count.
        jobs.finished(&labels, totals(10, 1, 3), totals(12, 1, 4));
        // The watch had not delivered the written status yet: the same totals again.
        jobs.finished(&labels, totals(10, 1, 3), totals(12, 1, 4));
        jobs.finished(&labels, totals(12, 1, 4), totals(12, 2, 6));
        jobs.created.get_or_create(&labels).inc_by(5);
        jobs.running.get_or_create(&labels).set(3);
        jobs.pending.get_or_create(&labels).set(1);
        let text = metrics.encode();
        for line in [
            r#"windlass_scaled_job_jobs_succeeded_total{namespace="jobs",name="batch"} 2"#,
            r#"windlass_scaled_job_jobs_failed_total{namespace="jobs",name="batch"} 1"#,
            r#"windlass_scaled_job_retries_total{namespace="jobs",name="batch"} 3"#,
            r#"windlass_scaled_job_jobs_created_total{namespace="jobs",name="batch"} 5"#,
            r#"windlass_scaled_job_jobs_running{namespace="jobs",name="batch"} 3"#,
            r#"windlass_scaled_job_jobs_pending{namespace="jobs",name="batch"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
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
