//! Replica arithmetic for a ScaledObject, without I/O. KEDA's outer rules (activation, 0 ↔ min,
//! cooldown, idle replicas, fallback) wrap the HPA's algorithm (usage ratio with a tolerance,
//! 10% unless the behavior sets one per direction, the highest proposal across triggers,
//! stabilization windows, rate policies).
//! Windlass runs that algorithm itself instead of creating an HPA object.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use kube_quantity::ParsedQuantity;

use crate::apis::scaled_object::{Fallback, FallbackBehavior};
use crate::apis::triggers::MetricType;

/// The HPA's default tolerance: a usage ratio within 10% of 1 changes nothing.
pub const TOLERANCE: f64 = 0.1;

/// What one trigger reported in this poll.
#[derive(Clone, Debug, PartialEq)]
pub enum TriggerReport {
    Metric {
        value: f64,
        target: f64,
        activation: f64,
        metric_type: MetricType,
    },
    /// The poll failed; `consecutive` includes this failure.
    Failed { consecutive: u32 },
}

/// The ScaledObject's settings that shape replica decisions, resolved from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaPolicy {
    pub min: i32,
    pub max: i32,
    pub idle: Option<i32>,
    pub cooldown: SignedDuration,
    pub initial_cooldown: SignedDuration,
    pub created_at: Timestamp,
    pub fallback: Option<Fallback>,
    pub behavior: Behavior,
}

/// What a ScaledObject's loop remembers between polls, as the HPA controller does in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalerState {
    pub last_active: Option<Timestamp>,
    recommendations: VecDeque<(Timestamp, i32)>,
    scale_ups: VecDeque<(Timestamp, i32)>,
    scale_downs: VecDeque<(Timestamp, i32)>,
}

impl ScalerState {
    /// A loop's state after a restart: only the last activity survives, from status.
    pub fn resumed(last_active: Option<Timestamp>) -> Self {
        Self {
            last_active,
            ..Self::default()
        }
    }

    /// Records a change the executor made, for the rate policies.
    pub fn record_scale(&mut self, at: Timestamp, from: i32, to: i32) {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => self.scale_ups.push_back((at, to - from)),
            std::cmp::Ordering::Less => self.scale_downs.push_back((at, from - to)),
            std::cmp::Ordering::Equal => {}
        }
    }
}

/// The outcome of one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    /// Some trigger is above its activation threshold (or activation is forced).
    pub active: bool,
    /// Some trigger has failed `fallback.failureThreshold` times in a row.
    pub fallback: bool,
}

/// Decides the replicas for this poll. `current` is what the target's `/scale` reports.
pub fn decide(
    policy: &ReplicaPolicy,
    state: &mut ScalerState,
    now: Timestamp,
    current: i32,
    reports: &[TriggerReport],
    force_active: bool,
) -> Decision {
    let fallback = policy.fallback.as_ref().filter(|f| {
        reports.iter().any(|r| matches!(r, TriggerReport::Failed { consecutive } if *consecutive as i64 >= f.failure_threshold as i64))
    });
    let any_failed = reports
        .iter()
        .any(|r| matches!(r, TriggerReport::Failed { .. }));
    let active = force_active
        || reports.iter().any(
            |r| matches!(r, TriggerReport::Metric { value, activation, .. } if value > activation),
        );
    if active {
        state.last_active = Some(now);
    }
    let decision = |replicas: i32| Decision {
        replicas,
        active,
        fallback: fallback.is_some(),
    };
    let hpa_min = policy.min.max(1);
    let fallback_replicas = fallback.map(|f| fallback_replicas(f, current));

    if active || fallback.is_some() {
        let asleep = current == 0
            || policy
                .idle
                .is_some_and(|idle| current <= idle && idle < hpa_min);
        if asleep {
            let woken = hpa_min.max(fallback_replicas.unwrap_or(0)).min(policy.max);
            return decision(woken);
        }
        return decision(hpa_replicas(
            policy,
            state,
            now,
            current,
            reports,
            fallback_replicas,
        ));
    }
    // Inactive. A failing trigger might be the active one, so nothing scales down on an error.
    if any_failed {
        return decision(current);
    }
    let inactive_replicas = policy.idle.or((policy.min == 0).then_some(0));
    if let Some(resting) = inactive_replicas {
        if current <= resting {
            return decision(current);
        }
        let cooled = match state.last_active {
            Some(last) => now.duration_since(last) >= policy.cooldown,
            None => now.duration_since(policy.created_at) >= policy.initial_cooldown,
        };
        if cooled {
            return decision(resting);
        }
    }
    decision(hpa_replicas(policy, state, now, current, reports, None))
}

