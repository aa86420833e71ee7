//! KEDA's `advanced.scalingModifiers`, without I/O: one metric composed from the named
//! triggers' values by an expr-lang formula (the language KEDA evaluates them in), which then
//! stands in for the triggers in the replica decision as a single reading.

use expr::{Context, Program, Value};

use super::replicas::TriggerReport;
use crate::apis::scaled_object::ScalingModifiers;
use crate::apis::triggers::{MetricType, Trigger};

/// Why a ScaledObject's scalingModifiers cannot be used, or why the formula gave no number.
#[derive(Debug, thiserror::Error)]
pub enum ModifierError {
    #[error(
        "scalingModifiers: triggers[{index}] has no name, and the formula can only name triggers by their name"
    )]
    UnnamedTrigger { index: usize },
    #[error("scalingModifiers.target {value:?} must be a number above 0")]
    Target { value: String },
    #[error("scalingModifiers.activationTarget {value:?} must be a number of 0 or more")]
    ActivationTarget { value: String },
    #[error("scalingModifiers.metricType Utilization is not supported; use AverageValue or Value")]
    Utilization,
    #[error("scalingModifiers.formula does not parse: {source}")]
    Parse {
        #[source]
        source: expr::Error,
    },
    #[error("scalingModifiers.formula cannot be evaluated: {source}")]
    Evaluate {
        #[source]
        source: expr::Error,
    },
    #[error("scalingModifiers.formula gives {value}, not a number")]
    NotANumber { value: String },
    #[error("scalingModifiers.formula gives {value}, not a finite number")]
    NotFinite { value: f64 },
}

/// A ScaledObject's formula, compiled and checked against its triggers, with its target.
#[derive(Debug, Clone)]
pub struct Composition {
    program: Program,
    /// The triggers' names, in the order of the spec and of the reports.
    names: Vec<String>,
    pub target: f64,
    pub activation: f64,
    pub metric_type: MetricType,
}

