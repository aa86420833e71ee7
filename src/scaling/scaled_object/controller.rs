//! The ScaledObject controller. The reconciler only starts, refreshes, restarts (on a spec
//! change) and stops one polling loop per object, KEDA's scale loop. Each loop reads the
//! triggers, decides with `replicas::decide`, writes the target's `/scale`, and writes status.
//! A loop whose target is scaled by another owner (`ownership`) leaves it alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::modifiers::Composition;
use super::ownership::{OtherOwner, other_owner};
use super::replicas::{Behavior, Decision, ReplicaPolicy, ScalerState, TriggerReport, decide};
use crate::apis::conditions::{self, condition};
use crate::apis::labels::SCALED_OBJECT_FINALIZER;
use crate::apis::labels::{
    FORCE_ACTIVATION_ANNOTATION, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION,
    PAUSED_SCALE_IN_ANNOTATION, PAUSED_SCALE_OUT_ANNOTATION, autoscaling_annotation,
};
use crate::apis::scaled_object::{HealthStatus, ScaledObject, ScaledObjectStatus, TriggerHealth};
use crate::apis::trigger_auth::UserKind;
use crate::apis::triggers::MetricType;
use crate::apis::triggers::TriggerValue;
use crate::metrics::keda::{ScalableKind, ScalerSeries};
use crate::metrics::{ErrorLabels, ObjectLabels, TriggerLabels};
use crate::scale_outs::Demand;
use crate::scaling::auth_users::{AuthUses, UserKey};
use crate::scaling::scalers::Scaler;
use crate::scaling::target::{ScaleTarget, TargetError};
use crate::scaling::triggers::SetupError;
use crate::scaling::{
    SETUP_LIFETIME, Scaling, publish, report_event_once, trigger_readiness, triggers,
};
use crate::status::apply_status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("ScaledObject has no namespace")]
    NoNamespace,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Finalizer(_) => "finalizer",
            Error::Target(e) => e.metric_label(),
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// What the ScaledObjects and HPAs of the watched namespaces are, to tell who owns a target.
#[derive(Clone)]
struct Owners {
    scaled_objects: Store<ScaledObject>,
    autoscalers: Store<HorizontalPodAutoscaler>,
}

impl Owners {
    /// Who else scales `object`'s target, once both stores hold their first list.
    async fn other_owner(&self, object: &ScaledObject) -> Option<OtherOwner> {
        // A store whose watch has ended holds nothing more to wait for.
        let _ = self.scaled_objects.wait_until_ready().await;
        let _ = self.autoscalers.wait_until_ready().await;
        other_owner(
            object,
            self.scaled_objects.state().iter().map(|o| &**o),
            self.autoscalers.state().iter().map(|o| &**o),
        )
    }
}

struct Context {
    scaling: Arc<Scaling>,
    owners: Owners,
}

/// Runs the controller until `shutdown`.
pub async fn run(scaling: Arc<Scaling>, shutdown: CancellationToken) {
    let controller = Controller::new(
        scaling.watched::<ScaledObject>(),
        watcher::Config::default(),
    );
    let (autoscalers, writer) = reflector::store();
    let autoscalers_watch = reflector::reflector(
        writer,
        watcher(
            scaling.watched::<HorizontalPodAutoscaler>(),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .take_until(shutdown.clone().cancelled_owned())
    .for_each(|_| futures::future::ready(()));
    let context = Arc::new(Context {
        scaling: scaling.clone(),
        owners: Owners {
            scaled_objects: controller.store(),
            autoscalers,
        },
    });
    let controller = controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()));
    futures::join!(controller, autoscalers_watch);
    scaling.scaled_object_loops.stop_all();
}

fn user(object: &ScaledObject) -> UserKey {
    UserKey {
        kind: UserKind::ScaledObject,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    }
}