fn fallback_replicas(fallback: &Fallback, current: i32) -> i32 {
    match fallback.behavior {
        FallbackBehavior::Static => fallback.replicas,
        FallbackBehavior::CurrentReplicas => current,
        FallbackBehavior::CurrentReplicasIfHigher => current.max(fallback.replicas),
        FallbackBehavior::CurrentReplicasIfLower => current.min(fallback.replicas),
    }
}

/// The HPA's replicas between max(min, 1) and max: the highest proposal, stabilized, rate-limited.
fn hpa_replicas(
    policy: &ReplicaPolicy,
    state: &mut ScalerState,
    now: Timestamp,
    current: i32,
    reports: &[TriggerReport],
    fallback: Option<i32>,
) -> i32 {
    let proposals = reports.iter().filter_map(|report| match report {
        TriggerReport::Metric {
            value,
            target,
            metric_type,
            ..
        } => Some(proposal(
            *value,
            *target,
            *metric_type,
            current,
            &policy.behavior,
        )),
        TriggerReport::Failed { .. } => None,
    });
    let mut raw = proposals.chain(fallback).max().unwrap_or(current);
    // As the HPA does: while a metric cannot be read, the others may scale up but never down.
    if fallback.is_none()
        && reports
            .iter()
            .any(|r| matches!(r, TriggerReport::Failed { .. }))
    {
        raw = raw.max(current);
    }
    let stabilized = stabilize(&policy.behavior, state, now, current, raw);
    rate_limit(policy, state, now, current, stabilized)
}

/// One trigger's replica proposal: `ceil(value / target)` for AverageValue,
/// `ceil(current * value / target)` for Value; `current` while the usage ratio is within the
/// tolerance of the direction it points to.
pub fn proposal(
    value: f64,
    target: f64,
    metric_type: MetricType,
    current: i32,
    behavior: &Behavior,
) -> i32 {
    if target <= 0.0 || !value.is_finite() {
        return current;
    }
    let current = current.max(1);
    let (ratio, desired) = match metric_type {
        MetricType::Value => (value / target, (current as f64 * value / target).ceil()),
        MetricType::AverageValue | MetricType::Utilization => {
            (value / (target * current as f64), (value / target).ceil())
        }
    };
    let within = if ratio >= 1.0 {
        ratio - 1.0 <= behavior.scale_up.tolerance
    } else {
        1.0 - ratio <= behavior.scale_down.tolerance
    };
    if within {
        current
    } else {
        desired.min(i32::MAX as f64) as i32
    }
}

/// The HPA's stabilization: scale up to no more than the lowest recommendation within the
/// scale-up window, down to no less than the highest within the scale-down window.
fn stabilize(
    behavior: &Behavior,
    state: &mut ScalerState,
    now: Timestamp,
    current: i32,
    raw: i32,
) -> i32 {
    let up_cutoff = now - behavior.scale_up.stabilization;
    let down_cutoff = now - behavior.scale_down.stabilization;
    let (mut up, mut down) = (raw, raw);
    for &(at, recommendation) in &state.recommendations {
        if at > up_cutoff {
            up = up.min(recommendation);
        }
        if at > down_cutoff {
            down = down.max(recommendation);
        }
    }
    state.recommendations.push_back((now, raw));
    let keep = behavior
        .scale_up
        .stabilization
        .max(behavior.scale_down.stabilization);
    prune(&mut state.recommendations, now - keep);
    current.max(up).min(down)
}

