//! How many Jobs a ScaledJob creates in one poll, without I/O: KEDA's per-trigger queue math,
//! the multi-trigger combination and the four scaling strategies.

use crate::apis::scaled_job::{JobScalingStrategy, MultipleScalersCalculation};

/// One active trigger's reading: `queue_length` messages, `target` messages per Job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueReading {
    pub queue_length: f64,
    pub target: f64,
}

/// The ScaledJob settings that shape the count, resolved from its spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JobPolicy {
    pub min: i64,
    pub max: i64,
    pub strategy: JobScalingStrategy,
    /// `custom`: subtracted from the Jobs to create; 0 when not given.
    pub queue_length_deduction: i64,
    /// `custom`: the share of running Jobs counted as still busy (0.0 to 1.0). Without it,
    /// `custom` is `default`, as in KEDA, which then ignores the deduction too.
    pub running_job_percentage: Option<f64>,
    pub calculation: MultipleScalersCalculation,
}

/// The Jobs that exist now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Unfinished Jobs (`R`).
    pub running: i64,
    /// Unfinished Jobs whose pods have not started (`P`).
    pub pending: i64,
}

/// Jobs to create now: `min - R` while below min, else the strategy's count, never more than
/// the queue holds (`ceil(Q)`) and never negative.
pub fn jobs_to_create(policy: &JobPolicy, readings: &[QueueReading], counts: JobCounts) -> i64 {
    let JobCounts { running, pending } = counts;
    if running < policy.min {
        return policy.min - running;
    }
    let headroom = (policy.max - policy.min).max(0) as f64;
    let (queue, max_value) = combine(policy.calculation, readings, headroom);
    let scale_to = queue.ceil() as i64;
    let wanted = max_value.min(headroom).ceil() as i64;
    let m = headroom as i64;
    let busy = running - policy.min;
    let count = match policy.strategy {
        JobScalingStrategy::Default => wanted - busy,
        JobScalingStrategy::Custom => match policy.running_job_percentage {
            Some(percentage) => {
                let still_busy = (busy as f64 * percentage).trunc() as i64;
                (wanted - policy.queue_length_deduction - still_busy).min(m)
            }
            None => wanted - busy,
        },
        JobScalingStrategy::Accurate => {
            if wanted + busy - pending > m {
                m - busy
            } else {
                wanted - pending
            }
        }
        JobScalingStrategy::Eager => (m - busy - pending).min(wanted),
    };
    count.min(scale_to).max(0)
}