async fn reconcile(object: Arc<ScaledObject>, context: Arc<Context>) -> Result<Action, Error> {
    let scaling = &context.scaling;
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<ScaledObject> = Api::namespaced(scaling.client.clone(), &namespace);
    finalizer(&api, SCALED_OBJECT_FINALIZER, object, |event| async {
        match event {
            Finalizer::Apply(object) => {
                scaling.metrics.keda.paused(
                    &namespace,
                    &object.name_any(),
                    pause(object.annotations()).paused,
                );
                let (for_loop, owners) = (scaling.clone(), context.owners.clone());
                scaling
                    .scaled_object_loops
                    .ensure(object, |latest, cancel| {
                        tokio::spawn(scale_loop(for_loop, owners, latest, cancel));
                    });
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(object) => {
                scaling.scaled_object_loops.stop(&object);
                scaling.auth_users.forget(&user(&object));
                scaling.metrics.keda.forget(
                    ScalableKind::ScaledObject,
                    &namespace,
                    &object.name_any(),
                );
                scaling.scale_outs.ended(
                    KIND,
                    &object.namespace().unwrap_or_default(),
                    &object.name_any(),
                );
                // The target's replicas are its owner's to set.
                if context.owners.other_owner(&object).await.is_none() {
                    restore_original_replicas(scaling, &object).await?;
                }
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(object: Arc<ScaledObject>, error: &Error, context: Arc<Context>) -> Action {
    let scaling = &context.scaling;
    warn!(name = %object.name_any(), %error, "ScaledObject reconcile failed");
    let labels = ErrorLabels {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        error: error.metric_label().into(),
    };
    scaling.metrics.scaler_errors.get_or_create(&labels).inc();
    Action::requeue(Duration::from_secs(5))
}

async fn restore_original_replicas(scaling: &Scaling, object: &ScaledObject) -> Result<(), Error> {
    let restore = object
        .spec
        .advanced
        .as_ref()
        .is_some_and(|a| a.restore_to_original_replica_count);
    let Some(original) = object
        .status
        .as_ref()
        .and_then(|s| s.original_replica_count)
        .filter(|_| restore)
    else {
        return Ok(());
    };
    let namespace = object.namespace().ok_or(Error::NoNamespace)?;
    let target = match ScaleTarget::resolve(
        &scaling.client,
        &namespace,
        &object.spec.scale_target_ref,
    )
    .await
    {
        Ok(target) => target,
        // Nothing left to restore.
        Err(TargetError::NotFound { .. } | TargetError::Unknown { .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    match target.scale(original).await {
        Ok(()) | Err(TargetError::NotFound { .. }) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

/// One trigger, ready to read.
struct PolledTrigger {
    name: String,
    metric_type: MetricType,
    scaler: Box<dyn Scaler>,
    keda: ScalerSeries,
}

/// What a loop needs to poll, built from the spec and refreshed every SETUP_LIFETIME.
struct Setup {
    target: ScaleTarget,
    policy: ReplicaPolicy,
    triggers: Vec<PolledTrigger>,
    /// The scalingModifiers formula that replaces the triggers' readings, when set.
    composition: Option<Composition>,
    built_at: tokio::time::Instant,
}

/// Builds the loop's setup and reports which authentications it resolved.
async fn setup_reported(scaling: &Scaling, object: &ScaledObject) -> Result<Setup, SetupError> {
    let mut uses = AuthUses::default();
    let built = setup(scaling, object, &mut uses).await;
    let namespace = object.namespace().unwrap_or_default();
    scaling.auth_users.report(
        user(object),
        uses.completed(&object.spec.triggers, &namespace, &built),
    );
    built
}

async fn setup(
    scaling: &Scaling,
    object: &ScaledObject,
    uses: &mut AuthUses,
) -> Result<Setup, SetupError> {
    let namespace = object.namespace().unwrap_or_default();
    let spec = &object.spec;
    let target = ScaleTarget::resolve(&scaling.client, &namespace, &spec.scale_target_ref).await?;
    let behavior = Behavior::from_spec(
        spec.advanced
            .as_ref()
            .and_then(|a| a.horizontal_pod_autoscaler_config.as_ref())
            .and_then(|h| h.behavior.as_ref()),
    )?;
    let composition = spec
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .map(|modifiers| Composition::compile(modifiers, &spec.triggers))
        .transpose()?;
    let created_at = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    let policy = ReplicaPolicy {
        min: spec.min_replica_count,
        max: spec.max_replica_count,
        idle: spec.idle_replica_count,
        cooldown: SignedDuration::from_secs(spec.cooldown_period.into()),
        initial_cooldown: SignedDuration::from_secs(spec.initial_cooldown_period.into()),
        created_at,
        fallback: spec.fallback.clone(),
        behavior,
    };
    let env = triggers::EnvSource {
        pod_spec: target.pod_spec().await?,
        owner: target.describe(),
    };
    let container = spec.scale_target_ref.env_source_container_name.as_deref();
    let mut built = Vec::new();
    for (index, trigger) in spec.triggers.iter().enumerate() {
        let scaler = triggers::scaler(scaling, &namespace, trigger, &env, container, uses)
            .await
            .map_err(|e| e.at(index))?;
        let name = trigger
            .name
            .clone()
            .unwrap_or_else(|| format!("trigger-{index}"));
        let keda = triggers::keda_series(
            ScalableKind::ScaledObject,
            &namespace,
            &object.name_any(),
            index,
            trigger,
            scaler.as_ref(),
        );
        built.push(PolledTrigger {
            name,
            metric_type: trigger.metric_type.unwrap_or_default(),
            scaler,
            keda,
        });
    }
    let mut keda_series: Vec<ScalerSeries> = built.iter().map(|t| t.keda.clone()).collect();
    if composition.is_some() {
        keda_series.push(ScalerSeries::composite(&namespace, &object.name_any()));
    }
    scaling.metrics.keda.retain_scalers(
        ScalableKind::ScaledObject,
        &namespace,
        &object.name_any(),
        &keda_series,
    );
    Ok(Setup {
        target,
        policy,
        triggers: built,
        composition,
        built_at: tokio::time::Instant::now(),
    })
}

async fn scale_loop(
    scaling: Arc<Scaling>,
    owners: Owners,
    mut latest: watch::Receiver<Arc<ScaledObject>>,
    cancel: CancellationToken,
) {
    let first = latest.borrow_and_update().clone();
    let interval = Duration::from_secs(first.spec.polling_interval.max(1) as u64);
    let mut state = ScalerState::resumed(
        first
            .status
            .as_ref()
            .and_then(|s| s.last_active_time.as_ref())
            .map(|t| t.0),
    );
    let mut failures = Failures {
        triggers: vec![0; first.spec.triggers.len()],
        formula: 0,
    };
    let mut ready: Option<Setup> = None;
    let mut last_problem: Option<String> = None;
    let mut clock = scaling.queue_depths.poll_clock(interval);
    loop {
        let tick = tokio::select! {
            _ = cancel.cancelled() => {
                // Stopped for a deletion while polling: the cleanup may have dropped the
                // object's KEDA series before the poll wrote them again.
                if !scaling.scaled_object_loops.runs(&first) {
                    scaling.metrics.keda.forget(
                        ScalableKind::ScaledObject,
                        &first.namespace().unwrap_or_default(),
                        &first.name_any(),
                    );
                }
                return;
            }
            tick = clock.tick() => tick,
        };
        scaling
            .metrics
            .scaler_poll_lag
            .observe(tick.elapsed().as_secs_f64());
        let object = latest.borrow().clone();
        let labels = ObjectLabels {
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        };
        if ready
            .as_ref()
            .is_some_and(|s| s.built_at.elapsed() >= SETUP_LIFETIME)
        {
            ready = None;
        }
        if ready.is_none() {
            match setup_reported(&scaling, &object).await {
                Ok(built) => {
                    if let Some(first) = built.triggers.first() {
                        clock.follow(first.scaler.source());
                    }
                    ready = Some(built);
                }
                Err(error) => {
                    scaling.metrics.keda.object_error(
                        ScalableKind::ScaledObject,
                        &labels.namespace,
                        &labels.name,
                    );
                    let labels = ErrorLabels {
                        namespace: labels.namespace,
                        name: labels.name,
                        error: error.metric_label().into(),
                    };
                    scaling.metrics.scaler_errors.get_or_create(&labels).inc();
                    report_problem(
                        &scaling,
                        &object,
                        error.reason(),
                        &error.to_string(),
                        &mut last_problem,
                    )
                    .await;
                    continue;
                }
            }
        }
        let setup = ready.as_ref().expect("set above");
        if let Some(owner) = owners.other_owner(&object).await {
            let target = &object.spec.scale_target_ref;
            let message = format!(
                "{} {:?} is scaled by {owner}; this ScaledObject leaves its replicas alone while that lasts",
                target.kind, target.name
            );
            report_problem(
                &scaling,
                &object,
                "TargetOwnedByAnother",
                &message,
                &mut last_problem,
            )
            .await;
            continue;
        }
        let started = tokio::time::Instant::now();
        if let Err(error) = poll(
            &scaling,
            &object,
            setup,
            tick,
            &mut state,
            &mut failures,
            &mut last_problem,
        )
        .await
        {
            if matches!(
                error,
                TargetError::NotFound { .. }
                    | TargetError::Unknown { .. }
                    | TargetError::NotScalable { .. }
            ) {
                ready = None;
            }
            let labels = ErrorLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                error: error.metric_label().into(),
            };
            scaling.metrics.scaler_errors.get_or_create(&labels).inc();
            report_problem(
                &scaling,
                &object,
                "ScaleTargetError",
                &error.to_string(),
                &mut last_problem,
            )
            .await;
        }
        scaling
            .metrics
            .scaler_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
}

const KIND: &str = "ScaledObject";

/// Consecutive failed polls, per trigger and of the scalingModifiers formula.
struct Failures {
    triggers: Vec<u32>,
    formula: u32,
}

/// Tells disruption and the provisioner what is scaling out: a raise holds consolidation off
/// the pools its pods run in and hands the provisioner its demand; a cut ends both.
async fn record_scale_out(
    scaling: &Scaling,
    object: &ScaledObject,
    target: &ScaleTarget,
    from: i32,
    to: i32,
) {
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    if to <= from {
        scaling.scale_outs.ended(KIND, &namespace, &name);
        return;
    }
    let template = match target.pod_template().await {
        Ok(template) => template.unwrap_or_default(),
        Err(error) => {
            warn!(%namespace, %name, %error, "reading the target's pod template failed; its scale-out holds no consolidation and launches nothing ahead");
            return;
        }
    };
    let pod_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let demand = Demand::of(object.annotations(), &namespace, &template, to as usize);
    let interval = SignedDuration::from_secs(i64::from(object.spec.polling_interval.max(1)));
    scaling.scale_outs.raised(
        object.object_ref(&()),
        pod_labels,
        demand,
        interval,
        Timestamp::now(),
    );
}

/// The pause switches, read from the object's annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pause {
    paused: bool,
    replicas: Option<i32>,
    scale_in: bool,
    scale_out: bool,
    force_active: bool,
}

/// Each switch is read under `autoscaling.windlass.dev/` or KEDA's `autoscaling.keda.sh/`
/// ([`autoscaling_annotation`]: Windlass's key wins when both are set).
fn pause(annotations: &BTreeMap<String, String>) -> Pause {
    let on = |key: &str| autoscaling_annotation(annotations, key).is_some_and(|v| v == "true");
    let replicas = autoscaling_annotation(annotations, PAUSED_REPLICAS_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &i32| *n >= 0);
    Pause {
        paused: on(PAUSED_ANNOTATION) || replicas.is_some(),
        replicas,
        scale_in: on(PAUSED_SCALE_IN_ANNOTATION),
        scale_out: on(PAUSED_SCALE_OUT_ANNOTATION),
        force_active: on(FORCE_ACTIVATION_ANNOTATION),
    }
}

/// The replicas to write, given the decision and the pause switches.
fn apply_pause(pause: Pause, current: i32, decided: i32) -> i32 {
    if pause.paused {
        return pause.replicas.unwrap_or(current);
    }
    let mut replicas = decided;
    if pause.scale_in {
        replicas = replicas.max(current);
    }
    if pause.scale_out {
        replicas = replicas.min(current);
    }
    replicas
}

async fn poll(
    scaling: &Scaling,
    object: &ScaledObject,
    setup: &Setup,
    tick: tokio::time::Instant,
    state: &mut ScalerState,
    failures: &mut Failures,
    last_problem: &mut Option<String>,
) -> Result<(), TargetError> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let now = Timestamp::now();
    let current = setup.target.replicas().await?;
    let mut reports = Vec::with_capacity(setup.triggers.len());
    let mut health = BTreeMap::new();
    let mut trigger_errors = Vec::new();
    // A trigger that cannot be read keeps the value it last read.
    let mut trigger_values = object
        .status
        .as_ref()
        .map(|s| s.trigger_values.clone())
        .unwrap_or_default();
    trigger_values.retain(|name, _| setup.triggers.iter().any(|t| t.name == *name));
    for (index, polled) in setup.triggers.iter().enumerate() {
        let (trigger, metric_type) = (&polled.name, &polled.metric_type);
        let labels = TriggerLabels {
            namespace: namespace.clone(),
            name: name.clone(),
            trigger: trigger.clone(),
        };
        let started = tokio::time::Instant::now();
        let read = polled.scaler.read(tick).await;
        let latency = started.elapsed();
        match read {
            Ok(reading) => {
                failures.triggers[index] = 0;
                scaling
                    .metrics
                    .scaler_value
                    .get_or_create(&labels)
                    .set(reading.value);
                // With a formula, KEDA reports the formula's activity, not the triggers'.
                let active = setup
                    .composition
                    .is_none()
                    .then_some(reading.value > reading.activation);
                scaling
                    .metrics
                    .keda
                    .read(&polled.keda, reading.value, active, latency);
                trigger_values.insert(
                    trigger.clone(),
                    TriggerValue {
                        value: reading.value,
                        target: reading.target,
                    },
                );
                reports.push(TriggerReport::Metric {
                    value: reading.value,
                    target: reading.target,
                    activation: reading.activation,
                    metric_type: *metric_type,
                });
            }
            Err(error) => {
                failures.triggers[index] += 1;
                scaling.metrics.keda.read_failed(&polled.keda, latency);
                let error_labels = ErrorLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    error: error.metric_label().into(),
                };
                scaling
                    .metrics
                    .scaler_errors
                    .get_or_create(&error_labels)
                    .inc();
                trigger_errors.push(format!("{trigger}: {error}"));
                reports.push(TriggerReport::Failed {
                    consecutive: failures.triggers[index],
                });
            }
        }
        let status = if failures.triggers[index] == 0 {
            HealthStatus::Happy
        } else {
            HealthStatus::Failing
        };
        health.insert(
            trigger.clone(),
            TriggerHealth {
                number_of_failures: failures.triggers[index] as i32,
                status,
            },
        );
    }

    if let Some(composition) = &setup.composition {
        let (composed, error) = composition.compose(&reports, &mut failures.formula);
        if let TriggerReport::Metric {
            value, activation, ..
        } = composed
        {
            scaling.metrics.keda.composed(
                &ScalerSeries::composite(&namespace, &name),
                value,
                value > activation,
            );
        }
        if let Some(error) = error {
            let error_labels = ErrorLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                error: "scaling_modifiers".into(),
            };
            scaling
                .metrics
                .scaler_errors
                .get_or_create(&error_labels)
                .inc();
            scaling
                .metrics
                .keda
                .object_error(ScalableKind::ScaledObject, &namespace, &name);
            trigger_errors.push(error.to_string());
        }
        reports = vec![composed];
    }
    if trigger_errors.is_empty() {
        scaling
            .metrics
            .keda
            .object_polled(ScalableKind::ScaledObject, &namespace, &name);
    }

    let pause = pause(object.annotations());
    let decision = if pause.paused {
        Decision {
            replicas: current,
            active: false,
            fallback: false,
        }
    } else {
        decide(
            &setup.policy,
            state,
            now,
            current,
            &reports,
            pause.force_active,
        )
    };
    let replicas = apply_pause(pause, current, decision.replicas);
    if replicas != current {
        setup.target.scale(replicas).await?;
        state.record_scale(now, current, replicas);
        record_scale_out(scaling, object, &setup.target, current, replicas).await;
        let (reason, verb) = if replicas > current {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        info!(%namespace, %name, from = current, to = replicas, "scaled {verb}");
        publish(
            scaling,
            object,
            EventType::Normal,
            reason,
            format!(
                "Scaled {} from {current} to {replicas}",
                setup.target.kind()
            ),
        )
        .await;
    }
    let active_labels = ObjectLabels {
        namespace: namespace.clone(),
        name: name.clone(),
    };
    scaling
        .metrics
        .scaler_active
        .get_or_create(&active_labels)
        .set(i64::from(decision.active));

    let previous = object.status.clone().unwrap_or_default();
    let generation = object.metadata.generation;
    let existing = &previous.conditions;
    let ready = trigger_readiness(
        scaling,
        object,
        existing,
        &trigger_errors,
        last_problem,
        generation,
        now,
    )
    .await;
    let status = ScaledObjectStatus {
        observed_generation: generation,
        conditions: vec![
            ready,
            condition(
                existing,
                conditions::ACTIVE,
                decision.active,
                if decision.active {
                    "ScalerActive"
                } else {
                    "ScalerNotActive"
                },
                "",
                generation,
                now,
            ),
            condition(
                existing,
                conditions::FALLBACK,
                decision.fallback,
                if decision.fallback {
                    "FallbackApplied"
                } else {
                    "NoFallback"
                },
                "",
                generation,
                now,
            ),
            condition(
                existing,
                conditions::PAUSED,
                pause.paused,
                if pause.paused {
                    "ScaledObjectPaused"
                } else {
                    "ScaledObjectUnpaused"
                },
                "",
                generation,
                now,
            ),
        ],
        scale_target_kind: Some(setup.target.kind().to_owned()),
        original_replica_count: previous.original_replica_count.or(Some(current)),
        current_replicas: Some(replicas),
        desired_replicas: Some(decision.replicas),
        last_active_time: state.last_active.map(Time),
        health,
        paused_replica_count: pause.replicas,
        trigger_values,
        last_scale_time: if replicas != current {
            Some(Time(now))
        } else {
            previous.last_scale_time.clone()
        },
    };
    write_status(scaling, object, &previous, status).await;
    Ok(())
}

/// Writes status when it changed; `lastActiveTime` alone is refreshed at most once a minute.
async fn write_status(
    scaling: &Scaling,
    object: &ScaledObject,
    previous: &ScaledObjectStatus,
    status: ScaledObjectStatus,
) {
    let stale_activity = crate::scaling::activity_is_stale(
        previous.last_active_time.as_ref(),
        status.last_active_time.as_ref(),
    );
    let unchanged = ScaledObjectStatus {
        last_active_time: previous.last_active_time.clone(),
        ..status.clone()
    } == *previous;
    if unchanged && !stale_activity {
        return;
    }
    let api: Api<ScaledObject> = Api::namespaced(
        scaling.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    if let Err(error) = apply_status(&api, &object.name_any(), &status, None).await {
        warn!(name = %object.name_any(), %error, "writing ScaledObject status failed");
    }
}

/// Ready=False with the reason, and an Event the first time this problem is seen.
async fn report_problem(
    scaling: &Scaling,
    object: &ScaledObject,
    reason: &str,
    message: &str,
    last_problem: &mut Option<String>,
) {
    warn!(name = %object.name_any(), %reason, %message, "ScaledObject cannot scale");
    let previous = object.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let mut status = previous.clone();
    status.observed_generation = object.metadata.generation;
    let ready = condition(
        &previous.conditions,
        conditions::READY,
        false,
        reason,
        message,
        object.metadata.generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != conditions::READY);
    status.conditions.insert(0, ready);
    write_status(scaling, object, &previous, status).await;
    report_event_once(scaling, object, reason, message, last_problem).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paused_holds_current_replicas_or_the_paused_count() {
        let paused = pause(&annotations(&[(PAUSED_ANNOTATION, "true")]));
        assert_eq!(apply_pause(paused, 4, 10), 4);
        let pinned = pause(&annotations(&[(PAUSED_REPLICAS_ANNOTATION, "2")]));
        assert!(pinned.paused);
        assert_eq!(apply_pause(pinned, 4, 10), 2);
    }

    #[test]
    fn paused_scale_in_and_out_block_one_direction() {
        let no_in = pause(&annotations(&[(PAUSED_SCALE_IN_ANNOTATION, "true")]));
        assert_eq!(apply_pause(no_in, 4, 1), 4);
        assert_eq!(apply_pause(no_in, 4, 9), 9);
        let no_out = pause(&annotations(&[(PAUSED_SCALE_OUT_ANNOTATION, "true")]));
        assert_eq!(apply_pause(no_out, 4, 9), 4);
        assert_eq!(apply_pause(no_out, 4, 1), 1);
    }

    #[test]
    fn keda_spelled_switches_work_and_windlass_spelled_ones_win() {
        let keda = pause(&annotations(&[
            ("autoscaling.keda.sh/paused-scale-in", "true"),
            ("autoscaling.keda.sh/force-activation", "true"),
        ]));
        assert!(keda.scale_in && keda.force_active && !keda.paused);
        let pinned = pause(&annotations(&[(
            "autoscaling.keda.sh/paused-replicas",
            "3",
        )]));
        assert_eq!(apply_pause(pinned, 4, 10), 3);
        let both = pause(&annotations(&[
            ("autoscaling.keda.sh/paused-replicas", "3"),
            (PAUSED_REPLICAS_ANNOTATION, "1"),
            ("autoscaling.keda.sh/paused", "true"),
            (PAUSED_ANNOTATION, "false"),
        ]));
        assert_eq!(apply_pause(both, 4, 10), 1);
        let unpaused = pause(&annotations(&[
            ("autoscaling.keda.sh/paused", "true"),
            (PAUSED_ANNOTATION, "false"),
        ]));
        assert!(!unpaused.paused, "windlass's false overrides KEDA's true");
    }

    #[test]
    fn only_true_switches_and_valid_counts_count() {
        let switches = pause(&annotations(&[
            (PAUSED_ANNOTATION, "yes"),
            (PAUSED_REPLICAS_ANNOTATION, "-1"),
            (FORCE_ACTIVATION_ANNOTATION, "true"),
        ]));
        assert_eq!(
            switches,
            Pause {
                force_active: true,
                ..Pause::default()
            }
        );
    }
}
