//! KEDA's own metric families (`keda_*`, as KEDA 2.16 and later expose them on the operator's
//! `/metrics`), so dashboards and alerts written for KEDA work against Windlass unchanged.
//! Names, label names and label values follow KEDA; where KEDA leaves stale or double-counted
//! series, Windlass does not (see the README's metrics section).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which kind of object a series belongs to: KEDA's `type` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ScalableKind {
    ScaledObject,
    ScaledJob,
}

impl ScalableKind {
    fn label(self) -> &'static str {
        match self {
            ScalableKind::ScaledObject => "scaledobject",
            ScalableKind::ScaledJob => "scaledjob",
        }
    }
}

/// The scaler and metric labels KEDA gives the series of the `scalingModifiers` formula.
pub const COMPOSITE_METRIC: &str = "composite-metric";

/// One trigger's metric, KEDA's label set for the `keda_scaler_*` families. KEDA names the
/// object's label `scaledObject` for ScaledJobs too, and tells the two apart by `type`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ScalerSeries {
    pub namespace: String,
    /// The ScaledObject's or ScaledJob's name.
    pub object: String,
    pub kind: ScalableKind,
    /// The trigger's `name`, or KEDA's name of its scaler type (`awsSqsQueueScaler`).
    pub scaler: String,
    pub trigger_index: usize,
    /// KEDA's metric name, `s<triggerIndex>-<scaler's metric name>`.
    pub metric: String,
}

impl ScalerSeries {
    /// The series of the `scalingModifiers` formula, which KEDA reports as one more scaler.
    pub fn composite(namespace: &str, object: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            object: object.to_owned(),
            kind: ScalableKind::ScaledObject,
            scaler: COMPOSITE_METRIC.to_owned(),
            trigger_index: 0,
            metric: COMPOSITE_METRIC.to_owned(),
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            namespace: self.namespace.clone(),
            object: self.object.clone(),
            kind: self.kind,
        }
    }
}

impl EncodeLabelSet for ScalerSeries {
    // KEDA's Go client writes labels sorted by name; so does this.
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let index = self.trigger_index.to_string();
        [
            ("metric", self.metric.as_str()),
            ("namespace", self.namespace.as_str()),
            ("scaledObject", self.object.as_str()),
            ("scaler", self.scaler.as_str()),
            ("triggerIndex", index.as_str()),
            ("type", self.kind.label()),
        ]
        .encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ScaledObjectLabels {
    namespace: String,
    name: String,
}

impl EncodeLabelSet for ScaledObjectLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [
            ("namespace", self.namespace.as_str()),
            ("scaledObject", self.name.as_str()),
        ]
        .encode(encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ScaledJobLabels {
    namespace: String,
    name: String,
}

impl EncodeLabelSet for ScaledJobLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [
            ("namespace", self.namespace.as_str()),
            ("scaledJob", self.name.as_str()),
        ]
        .encode(encoder)
    }
}

/// The object a set of series belongs to.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Owner {
    namespace: String,
    object: String,
    kind: ScalableKind,
}

#[derive(Default)]
pub struct KedaMetrics {
    value: Family<ScalerSeries, Gauge<f64, AtomicU64>>,
    /// A gauge, as in KEDA 2.16 and later: the seconds the last read of the trigger took.
    latency: Family<ScalerSeries, Gauge<f64, AtomicU64>>,
    active: Family<ScalerSeries, Gauge>,
    scaler_errors: Family<ScalerSeries, Counter>,
    scaled_object_paused: Family<ScaledObjectLabels, Gauge>,
    scaled_object_errors: Family<ScaledObjectLabels, Counter>,
    scaled_job_errors: Family<ScaledJobLabels, Counter>,
    /// Every scaler series written per object, so a deleted object's series can go.
    series: Mutex<HashMap<Owner, HashSet<ScalerSeries>>>,
}