/// The HPA's rate policies: how far replicas may move given the changes already made within
/// each policy's period; then the min/max bounds.
fn rate_limit(
    policy: &ReplicaPolicy,
    state: &mut ScalerState,
    now: Timestamp,
    current: i32,
    desired: i32,
) -> i32 {
    let (lowest, highest) = (policy.min.max(1), policy.max);
    let behavior = &policy.behavior;
    let limited = if desired > current {
        let limit = scale_limit(
            &behavior.scale_up,
            &mut state.scale_ups,
            now,
            current,
            Direction::Up,
        );
        desired.min(limit.max(current))
    } else if desired < current {
        let limit = scale_limit(
            &behavior.scale_down,
            &mut state.scale_downs,
            now,
            current,
            Direction::Down,
        );
        desired.max(limit.min(current))
    } else {
        current
    };
    limited.clamp(lowest, highest.max(lowest))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

fn scale_limit(
    rules: &ScalingRules,
    events: &mut VecDeque<(Timestamp, i32)>,
    now: Timestamp,
    current: i32,
    direction: Direction,
) -> i32 {
    let longest = rules
        .policies
        .iter()
        .map(|p| p.period)
        .max()
        .unwrap_or(SignedDuration::ZERO);
    prune(events, now - longest);
    if rules.select == SelectPolicy::Disabled || rules.policies.is_empty() {
        return current;
    }
    let limits = rules.policies.iter().map(|policy| {
        let cutoff = now - policy.period;
        let changed: i32 = events
            .iter()
            .filter(|(at, _)| *at > cutoff)
            .map(|(_, n)| n)
            .sum();
        match direction {
            Direction::Up => {
                let start = current - changed;
                match policy.kind {
                    PolicyKind::Pods => start.saturating_add(policy.value),
                    PolicyKind::Percent => {
                        (start as f64 * (1.0 + policy.value as f64 / 100.0)).ceil() as i32
                    }
                }
            }
            Direction::Down => {
                let start = current + changed;
                match policy.kind {
                    PolicyKind::Pods => start - policy.value,
                    PolicyKind::Percent => {
                        (start as f64 * (1.0 - policy.value as f64 / 100.0)) as i32
                    }
                }
            }
        }
    });
    // `Max` picks the policy that allows the most change: the highest limit up, the lowest down.
    let most_change = (rules.select == SelectPolicy::Max) == (direction == Direction::Up);
    if most_change {
        limits.max()
    } else {
        limits.min()
    }
    .unwrap_or(current)
}

fn prune(entries: &mut VecDeque<(Timestamp, i32)>, cutoff: Timestamp) {
    while entries.front().is_some_and(|(at, _)| *at <= cutoff) {
        entries.pop_front();
    }
}

/// HPA behavior with Kubernetes' defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub scale_up: ScalingRules,
    pub scale_down: ScalingRules,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScalingRules {
    pub stabilization: SignedDuration,
    pub policies: Vec<Policy>,
    pub select: SelectPolicy,
    /// How far the usage ratio may stray from 1 in this direction before it scales.
    pub tolerance: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: SignedDuration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// A behavior field held a value the HPA does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("advanced.horizontalPodAutoscalerConfig.behavior.{field}: {reason}")]
pub struct BehaviorError {
    pub field: String,
    pub reason: String,
}

impl Default for Behavior {
    /// Up: no stabilization, the larger of +4 pods or +100% per 15 s. Down: a 300 s window, -100% per 15 s.
    fn default() -> Self {
        let every_15s = SignedDuration::from_secs(15);
        Self {
            scale_up: ScalingRules {
                stabilization: SignedDuration::ZERO,
                policies: vec![
                    Policy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period: every_15s,
                    },
                    Policy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period: every_15s,
                    },
                ],
                select: SelectPolicy::Max,
                tolerance: TOLERANCE,
            },
            scale_down: ScalingRules {
                stabilization: SignedDuration::from_secs(300),
                policies: vec![Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period: every_15s,
                }],
                select: SelectPolicy::Max,
                tolerance: TOLERANCE,
            },
        }
    }
}

impl Behavior {
    /// Resolves the spec's behavior: each field left out takes Kubernetes' default.
    pub fn from_spec(
        spec: Option<&HorizontalPodAutoscalerBehavior>,
    ) -> Result<Self, BehaviorError> {
        let defaults = Self::default();
        let Some(spec) = spec else {
            return Ok(defaults);
        };
        Ok(Self {
            scale_up: resolve_rules(spec.scale_up.as_ref(), defaults.scale_up, "scaleUp")?,
            scale_down: resolve_rules(spec.scale_down.as_ref(), defaults.scale_down, "scaleDown")?,
        })
    }
}