impl Composition {
    /// Checks what KEDA's admission webhook checks: a target above 0, no Utilization, and a
    /// formula that evaluates over the triggers' names with a dummy value for each. KEDA's
    /// compiler also checks names in branches the dummies do not take; expr-lang's crate
    /// keeps its syntax tree private, so such a name is found when a poll takes that branch
    /// (and fails as the formula).
    pub fn compile(
        modifiers: &ScalingModifiers,
        triggers: &[Trigger],
    ) -> Result<Self, ModifierError> {
        let names = triggers
            .iter()
            .enumerate()
            .map(|(index, trigger)| {
                trigger
                    .name
                    .clone()
                    .ok_or(ModifierError::UnnamedTrigger { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let target = modifiers
            .target
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| ModifierError::Target {
                value: modifiers.target.clone(),
            })?;
        let activation = match &modifiers.activation_target {
            None => 0.0,
            Some(value) => value
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|a| a.is_finite() && *a >= 0.0)
                .ok_or_else(|| ModifierError::ActivationTarget {
                    value: value.clone(),
                })?,
        };
        let metric_type = modifiers.metric_type.unwrap_or_default();
        if metric_type == MetricType::Utilization {
            return Err(ModifierError::Utilization);
        }
        let program =
            expr::compile(&modifiers.formula).map_err(|source| ModifierError::Parse { source })?;
        let composition = Self {
            program,
            names,
            target,
            activation,
            metric_type,
        };
        match composition.evaluate(&vec![1.0; composition.names.len()]) {
            // A dummy value may divide by zero where real values do not.
            Ok(_) | Err(ModifierError::NotFinite { .. }) => Ok(composition),
            Err(error) => Err(error),
        }
    }

    /// The formula over the triggers' values, given in the order of the spec. An integer
    /// result counts as a number; infinity and NaN (a division by zero) do not.
    pub fn evaluate(&self, values: &[f64]) -> Result<f64, ModifierError> {
        let mut context = Context::default();
        for (name, value) in self.names.iter().zip(values) {
            context.insert(name.as_str(), *value);
        }
        let value = match expr::run(&self.program, &context)
            .map_err(|source| ModifierError::Evaluate { source })?
        {
            Value::Float(value) => value,
            Value::Integer(value) => value as f64,
            other => {
                return Err(ModifierError::NotANumber {
                    value: other.to_string(),
                });
            }
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ModifierError::NotFinite { value })
        }
    }

    /// The one reading the replica decision sees instead of the triggers' `reports` (in the
    /// order of the spec). A failed trigger fails the formula, counting its consecutive
    /// failures, so fallback applies as it would to that trigger. A formula that gives no
    /// number also fails, counted in `formula_failures`, and says why.
    pub fn compose(
        &self,
        reports: &[TriggerReport],
        formula_failures: &mut u32,
    ) -> (TriggerReport, Option<ModifierError>) {
        let mut values = Vec::with_capacity(reports.len());
        let mut failed_for = None;
        for report in reports {
            match report {
                TriggerReport::Metric { value, .. } => values.push(*value),
                TriggerReport::Failed { consecutive } => {
                    failed_for = failed_for.max(Some(*consecutive));
                }
            }
        }
        if let Some(consecutive) = failed_for {
            *formula_failures = 0;
            return (TriggerReport::Failed { consecutive }, None);
        }
        match self.evaluate(&values) {
            Ok(value) => {
                *formula_failures = 0;
                let report = TriggerReport::Metric {
                    value,
                    target: self.target,
                    activation: self.activation,
                    metric_type: self.metric_type,
                };
                (report, None)
            }
            Err(error) => {
                *formula_failures += 1;
                let report = TriggerReport::Failed {
                    consecutive: *formula_failures,
                };
                (report, Some(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use jiff::{SignedDuration, Timestamp};

    use super::*;
    use crate::apis::triggers::TriggerType;
    use crate::scaling::scaled_object::replicas::{Behavior, ReplicaPolicy, ScalerState, decide};

    fn triggers(names: &[&str]) -> Vec<Trigger> {
        names
            .iter()
            .map(|name| Trigger {
                r#type: TriggerType::AwsSqsQueue,
                name: Some((*name).to_owned()),
                metadata: BTreeMap::new(),
                authentication_ref: None,
                metric_type: None,
                use_cached_metrics: None,
            })
            .collect()
    }

    fn modifiers(formula: &str, target: &str) -> ScalingModifiers {
        ScalingModifiers {
            formula: formula.to_owned(),
            target: target.to_owned(),
            activation_target: None,
            metric_type: None,
        }
    }

    fn compiled(formula: &str) -> Composition {
        Composition::compile(
            &modifiers(formula, "2"),
            &triggers(&["trig_one", "trig_two", "trig_three"]),
        )
        .unwrap_or_else(|e| panic!("{formula}: {e}"))
    }

    fn metric(value: f64) -> TriggerReport {
        TriggerReport::Metric {
            value,
            target: 5.0,
            activation: 0.0,
            metric_type: MetricType::AverageValue,
        }
    }

    #[test]
    fn keda_documented_formulas_evaluate_as_keda_does() {
        let cases: &[(&str, [f64; 3], f64)] = &[
            ("(trig_one + trig_two)/2", [3.0, 4.0, 0.0], 3.5),
            (
                "trig_one > 2 ? trig_one + trig_two : 1",
                [3.0, 4.0, 0.0],
                7.0,
            ),
            (
                "trig_one > 2 ? trig_one + trig_two : 1",
                [2.0, 4.0, 0.0],
                1.0,
            ),
            (
                "trig_one < 2 ? trig_one + trig_two : trig_one",
                [1.0, 4.0, 0.0],
                5.0,
            ),
            (
                "trig_one < 2 ? trig_one + trig_two : trig_one",
                [3.0, 4.0, 0.0],
                3.0,
            ),
            ("max(trig_one, trig_two)", [3.0, 4.0, 0.0], 4.0),
            ("min(trig_one, trig_two)", [3.0, 4.0, 0.0], 3.0),
            (
                "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
                [3.0, 4.0, 0.0],
                5.0,
            ),
            (
                "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0",
                [3.0, 0.5, 0.0],
                0.0,
            ),
            ("abs(trig_one - 10)", [3.0, 0.0, 0.0], 7.0),
            ("float(trig_one + 1)", [3.0, 0.0, 0.0], 4.0),
        ];
        for (formula, values, expected) in cases {
            let value = compiled(formula).evaluate(values).unwrap();
            assert_eq!(value, *expected, "{formula} over {values:?}");
        }
    }

    #[test]
    fn numbers_are_floats_so_integer_literals_do_not_truncate() {
        assert_eq!(compiled("7 / 2").evaluate(&[0.0; 3]).unwrap(), 3.5);
        assert_eq!(
            compiled("trig_one / 2").evaluate(&[3.0, 0.0, 0.0]).unwrap(),
            1.5
        );
    }

    #[test]
    fn unknown_names_are_refused_when_compiled() {
        let error = Composition::compile(
            &modifiers("trig_one + trig_four", "2"),
            &triggers(&["trig_one", "trig_two"]),
        )
        .unwrap_err();
        assert!(matches!(error, ModifierError::Evaluate { .. }), "{error:?}");
        assert!(error.to_string().contains("trig_four"), "{error}");
    }

    #[test]
    fn syntax_errors_are_refused_with_the_position() {
        let error = Composition::compile(&modifiers("trig_one +", "2"), &triggers(&["trig_one"]))
            .unwrap_err();
        assert!(matches!(error, ModifierError::Parse { .. }), "{error:?}");
        assert!(error.to_string().contains("1:11"), "{error}");
    }

    #[test]
    fn a_formula_giving_no_number_is_refused() {
        let error = Composition::compile(&modifiers("trig_one > 1", "2"), &triggers(&["trig_one"]))
            .unwrap_err();
        assert!(
            matches!(error, ModifierError::NotANumber { ref value } if value == "false"),
            "{error:?}"
        );
    }

    #[test]
    fn every_trigger_needs_a_name() {
        let mut named = triggers(&["a", "b"]);
        named[1].name = None;
        let error = Composition::compile(&modifiers("a", "2"), &named).unwrap_err();
        assert!(matches!(error, ModifierError::UnnamedTrigger { index: 1 }));
    }

    #[test]
    fn target_activation_and_metric_type_are_checked_as_keda_does() {
        let names = triggers(&["a"]);
        for target in ["0", "-1", "two", ""] {
            let error = Composition::compile(&modifiers("a", target), &names).unwrap_err();
            assert!(matches!(error, ModifierError::Target { .. }), "{target}");
        }
        let mut spec = modifiers("a", "2.5");
        spec.activation_target = Some("x".into());
        assert!(matches!(
            Composition::compile(&spec, &names).unwrap_err(),
            ModifierError::ActivationTarget { .. }
        ));
        spec.activation_target = Some("1.5".into());
        spec.metric_type = Some(MetricType::Utilization);
        assert!(matches!(
            Composition::compile(&spec, &names).unwrap_err(),
            ModifierError::Utilization
        ));
        spec.metric_type = Some(MetricType::Value);
        let composition = Composition::compile(&spec, &names).unwrap();
        assert_eq!(
            (
                composition.target,
                composition.activation,
                composition.metric_type
            ),
            (2.5, 1.5, MetricType::Value)
        );
    }

    #[test]
    fn division_by_zero_compiles_but_fails_when_polled() {
        let composition =
            Composition::compile(&modifiers("a / (b - 1)", "2"), &triggers(&["a", "b"])).unwrap();
        assert_eq!(composition.evaluate(&[4.0, 3.0]).unwrap(), 2.0);
        assert!(matches!(
            composition.evaluate(&[4.0, 1.0]).unwrap_err(),
            ModifierError::NotFinite { .. }
        ));
    }

    #[test]
    fn compose_gives_one_reading_against_the_modifiers_target() {
        let composition = compiled("(trig_one + trig_two) / 2");
        let mut failures = 0;
        let (report, error) =
            composition.compose(&[metric(3.0), metric(5.0), metric(9.0)], &mut failures);
        assert!(error.is_none());
        assert_eq!(
            report,
            TriggerReport::Metric {
                value: 4.0,
                target: 2.0,
                activation: 0.0,
                metric_type: MetricType::AverageValue,
            }
        );
    }

    #[test]
    fn a_failed_trigger_fails_the_formula_with_its_count() {
        let composition = compiled("trig_one + trig_two");
        let mut failures = 2;
        let (report, error) = composition.compose(
            &[
                metric(1.0),
                TriggerReport::Failed { consecutive: 3 },
                TriggerReport::Failed { consecutive: 1 },
            ],
            &mut failures,
        );
        assert_eq!(report, TriggerReport::Failed { consecutive: 3 });
        assert!(error.is_none(), "the trigger's own error is reported");
        assert_eq!(failures, 0);
    }

    #[test]
    fn a_formula_that_fails_counts_its_own_consecutive_failures() {
        let composition =
            Composition::compile(&modifiers("a / b", "2"), &triggers(&["a", "b"])).unwrap();
        let mut failures = 0;
        for expected in 1..=2 {
            let (report, error) = composition.compose(&[metric(1.0), metric(0.0)], &mut failures);
            assert_eq!(
                report,
                TriggerReport::Failed {
                    consecutive: expected
                }
            );
            assert!(matches!(error, Some(ModifierError::NotFinite { .. })));
        }
        let (report, _) = composition.compose(&[metric(1.0), metric(2.0)], &mut failures);
        assert!(matches!(report, TriggerReport::Metric { value, .. } if value == 0.5));
        assert_eq!(failures, 0);
    }

    #[test]
    fn the_composed_metric_alone_decides_activation_and_replicas() {
        let mut spec = modifiers("(a + b) / 2", "2");
        spec.activation_target = Some("3".into());
        let composition = Composition::compile(&spec, &triggers(&["a", "b"])).unwrap();
        let policy = ReplicaPolicy {
            min: 0,
            max: 100,
            idle: None,
            cooldown: SignedDuration::from_secs(300),
            initial_cooldown: SignedDuration::from_secs(300),
            created_at: Timestamp::UNIX_EPOCH,
            fallback: None,
            behavior: Behavior::default(),
        };
        let now = Timestamp::UNIX_EPOCH + SignedDuration::from_secs(60);
        let mut failures = 0;
        // Trigger a alone is far above its own activation (0), but (5 + 1) / 2 = 3 is not
        // above the formula's activationTarget of 3: the object stays asleep.
        let (report, _) = composition.compose(&[metric(5.0), metric(1.0)], &mut failures);
        let asleep = decide(
            &policy,
            &mut ScalerState::default(),
            now,
            0,
            &[report],
            false,
        );
        assert!(!asleep.active);
        assert_eq!(asleep.replicas, 0);
        // (9 + 7) / 2 = 8 against a target of 2: 4 replicas, where trigger a alone (9 messages,
        // 5 per replica) would ask for 2.
        let (report, _) = composition.compose(&[metric(9.0), metric(7.0)], &mut failures);
        let awake = decide(
            &policy,
            &mut ScalerState::default(),
            now,
            1,
            &[report],
            false,
        );
        assert!(awake.active);
        assert_eq!(awake.replicas, 4);
    }
}