/// Combines the triggers' queue lengths `Q` and their `min(Q / T, M)` values.
fn combine(
    calculation: MultipleScalersCalculation,
    readings: &[QueueReading],
    headroom: f64,
) -> (f64, f64) {
    let pairs = readings
        .iter()
        .filter(|r| r.target > 0.0)
        .map(|r| (r.queue_length, (r.queue_length / r.target).min(headroom)));
    let (queues, values): (Vec<f64>, Vec<f64>) = pairs.unzip();
    if queues.is_empty() {
        return (0.0, 0.0);
    }
    let pick = |xs: &[f64]| match calculation {
        MultipleScalersCalculation::Max => xs.iter().copied().fold(f64::MIN, f64::max),
        MultipleScalersCalculation::Min => xs.iter().copied().fold(f64::MAX, f64::min),
        MultipleScalersCalculation::Avg => xs.iter().sum::<f64>() / xs.len() as f64,
        MultipleScalersCalculation::Sum => xs.iter().sum(),
    };
    (pick(&queues), pick(&values))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(strategy: JobScalingStrategy) -> JobPolicy {
        JobPolicy {
            min: 0,
            max: 3,
            strategy,
            queue_length_deduction: 0,
            running_job_percentage: None,
            calculation: MultipleScalersCalculation::Max,
        }
    }

    fn queue(queue_length: f64, target: f64) -> QueueReading {
        QueueReading {
            queue_length,
            target,
        }
    }

    fn running(running: i64) -> JobCounts {
        JobCounts {
            running,
            pending: 0,
        }
    }

    #[test]
    fn kedas_documented_example() {
        let default = policy(JobScalingStrategy::Default);
        assert_eq!(jobs_to_create(&default, &[queue(10.0, 1.0)], running(0)), 3);
        assert_eq!(jobs_to_create(&default, &[queue(10.0, 1.0)], running(1)), 2);
        assert_eq!(jobs_to_create(&default, &[queue(4.0, 5.0)], running(0)), 1);
    }

    #[test]
    fn one_job_per_message_up_to_max() {
        let sj = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Default)
        };
        assert_eq!(jobs_to_create(&sj, &[queue(4.0, 1.0)], running(0)), 4);
        assert_eq!(jobs_to_create(&sj, &[queue(40.0, 1.0)], running(0)), 10);
    }

    #[test]
    fn default_does_not_create_again_for_messages_whose_jobs_wait_to_start() {
        // 5 messages still visible while their 5 Jobs wait for a node: nothing more to create.
        let sj = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Default)
        };
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(5.0, 1.0)],
                JobCounts {
                    running: 5,
                    pending: 5
                }
            ),
            0
        );
    }

    #[test]
    fn below_min_creates_up_to_min_even_with_an_empty_queue() {
        let sj = JobPolicy {
            min: 2,
            max: 5,
            ..policy(JobScalingStrategy::Default)
        };
        assert_eq!(jobs_to_create(&sj, &[queue(0.0, 1.0)], running(0)), 2);
        assert_eq!(jobs_to_create(&sj, &[queue(0.0, 1.0)], running(2)), 0);
        assert_eq!(
            jobs_to_create(&sj, &[queue(2.0, 1.0)], running(2)),
            2,
            "min jobs do not count against the queue"
        );
    }

    #[test]
    fn custom_deducts_and_discounts_running_jobs() {
        let sj = JobPolicy {
            max: 10,
            queue_length_deduction: 1,
            running_job_percentage: Some(0.5),
            ..policy(JobScalingStrategy::Custom)
        };
        // S = 8, minus 1, minus trunc(4 * 0.5) = 2 → 5.
        assert_eq!(jobs_to_create(&sj, &[queue(8.0, 1.0)], running(4)), 5);
    }

    #[test]
    fn custom_without_a_percentage_subtracts_running_jobs_as_default_does() {
        let default = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Default)
        };
        for deduction in [0, 1] {
            let custom = JobPolicy {
                max: 10,
                queue_length_deduction: deduction,
                running_job_percentage: None,
                ..policy(JobScalingStrategy::Custom)
            };
            for running_jobs in [0, 4, 8] {
                assert_eq!(
                    jobs_to_create(&custom, &[queue(8.0, 1.0)], running(running_jobs)),
                    jobs_to_create(&default, &[queue(8.0, 1.0)], running(running_jobs)),
                    "deduction {deduction}, {running_jobs} running"
                );
            }
        }
    }

    #[test]
    fn accurate_subtracts_pending_jobs_or_fills_to_max() {
        let sj = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Accurate)
        };
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(6.0, 1.0)],
                JobCounts {
                    running: 3,
                    pending: 2
                }
            ),
            4
        );
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(10.0, 1.0)],
                JobCounts {
                    running: 6,
                    pending: 1
                }
            ),
            4
        );
    }

    #[test]
    fn accurate_does_not_create_for_messages_whose_jobs_are_pending() {
        // KEDA's accurate compares S + R' with M and then creates M − R' (kedacore/keda#7329):
        // with 5 visible messages whose 5 Jobs wait for a node and M = 6 that is one idle Job
        // per poll. Counting pending Jobs in the comparison creates none.
        let sj = JobPolicy {
            max: 6,
            ..policy(JobScalingStrategy::Accurate)
        };
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(5.0, 1.0)],
                JobCounts {
                    running: 5,
                    pending: 5
                }
            ),
            0
        );
        let roomy = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Accurate)
        };
        assert_eq!(
            jobs_to_create(
                &roomy,
                &[queue(5.0, 1.0)],
                JobCounts {
                    running: 5,
                    pending: 5
                }
            ),
            0
        );
    }

    #[test]
    fn eager_fills_the_free_slots_up_to_the_queue() {
        let sj = JobPolicy {
            max: 10,
            ..policy(JobScalingStrategy::Eager)
        };
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(3.0, 1.0)],
                JobCounts {
                    running: 2,
                    pending: 1
                }
            ),
            3
        );
        assert_eq!(
            jobs_to_create(
                &sj,
                &[queue(30.0, 1.0)],
                JobCounts {
                    running: 2,
                    pending: 1
                }
            ),
            7
        );
    }

    #[test]
    fn multiple_triggers_combine_as_configured() {
        let readings = [queue(2.0, 1.0), queue(6.0, 1.0)];
        let with = |calculation| JobPolicy {
            max: 20,
            calculation,
            ..policy(JobScalingStrategy::Default)
        };
        assert_eq!(
            jobs_to_create(
                &with(MultipleScalersCalculation::Max),
                &readings,
                running(0)
            ),
            6
        );
        assert_eq!(
            jobs_to_create(
                &with(MultipleScalersCalculation::Min),
                &readings,
                running(0)
            ),
            2
        );
        assert_eq!(
            jobs_to_create(
                &with(MultipleScalersCalculation::Avg),
                &readings,
                running(0)
            ),
            4
        );
        assert_eq!(
            jobs_to_create(
                &with(MultipleScalersCalculation::Sum),
                &readings,
                running(0)
            ),
            8
        );
    }

    #[test]
    fn no_active_trigger_creates_nothing_above_min() {
        assert_eq!(
            jobs_to_create(&policy(JobScalingStrategy::Eager), &[], running(0)),
            0
        );
    }

    fn strategy() -> impl Strategy<Value = JobScalingStrategy> {
        prop_oneof![
            Just(JobScalingStrategy::Default),
            Just(JobScalingStrategy::Custom),
            Just(JobScalingStrategy::Accurate),
            Just(JobScalingStrategy::Eager),
        ]
    }

    proptest! {
        #[test]
        fn never_negative_never_past_the_queue_or_max(
            strategy in strategy(), min in 0i64..5, span in 0i64..50,
            messages in 0.0..500.0f64, target in 1.0..10.0f64,
            running_jobs in 0i64..60, pending_share in 0.0..1.0f64,
            deduction in 0i64..5, percentage in proptest::option::of(0.0..1.0f64),
        ) {
            let sj = JobPolicy { min, max: min + span, strategy, queue_length_deduction: deduction, running_job_percentage: percentage, calculation: MultipleScalersCalculation::Max };
            let pending = (running_jobs as f64 * pending_share) as i64;
            let created = jobs_to_create(&sj, &[queue(messages, target)], JobCounts { running: running_jobs, pending });
            prop_assert!(created >= 0);
            if running_jobs >= min {
                prop_assert!(created <= messages.ceil() as i64, "{created} Jobs for {messages} messages");
                // Only custom may pass max: it counts just a share of the running Jobs as busy.
                if strategy != JobScalingStrategy::Custom {
                    prop_assert!(running_jobs + created <= sj.max.max(running_jobs), "{running_jobs} + {created} past max {}", sj.max);
                }
            } else {
                prop_assert_eq!(created, min - running_jobs);
            }
        }
    }
}