fn resolve_rules(
    spec: Option<&HPAScalingRules>,
    defaults: ScalingRules,
    direction: &str,
) -> Result<ScalingRules, BehaviorError> {
    let Some(spec) = spec else {
        return Ok(defaults);
    };
    let error = |field: &str, reason: String| BehaviorError {
        field: format!("{direction}.{field}"),
        reason,
    };
    let stabilization = match spec.stabilization_window_seconds {
        Some(seconds) if !(0..=3600).contains(&seconds) => {
            return Err(error(
                "stabilizationWindowSeconds",
                format!("must be 0 to 3600, got {seconds}"),
            ));
        }
        Some(seconds) => SignedDuration::from_secs(seconds.into()),
        None => defaults.stabilization,
    };
    let select = match spec.select_policy.as_deref() {
        None | Some("Max") => SelectPolicy::Max,
        Some("Min") => SelectPolicy::Min,
        Some("Disabled") => SelectPolicy::Disabled,
        Some(other) => {
            return Err(error(
                "selectPolicy",
                format!("{other:?} is not Max, Min or Disabled"),
            ));
        }
    };
    let policies = match &spec.policies {
        None => defaults.policies,
        Some(policies) => policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let kind = match p.type_.as_str() {
                    "Pods" => PolicyKind::Pods,
                    "Percent" => PolicyKind::Percent,
                    other => {
                        return Err(error(
                            &format!("policies[{i}].type"),
                            format!("{other:?} is not Pods or Percent"),
                        ));
                    }
                };
                if p.value <= 0 {
                    return Err(error(
                        &format!("policies[{i}].value"),
                        format!("must be positive, got {}", p.value),
                    ));
                }
                if !(1..=1800).contains(&p.period_seconds) {
                    return Err(error(
                        &format!("policies[{i}].periodSeconds"),
                        format!("must be 1 to 1800, got {}", p.period_seconds),
                    ));
                }
                Ok(Policy {
                    kind,
                    value: p.value,
                    period: SignedDuration::from_secs(p.period_seconds.into()),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let tolerance = match &spec.tolerance {
        None => defaults.tolerance,
        Some(quantity) => match ParsedQuantity::try_from(quantity)
            .ok()
            .and_then(|q| q.to_bytes_f64())
        {
            Some(tolerance) if tolerance >= 0.0 && tolerance.is_finite() => tolerance,
            _ => {
                return Err(error(
                    "tolerance",
                    format!("must be a quantity of 0 or more, got {:?}", quantity.0),
                ));
            }
        },
    };
    Ok(ScalingRules {
        stabilization,
        policies,
        select,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use proptest::prelude::*;

    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn policy() -> ReplicaPolicy {
        ReplicaPolicy {
            min: 0,
            max: 100,
            idle: None,
            cooldown: SignedDuration::from_secs(300),
            initial_cooldown: SignedDuration::ZERO,
            created_at: t(0),
            fallback: None,
            behavior: Behavior::default(),
        }
    }

    /// An SQS-style AverageValue report: `messages` on the queue, `per_replica` each.
    fn queue(messages: f64, per_replica: f64) -> TriggerReport {
        TriggerReport::Metric {
            value: messages,
            target: per_replica,
            activation: 0.0,
            metric_type: MetricType::AverageValue,
        }
    }

    #[test]
    fn scales_from_zero_to_one_when_a_message_arrives() {
        let mut state = ScalerState::default();
        let decision = decide(&policy(), &mut state, t(10), 0, &[queue(1.0, 5.0)], false);
        assert_eq!(
            decision,
            Decision {
                replicas: 1,
                active: true,
                fallback: false
            }
        );
        assert_eq!(state.last_active, Some(t(10)));
    }

    #[test]
    fn scales_from_zero_to_min_replica_count_when_active() {
        let policy = ReplicaPolicy { min: 3, ..policy() };
        let decision = decide(
            &policy,
            &mut ScalerState::default(),
            t(10),
            0,
            &[queue(1.0, 5.0)],
            false,
        );
        assert_eq!(decision.replicas, 3);
    }

    #[test]
    fn stays_at_zero_while_the_queue_is_at_or_below_activation() {
        let report = TriggerReport::Metric {
            value: 2.0,
            target: 5.0,
            activation: 2.0,
            metric_type: MetricType::AverageValue,
        };
        let decision = decide(
            &policy(),
            &mut ScalerState::default(),
            t(10),
            0,
            &[report],
            false,
        );
        assert_eq!(
            decision,
            Decision {
                replicas: 0,
                active: false,
                fallback: false
            }
        );
    }

    #[test]
    fn force_activation_wakes_an_empty_queue() {
        let decision = decide(
            &policy(),
            &mut ScalerState::default(),
            t(10),
            0,
            &[queue(0.0, 5.0)],
            true,
        );
        assert_eq!(decision.replicas, 1);
    }

    #[test]
    fn scales_to_zero_only_after_the_cooldown() {
        let mut state = ScalerState::default();
        assert_eq!(
            decide(&policy(), &mut state, t(0), 4, &[queue(20.0, 5.0)], false).replicas,
            4
        );
        assert_eq!(
            decide(&policy(), &mut state, t(299), 4, &[queue(0.0, 5.0)], false).replicas,
            4,
            "within cooldown the HPA holds, stabilized"
        );
        assert_eq!(
            decide(&policy(), &mut state, t(300), 4, &[queue(0.0, 5.0)], false).replicas,
            0
        );
    }

    #[test]
    fn never_active_object_waits_for_the_initial_cooldown() {
        let policy = ReplicaPolicy {
            initial_cooldown: SignedDuration::from_secs(120),
            ..policy()
        };
        let mut state = ScalerState::default();
        let before = decide(&policy, &mut state, t(119), 2, &[queue(0.0, 5.0)], false);
        assert!(
            before.replicas >= 1,
            "scaled to zero before the initial cooldown"
        );
        assert_eq!(
            decide(
                &policy,
                &mut state,
                t(120),
                before.replicas,
                &[queue(0.0, 5.0)],
                false
            )
            .replicas,
            0
        );
    }

    #[test]
    fn inactive_object_rests_at_idle_replica_count_and_wakes_to_min() {
        let policy = ReplicaPolicy {
            min: 2,
            idle: Some(0),
            ..policy()
        };
        let mut state = ScalerState {
            last_active: Some(t(0)),
            ..ScalerState::default()
        };
        assert_eq!(
            decide(&policy, &mut state, t(400), 5, &[queue(0.0, 5.0)], false).replicas,
            0
        );
        assert_eq!(
            decide(&policy, &mut state, t(401), 0, &[queue(1.0, 5.0)], false).replicas,
            2
        );
    }

    #[test]
    fn inactive_object_with_min_above_zero_and_no_idle_stays_at_min() {
        let policy = ReplicaPolicy { min: 2, ..policy() };
        let mut state = ScalerState {
            last_active: Some(t(0)),
            ..ScalerState::default()
        };
        let decision = decide(&policy, &mut state, t(1000), 2, &[queue(0.0, 5.0)], false);
        assert_eq!(decision.replicas, 2);
    }

    #[test]
    fn average_value_proposes_ceil_of_metric_over_target() {
        assert_eq!(
            proposal(21.0, 5.0, MetricType::AverageValue, 1, &Behavior::default()),
            5
        );
        assert_eq!(
            proposal(20.0, 5.0, MetricType::AverageValue, 1, &Behavior::default()),
            4
        );
        assert_eq!(
            proposal(1.0, 5.0, MetricType::AverageValue, 3, &Behavior::default()),
            1
        );
    }

    #[test]
    fn value_proposes_current_times_ratio() {
        assert_eq!(
            proposal(15.0, 5.0, MetricType::Value, 2, &Behavior::default()),
            6
        );
        assert_eq!(
            proposal(2.0, 5.0, MetricType::Value, 10, &Behavior::default()),
            4
        );
    }

    #[test]
    fn usage_within_ten_percent_keeps_current_replicas() {
        // 4 replicas at target 5 is 20 messages; 21 and 19 are within tolerance, 23 is not.
        assert_eq!(
            proposal(21.0, 5.0, MetricType::AverageValue, 4, &Behavior::default()),
            4
        );
        assert_eq!(
            proposal(19.0, 5.0, MetricType::AverageValue, 4, &Behavior::default()),
            4
        );
        assert_eq!(
            proposal(22.5, 5.0, MetricType::AverageValue, 4, &Behavior::default()),
            5
        );
    }

    #[test]
    fn a_tolerance_per_direction_replaces_the_ten_percent() {
        let behavior = |up: &str, down: &str| {
            Behavior::from_spec(Some(&HorizontalPodAutoscalerBehavior {
                scale_up: Some(HPAScalingRules {
                    tolerance: Some(Quantity(up.into())),
                    ..HPAScalingRules::default()
                }),
                scale_down: Some(HPAScalingRules {
                    tolerance: Some(Quantity(down.into())),
                    ..HPAScalingRules::default()
                }),
            }))
            .unwrap()
        };
        // 4 replicas at target 5 is 20 messages.
        let eager_up = behavior("0", "500m");
        assert_eq!(
            proposal(21.0, 5.0, MetricType::AverageValue, 4, &eager_up),
            5
        );
        assert_eq!(
            proposal(12.0, 5.0, MetricType::AverageValue, 4, &eager_up),
            4
        );
        assert_eq!(
            proposal(9.0, 5.0, MetricType::AverageValue, 4, &eager_up),
            2
        );
        let lazy_up = behavior("0.5", "0.01");
        assert_eq!(
            proposal(29.0, 5.0, MetricType::AverageValue, 4, &lazy_up),
            4
        );
        assert_eq!(
            proposal(31.0, 5.0, MetricType::AverageValue, 4, &lazy_up),
            7
        );
        // 20 replicas at 92% of the target: within the default 10%, not within 1%.
        assert_eq!(proposal(4.6, 5.0, MetricType::Value, 20, &lazy_up), 19);
        assert_eq!(
            proposal(4.6, 5.0, MetricType::Value, 20, &Behavior::default()),
            20
        );
        // Left out, each direction keeps Kubernetes' 10%.
        let only_up = Behavior::from_spec(Some(&HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                tolerance: Some(Quantity("0".into())),
                ..HPAScalingRules::default()
            }),
            scale_down: None,
        }))
        .unwrap();
        assert_eq!(only_up.scale_down.tolerance, TOLERANCE);
        assert_eq!(proposal(4.6, 5.0, MetricType::Value, 20, &only_up), 20);
    }

    #[test]
    fn a_negative_or_unreadable_tolerance_is_reported_with_its_field() {
        for bad in ["-0.1", "ten"] {
            let spec = HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    tolerance: Some(Quantity(bad.into())),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            };
            let error = Behavior::from_spec(Some(&spec)).unwrap_err();
            assert_eq!(error.field, "scaleDown.tolerance", "{bad}");
        }
    }

    #[test]
    fn the_highest_trigger_wins() {
        let mut state = ScalerState {
            last_active: Some(t(0)),
            ..ScalerState::default()
        };
        let decision = decide(
            &policy(),
            &mut state,
            t(10),
            2,
            &[queue(10.0, 5.0), queue(30.0, 5.0)],
            false,
        );
        assert_eq!(decision.replicas, 6);
    }

    #[test]
    fn default_scale_up_allows_the_larger_of_four_pods_or_double() {
        let mut state = ScalerState::default();
        assert_eq!(
            decide(&policy(), &mut state, t(0), 2, &[queue(500.0, 5.0)], false).replicas,
            6
        );
        let mut state = ScalerState::default();
        assert_eq!(
            decide(&policy(), &mut state, t(0), 10, &[queue(500.0, 5.0)], false).replicas,
            20
        );
    }

    #[test]
    fn scale_up_within_a_period_counts_what_was_already_added() {
        let mut state = ScalerState::default();
        state.record_scale(t(0), 2, 6);
        // Within 15 s of going 2 → 6 the period starts at 2: at most max(2+4, 2*2) = 6.
        assert_eq!(
            decide(&policy(), &mut state, t(10), 6, &[queue(500.0, 5.0)], false).replicas,
            6
        );
        assert_eq!(
            decide(&policy(), &mut state, t(16), 6, &[queue(500.0, 5.0)], false).replicas,
            12
        );
    }

    #[test]
    fn scale_down_holds_the_highest_recommendation_of_the_last_five_minutes() {
        let mut state = ScalerState {
            last_active: Some(t(1000)),
            ..ScalerState::default()
        };
        let policy = ReplicaPolicy { min: 1, ..policy() };
        assert_eq!(
            decide(&policy, &mut state, t(0), 10, &[queue(50.0, 5.0)], false).replicas,
            10
        );
        assert_eq!(
            decide(&policy, &mut state, t(100), 10, &[queue(10.0, 5.0)], false).replicas,
            10
        );
        assert_eq!(
            decide(&policy, &mut state, t(301), 10, &[queue(10.0, 5.0)], false).replicas,
            2
        );
    }

    #[test]
    fn a_failing_trigger_never_scales_anything_down() {
        let mut state = ScalerState {
            last_active: Some(t(0)),
            ..ScalerState::default()
        };
        let decision = decide(
            &policy(),
            &mut state,
            t(10_000),
            7,
            &[TriggerReport::Failed { consecutive: 50 }],
            false,
        );
        assert_eq!(
            decision,
            Decision {
                replicas: 7,
                active: false,
                fallback: false
            }
        );
        let mixed = decide(
            &policy(),
            &mut state,
            t(10_001),
            7,
            &[queue(0.0, 5.0), TriggerReport::Failed { consecutive: 1 }],
            false,
        );
        assert_eq!(mixed.replicas, 7);
    }

    fn with_fallback(behavior: FallbackBehavior) -> ReplicaPolicy {
        ReplicaPolicy {
            fallback: Some(Fallback {
                failure_threshold: 3,
                replicas: 5,
                behavior,
            }),
            ..policy()
        }
    }

    #[test]
    fn a_failing_trigger_blocks_scale_down_but_not_scale_up() {
        let mut state = ScalerState {
            last_active: Some(t(0)),
            ..ScalerState::default()
        };
        let failing = TriggerReport::Failed { consecutive: 1 };
        assert_eq!(
            decide(
                &policy(),
                &mut state,
                t(1),
                10,
                &[queue(5.0, 5.0), failing.clone()],
                false
            )
            .replicas,
            10
        );
        assert_eq!(
            decide(
                &policy(),
                &mut state,
                t(2),
                10,
                &[queue(100.0, 5.0), failing],
                false
            )
            .replicas,
            20
        );
    }

    #[test]
    fn fallback_applies_from_the_failure_threshold() {
        let policy = with_fallback(FallbackBehavior::Static);
        let mut state = ScalerState::default();
        let before = decide(
            &policy,
            &mut state,
            t(0),
            2,
            &[TriggerReport::Failed { consecutive: 2 }],
            false,
        );
        assert_eq!(
            before,
            Decision {
                replicas: 2,
                active: false,
                fallback: false
            }
        );
        let after = decide(
            &policy,
            &mut state,
            t(1),
            2,
            &[TriggerReport::Failed { consecutive: 3 }],
            false,
        );
        assert_eq!(
            after,
            Decision {
                replicas: 5,
                active: false,
                fallback: true
            }
        );
    }

    #[test]
    fn fallback_behaviors_combine_with_current_replicas() {
        let failed = [TriggerReport::Failed { consecutive: 3 }];
        let cases = [
            (FallbackBehavior::Static, 8, 5),
            (FallbackBehavior::CurrentReplicas, 8, 8),
            (FallbackBehavior::CurrentReplicasIfHigher, 8, 8),
            (FallbackBehavior::CurrentReplicasIfHigher, 2, 5),
            (FallbackBehavior::CurrentReplicasIfLower, 8, 5),
            (FallbackBehavior::CurrentReplicasIfLower, 2, 2),
        ];
        for (behavior, current, expected) in cases {
            let mut state = ScalerState::default();
            let decision = decide(
                &with_fallback(behavior),
                &mut state,
                t(0),
                current,
                &failed,
                false,
            );
            assert_eq!(decision.replicas, expected, "{behavior:?} from {current}");
        }
    }

    #[test]
    fn fallback_wakes_a_scaled_to_zero_target() {
        let decision = decide(
            &with_fallback(FallbackBehavior::Static),
            &mut ScalerState::default(),
            t(0),
            0,
            &[TriggerReport::Failed { consecutive: 3 }],
            false,
        );
        assert_eq!(decision.replicas, 5);
    }

    #[test]
    fn behavior_takes_kubernetes_defaults_per_field() {
        let spec = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(60),
                ..Default::default()
            }),
            scale_up: Some(HPAScalingRules {
                policies: Some(vec![HPAScalingPolicy {
                    type_: "Pods".into(),
                    value: 1,
                    period_seconds: 30,
                }]),
                select_policy: Some("Min".into()),
                ..Default::default()
            }),
        };
        let behavior = Behavior::from_spec(Some(&spec)).unwrap();
        assert_eq!(
            behavior.scale_down.stabilization,
            SignedDuration::from_secs(60)
        );
        assert_eq!(
            behavior.scale_down.policies,
            Behavior::default().scale_down.policies
        );
        assert_eq!(behavior.scale_up.select, SelectPolicy::Min);
        assert_eq!(
            behavior.scale_up.policies,
            vec![Policy {
                kind: PolicyKind::Pods,
                value: 1,
                period: SignedDuration::from_secs(30)
            }]
        );
        assert_eq!(behavior.scale_up.stabilization, SignedDuration::ZERO);
    }

    #[test]
    fn bad_behavior_is_reported_with_its_field() {
        let spec = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                policies: Some(vec![HPAScalingPolicy {
                    type_: "Replicas".into(),
                    value: 1,
                    period_seconds: 30,
                }]),
                ..Default::default()
            }),
            scale_down: None,
        };
        let error = Behavior::from_spec(Some(&spec)).unwrap_err();
        assert_eq!(error.field, "scaleUp.policies[0].type");
        assert!(error.to_string().starts_with(
            "advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.policies[0].type"
        ));
    }

    #[test]
    fn disabled_scale_down_never_removes_replicas() {
        let mut behavior = Behavior::default();
        behavior.scale_down.select = SelectPolicy::Disabled;
        let policy = ReplicaPolicy {
            min: 1,
            behavior,
            ..policy()
        };
        let mut state = ScalerState {
            last_active: Some(t(10_000)),
            ..ScalerState::default()
        };
        assert_eq!(
            decide(&policy, &mut state, t(10_000), 9, &[queue(1.0, 5.0)], false).replicas,
            9
        );
    }

    fn report() -> impl Strategy<Value = TriggerReport> {
        prop_oneof![
            (0.0..10_000.0f64, 1.0..100.0f64, 0.0..10.0f64).prop_map(
                |(value, target, activation)| TriggerReport::Metric {
                    value,
                    target,
                    activation,
                    metric_type: MetricType::AverageValue
                }
            ),
            (1u32..10).prop_map(|consecutive| TriggerReport::Failed { consecutive }),
        ]
    }

    proptest! {
        #[test]
        fn replicas_stay_within_bounds_and_never_drop_on_errors(
            min in 0i32..10, span in 0i32..50, current in 0i32..80,
            reports in proptest::collection::vec(report(), 1..4),
            seconds_since_active in 0i64..1000,
        ) {
            let policy = ReplicaPolicy { min, max: min + span.max(1), ..policy() };
            let mut state = ScalerState { last_active: Some(t(0)), ..ScalerState::default() };
            let decision = decide(&policy, &mut state, t(seconds_since_active), current, &reports, false);
            prop_assert!(decision.replicas >= 0);
            prop_assert!(decision.replicas <= policy.max.max(current), "{} above max {}", decision.replicas, policy.max);
            if decision.active && current > 0 {
                prop_assert!(decision.replicas >= policy.min.max(1));
            }
            let any_failed = reports.iter().any(|r| matches!(r, TriggerReport::Failed { .. }));
            if any_failed {
                prop_assert!(decision.replicas >= current.min(policy.max), "scaled down from {} to {} with a failing trigger", current, decision.replicas);
            }
        }

        #[test]
        fn default_scale_up_never_exceeds_the_policy(current in 1i32..200, messages in 0.0..100_000.0f64) {
            let policy = ReplicaPolicy { max: 10_000, ..policy() };
            let mut state = ScalerState::default();
            let decision = decide(&policy, &mut state, t(0), current, &[queue(messages, 1.0)], false);
            prop_assert!(decision.replicas <= (current + 4).max(current * 2));
        }
    }
}
