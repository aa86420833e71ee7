//! Named points where the stack tests kill the controller (issue 19), to prove that a restart
//! keeps every promise a crash there could break. They exist only in builds with the
//! `failpoints` feature, which `cluster-tests` turns on for the binary the stack tests spawn;
//! a release build has none (and [`reached`] compiles to nothing).
//!
//! `windlass run` reads `FAILPOINTS=<point>=<action>[;<point>=<action>...]` at start. The
//! action `kill` sends SIGKILL to the process itself, as the kernel's OOM killer or a node
//! loss would: no destructor runs, no Lease is released, nothing buffered is written. Any other
//! action goes to the `fail` crate as it is (`panic`, `sleep(100)`, `pause`, ...).

/// After CreateFleet returned an instance for a NodeClaim, before the status write that
/// records its providerID.
pub const LAUNCHED_BEFORE_STATUS: &str = "launched-before-status";
/// After a ScaledJob's Job was created, before the poll records it as created and counts it
/// as running in status.
pub const JOB_CREATED_BEFORE_COUNTED: &str = "job-created-before-counted";
/// After a JobSchedule's tick was claimed in status (`pendingScheduleTime`), before its message
/// was sent.
pub const TICK_CLAIMED_BEFORE_SENT: &str = "tick-claimed-before-sent";
/// Mid-drain: after a pod of a deleted NodeClaim's Node was evicted, before the rest are and
/// before the instance is terminated.
pub const EVICTED_BEFORE_TERMINATED: &str = "evicted-before-terminated";

/// Every point, for checking the names `FAILPOINTS` gives.
pub const ALL: [&str; 4] = [
    LAUNCHED_BEFORE_STATUS,
    JOB_CREATED_BEFORE_COUNTED,
    TICK_CLAIMED_BEFORE_SENT,
    EVICTED_BEFORE_TERMINATED,
];

/// The action that kills the process with SIGKILL.
pub const KILL: &str = "kill";

/// The environment variable the points are configured from.
pub const ENV: &str = "FAILPOINTS";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FailpointsError {
    #[error("FAILPOINTS: {0:?} is not <point>=<action>")]
    Malformed(String),
    #[error("FAILPOINTS: no failpoint is named {0:?} (known: {known})", known = ALL.join(", "))]
    UnknownPoint(String),
    #[error("FAILPOINTS: {point}={actions}: {reason}")]
    Actions {
        point: String,
        actions: String,
        reason: String,
    },
}

/// What `FAILPOINTS` asks for: each point and its action, in order.
#[cfg(any(feature = "failpoints", test))]
fn parse(text: &str) -> Result<Vec<(&str, &str)>, FailpointsError> {
    text.split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((point, action)) if !point.trim().is_empty() && !action.trim().is_empty() => {
                let point = point.trim();
                if ALL.contains(&point) {
                    Ok((point, action.trim()))
                } else {
                    Err(FailpointsError::UnknownPoint(point.to_owned()))
                }
            }
            _ => Err(FailpointsError::Malformed(entry.to_owned())),
        })
        .collect()
}

/// Configures the points `FAILPOINTS` names; returns them, for the log.
#[cfg(feature = "failpoints")]
pub fn configure_from_env() -> Result<Vec<String>, FailpointsError> {
    let text = std::env::var(ENV).unwrap_or_default();
    let mut configured = Vec::new();
    for (point, action) in parse(&text)? {
        let done = if action == KILL {
            fail::cfg_callback(point, kill_self)
        } else {
            fail::cfg(point, action)
        };
        done.map_err(|reason| FailpointsError::Actions {
            point: point.to_owned(),
            actions: action.to_owned(),
            reason,
        })?;
        configured.push(format!("{point}={action}"));
    }
    Ok(configured)
}

/// Without the feature there is nothing to configure; a `FAILPOINTS` given anyway is named in
/// the log, so a test run against a release build does not wait for a kill that cannot come.
#[cfg(not(feature = "failpoints"))]
pub fn configure_from_env() -> Result<Vec<String>, FailpointsError> {
    if std::env::var_os(ENV).is_some() {
        tracing::warn!("{ENV} is set, but this build has no failpoints (feature `failpoints`)");
    }
    Ok(Vec::new())
}

/// The code has reached `point`: does what `FAILPOINTS` configured for it, if anything.
#[cfg(feature = "failpoints")]
pub fn reached(point: &'static str) {
    fail::fail_point!(point);
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn reached(_point: &'static str) {}

#[cfg(feature = "failpoints")]
fn kill_self() {
    tracing::warn!("failpoint: SIGKILL to self");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. A signal a process
    // sends itself is delivered before kill returns, so nothing after this line runs.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_are_parsed_by_name_and_each_mistake_is_named() {
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse("launched-before-status=kill; tick-claimed-before-sent = sleep(100) ;"),
            Ok(vec![
                (LAUNCHED_BEFORE_STATUS, "kill"),
                (TICK_CLAIMED_BEFORE_SENT, "sleep(100)")
            ])
        );
        assert_eq!(
            parse("launched-before-status"),
            Err(FailpointsError::Malformed("launched-before-status".into()))
        );
        assert_eq!(
            parse("=kill"),
            Err(FailpointsError::Malformed("=kill".into()))
        );
        let unknown = parse("launched-before-stats=kill").unwrap_err();
        assert_eq!(
            unknown,
            FailpointsError::UnknownPoint("launched-before-stats".into())
        );
        assert!(unknown.to_string().contains(EVICTED_BEFORE_TERMINATED));
    }
}