impl KedaMetrics {
    /// The families under KEDA's names, in a registry of their own (prefix `keda`).
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("keda");
        registry.register(
            "scaler_metrics_value",
            "The current value of each trigger's metric",
            self.value.clone(),
        );
        registry.register(
            "scaler_metrics_latency_seconds",
            "The seconds the last read of each trigger's metric took",
            self.latency.clone(),
        );
        registry.register(
            "scaler_active",
            "1 while a trigger is active, else 0",
            self.active.clone(),
        );
        registry.register(
            "scaler_detail_errors",
            "Failed reads of each trigger's metric",
            self.scaler_errors.clone(),
        );
        registry.register(
            "scaled_object_paused",
            "1 while a ScaledObject is paused, else 0",
            self.scaled_object_paused.clone(),
        );
        registry.register(
            "scaled_object_errors",
            "Errors of each ScaledObject: failed setups, trigger reads and formulas",
            self.scaled_object_errors.clone(),
        );
        registry.register(
            "scaled_job_errors",
            "Errors of each ScaledJob: failed setups and trigger reads",
            self.scaled_job_errors.clone(),
        );
        registry
    }

    fn remember(&self, series: &ScalerSeries) {
        self.series
            .lock()
            .expect("keda series lock")
            .entry(series.owner())
            .or_default()
            .insert(series.clone());
    }

    /// A successful read: its value, its latency, and a zero error count as KEDA initialises
    /// it. `active` is `None` for a trigger of a ScaledObject with a `scalingModifiers`
    /// formula: KEDA reports the formula's activity instead.
    pub fn read(&self, series: &ScalerSeries, value: f64, active: Option<bool>, latency: Duration) {
        self.remember(series);
        self.value.get_or_create(series).set(value);
        self.latency
            .get_or_create(series)
            .set(latency.as_secs_f64());
        if let Some(active) = active {
            self.active.get_or_create(series).set(i64::from(active));
        }
        self.scaler_errors.get_or_create(series).inc_by(0);
    }

    /// A failed read: counted for the trigger and its object; its latency still recorded.
    pub fn read_failed(&self, series: &ScalerSeries, latency: Duration) {
        self.remember(series);
        self.latency
            .get_or_create(series)
            .set(latency.as_secs_f64());
        self.scaler_errors.get_or_create(series).inc();
        self.object_error(series.kind, &series.namespace, &series.object);
    }

    /// The `scalingModifiers` formula's value and activity.
    pub fn composed(&self, series: &ScalerSeries, value: f64, active: bool) {
        self.remember(series);
        self.value.get_or_create(series).set(value);
        self.active.get_or_create(series).set(i64::from(active));
    }

    /// An error of the object's setup (its triggers' metadata, authentication or target) or
    /// formula; [`Self::read_failed`] counts its failed reads.
    pub fn object_error(&self, kind: ScalableKind, namespace: &str, name: &str) {
        match kind {
            ScalableKind::ScaledObject => {
                self.scaled_object_errors
                    .get_or_create(&ScaledObjectLabels {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                    .inc();
            }
            ScalableKind::ScaledJob => {
                self.scaled_job_errors
                    .get_or_create(&ScaledJobLabels {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// A poll without errors: the object's error count shows 0 until the first error, as
    /// KEDA initialises it.
    pub fn object_polled(&self, kind: ScalableKind, namespace: &str, name: &str) {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        match kind {
            ScalableKind::ScaledObject => {
                self.scaled_object_errors
                    .get_or_create(&ScaledObjectLabels { namespace, name })
                    .inc_by(0);
            }
            ScalableKind::ScaledJob => {
                self.scaled_job_errors
                    .get_or_create(&ScaledJobLabels { namespace, name })
                    .inc_by(0);
            }
        }
    }

    pub fn paused(&self, namespace: &str, name: &str, paused: bool) {
        self.scaled_object_paused
            .get_or_create(&ScaledObjectLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
            .set(i64::from(paused));
    }

    /// Drops the object's scaler series that are not in `current`: a trigger removed from the
    /// spec leaves no stale series behind.
    pub fn retain_scalers(
        &self,
        kind: ScalableKind,
        namespace: &str,
        name: &str,
        current: &[ScalerSeries],
    ) {
        let owner = Owner {
            namespace: namespace.to_owned(),
            object: name.to_owned(),
            kind,
        };
        let mut series = self.series.lock().expect("keda series lock");
        let Some(written) = series.get_mut(&owner) else {
            return;
        };
        written.retain(|one| {
            let keep = current.contains(one);
            if !keep {
                self.value.remove(one);
                self.latency.remove(one);
                self.active.remove(one);
                self.scaler_errors.remove(one);
            }
            keep
        });
    }

    /// Drops every series of a deleted object.
    pub fn forget(&self, kind: ScalableKind, namespace: &str, name: &str) {
        self.retain_scalers(kind, namespace, name, &[]);
        let owner = Owner {
            namespace: namespace.to_owned(),
            object: name.to_owned(),
            kind,
        };
        self.series.lock().expect("keda series lock").remove(&owner);
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        match kind {
            ScalableKind::ScaledObject => {
                let labels = ScaledObjectLabels { namespace, name };
                self.scaled_object_paused.remove(&labels);
                self.scaled_object_errors.remove(&labels);
            }
            ScalableKind::ScaledJob => {
                self.scaled_job_errors
                    .remove(&ScaledJobLabels { namespace, name });
            }
        }
    }
}

/// KEDA's metric name for a trigger: `s<index>-` before the scaler's metric name, with `/`,
/// `.`, `:`, `%`, `(` and `)` replaced by `-`.
pub fn metric_name(trigger_index: usize, scaler_metric: &str) -> String {
    let normalized: String = scaler_metric
        .chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            other => other,
        })
        .collect();
    format!("s{trigger_index}-{normalized}")
}
