//! Who uses each TriggerAuthentication and ClusterTriggerAuthentication, and whether their
//! credentials resolved. Each ScaledObject and ScaledJob loop reports what its last setup found;
//! a report that changes anything, and a user that goes away, wakes the controller of the kind
//! concerned, which writes the statuses that differ. Setups repeat every few minutes, so only
//! changes reach the API server, never the polls themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};

use crate::apis::trigger_auth::{AuthenticationUser, UserKind};
use crate::apis::triggers::{AuthenticationKind, AuthenticationRef, AwsSqsQueueTrigger, Trigger};

/// One authentication object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthKey {
    Namespaced { namespace: String, name: String },
    Cluster { name: String },
}

impl AuthKey {
    /// What `reference` names, from an object in `namespace`.
    pub fn of(reference: &AuthenticationRef, namespace: &str) -> Self {
        match reference.kind {
            AuthenticationKind::TriggerAuthentication => AuthKey::Namespaced {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
            },
            AuthenticationKind::ClusterTriggerAuthentication => AuthKey::Cluster {
                name: reference.name.clone(),
            },
        }
    }
}

/// A ScaledObject or ScaledJob.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserKey {
    pub kind: UserKind,
    pub namespace: String,
    pub name: String,
}

/// Whether the credentials resolved, or why not.
pub type Resolution = Result<(), String>;

/// What one setup found, per authentication its triggers name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthUses(BTreeMap<AuthKey, Resolution>);

impl AuthUses {
    /// Records the outcome of resolving `key`. A failure is kept over a success when two
    /// triggers name the same authentication.
    pub fn record(&mut self, key: AuthKey, resolution: Resolution) {
        let entry = self.0.entry(key).or_insert(Ok(()));
        if entry.is_ok() {
            *entry = resolution;
        }
    }

    /// Completes a setup's record: every authentication the triggers name that the setup did
    /// not reach (it stopped at the error in `setup`) is unresolved with that reason.
    pub fn completed<T, E: std::fmt::Display>(
        mut self,
        triggers: &[Trigger],
        namespace: &str,
        setup: &Result<T, E>,
    ) -> Self {
        for reference in referenced(triggers) {
            let key = AuthKey::of(reference, namespace);
            self.0.entry(key).or_insert_with(|| {
                Err(match setup {
                    Err(error) => format!("not resolved: {error}"),
                    Ok(_) => "not resolved".to_owned(),
                })
            });
        }
        self
    }
}

/// The authentications the triggers take credentials from: none for an SQS trigger with the
/// legacy `identityOwner: operator`, which uses the controller's identity whatever it names.
fn referenced(triggers: &[Trigger]) -> impl Iterator<Item = &AuthenticationRef> {
    triggers.iter().filter_map(|trigger| {
        let reference = trigger.authentication_ref.as_ref();
        match AwsSqsQueueTrigger::from_metadata(&trigger.metadata) {
            Ok(sqs) => sqs.authentication(reference),
            // Unparsed metadata still names the authentication it means to use.
            Err(_) => reference,
        }
    })
}

/// The receiving ends of [`AuthUsers`]' wake-ups: one for the TriggerAuthentication
/// controller, one for the ClusterTriggerAuthentication controller.
pub struct Changes {
    pub namespaced: UnboundedReceiver<()>,
    pub cluster: UnboundedReceiver<()>,
}

pub struct AuthUsers {
    uses: Mutex<BTreeMap<UserKey, AuthUses>>,
    namespaced: UnboundedSender<()>,
    cluster: UnboundedSender<()>,
}

impl AuthUsers {
    pub fn new() -> (Self, Changes) {
        let (namespaced, namespaced_changes) = unbounded();
        let (cluster, cluster_changes) = unbounded();
        let users = AuthUsers {
            uses: Mutex::default(),
            namespaced,
            cluster,
        };
        let changes = Changes {
            namespaced: namespaced_changes,
            cluster: cluster_changes,
        };
        (users, changes)
    }

    /// Replaces what `user`'s last setup found; wakes each authentication whose entry changed.
    pub fn report(&self, user: UserKey, uses: AuthUses) {
        let previous = self
            .uses
            .lock()
            .expect("auth users lock")
            .insert(user, uses.clone());
        self.wake(changed(previous.as_ref(), &uses));
    }

    /// `user` is gone; wakes each authentication it used.
    pub fn forget(&self, user: &UserKey) {
        let previous = self.uses.lock().expect("auth users lock").remove(user);
        if let Some(previous) = previous {
            self.wake(previous.0.into_keys().collect());
        }
    }

    /// Each user of `key`, sorted.
    pub fn users_of(&self, key: &AuthKey) -> Vec<AuthenticationUser> {
        let uses = self.uses.lock().expect("auth users lock");
        uses.iter()
            .filter_map(|(user, found)| {
                let resolution = found.0.get(key)?;
                Some(AuthenticationUser {
                    kind: user.kind,
                    namespace: user.namespace.clone(),
                    name: user.name.clone(),
                    resolved: resolution.is_ok(),
                    message: resolution.clone().err(),
                })
            })
            .collect()
    }

    fn wake(&self, keys: BTreeSet<AuthKey>) {
        // A closed channel means its controller has stopped (shutdown): nothing to wake.
        if keys.iter().any(|k| matches!(k, AuthKey::Namespaced { .. })) {
            let _ = self.namespaced.unbounded_send(());
        }
        if keys.iter().any(|k| matches!(k, AuthKey::Cluster { .. })) {
            let _ = self.cluster.unbounded_send(());
        }
    }
}

/// The authentications whose entry differs between `previous` and `now`.
fn changed(previous: Option<&AuthUses>, now: &AuthUses) -> BTreeSet<AuthKey> {
    let empty = BTreeMap::new();
    let before = previous.map_or(&empty, |p| &p.0);
    before
        .keys()
        .chain(now.0.keys())
        .filter(|key| before.get(*key) != now.0.get(*key))
        .cloned()
        .collect()
}

/// The usage part of an authentication's status as one install writes it.
#[derive(Debug, PartialEq)]
pub struct Usage {
    /// This install's users: the entries of the namespaces it watches.
    pub own: Vec<AuthenticationUser>,
    /// Every user's name, this install's and the others', comma-joined and sorted by kind.
    pub scaled_objects: String,
    pub scaled_jobs: String,
}

impl Usage {
    /// `own` in place of the entries of the namespaces `in_scope` among those `written`, which
    /// other installs keep; names are `namespace/name` when `qualified`.
    pub fn of(
        own: Vec<AuthenticationUser>,
        written: &[AuthenticationUser],
        in_scope: impl Fn(&str) -> bool,
        qualified: bool,
    ) -> Usage {
        let others = written.iter().filter(|u| !in_scope(&u.namespace));
        let names = |kind: UserKind| {
            let mut names: Vec<String> = own
                .iter()
                .chain(others.clone())
                .filter(|u| u.kind == kind)
                .map(|u| {
                    if qualified {
                        format!("{}/{}", u.namespace, u.name)
                    } else {
                        u.name.clone()
                    }
                })
                .collect();
            names.sort();
            names.dedup();
            names.join(",")
        };
        Usage {
            scaled_objects: names(UserKind::ScaledObject),
            scaled_jobs: names(UserKind::ScaledJob),
            own,
        }
    }

    /// Whether a status with these fields already shows this usage.
    pub fn shown_by(
        &self,
        written: &[AuthenticationUser],
        scaled_objects: &str,
        scaled_jobs: &str,
        in_scope: impl Fn(&str) -> bool,
    ) -> bool {
        let mut written_own: Vec<&AuthenticationUser> =
            written.iter().filter(|u| in_scope(&u.namespace)).collect();
        written_own.sort();
        written_own.iter().copied().eq(self.own.iter())
            && scaled_objects == self.scaled_objects
            && scaled_jobs == self.scaled_jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(kind: UserKind, namespace: &str, name: &str, resolved: bool) -> AuthenticationUser {
        AuthenticationUser {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            resolved,
            message: (!resolved).then(|| "Secret team-a/keys not found".into()),
        }
    }

    fn sqs_trigger(metadata: &[(&str, &str)], auth: Option<(&str, &str)>) -> Trigger {
        let metadata: BTreeMap<&str, &str> = metadata.iter().copied().collect();
        serde_json::from_value(serde_json::json!({
            "type": "aws-sqs-queue",
            "metadata": metadata,
            "authenticationRef": auth.map(|(name, kind)| serde_json::json!({"name": name, "kind": kind})),
        }))
        .unwrap()
    }

    fn namespaced(name: &str) -> AuthKey {
        AuthKey::Namespaced {
            namespace: "team-a".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_setup_that_stopped_early_leaves_the_authentications_it_did_not_reach_unresolved() {
        let url = ("queueURL", "https://sqs.eu-west-1.amazonaws.com/1/q");
        let triggers = [
            sqs_trigger(&[url], Some(("keys", "TriggerAuthentication"))),
            sqs_trigger(&[url], Some(("shared", "ClusterTriggerAuthentication"))),
            // The legacy operator identity uses no authentication, whatever it names.
            sqs_trigger(
                &[url, ("identityOwner", "operator")],
                Some(("ignored", "TriggerAuthentication")),
            ),
        ];
        let mut uses = AuthUses::default();
        uses.record(namespaced("keys"), Ok(()));
        let uses = uses.completed(&triggers, "team-a", &Err::<(), _>("triggers[1]: bad queue"));
        let expected: BTreeMap<AuthKey, Resolution> = [
            (namespaced("keys"), Ok(())),
            (
                AuthKey::Cluster {
                    name: "shared".into(),
                },
                Err("not resolved: triggers[1]: bad queue".into()),
            ),
        ]
        .into();
        assert_eq!(uses.0, expected);
    }

    #[test]
    fn a_failure_outweighs_a_success_of_the_same_authentication() {
        let mut uses = AuthUses::default();
        uses.record(namespaced("keys"), Err("missing".into()));
        uses.record(namespaced("keys"), Ok(()));
        assert_eq!(uses.0[&namespaced("keys")], Err("missing".into()));
    }

    #[tokio::test]
    async fn only_changes_wake_the_authentications_concerned() {
        use futures::StreamExt;
        let (users, mut changes) = AuthUsers::new();
        let worker = UserKey {
            kind: UserKind::ScaledObject,
            namespace: "team-a".into(),
            name: "worker".into(),
        };
        let mut uses = AuthUses::default();
        uses.record(namespaced("keys"), Ok(()));
        users.report(worker.clone(), uses.clone());
        assert_eq!(changes.namespaced.next().await, Some(()));
        // The same finding again (the next setup) wakes nothing.
        users.report(worker.clone(), uses);
        assert!(changes.namespaced.try_recv().is_err(), "nothing queued");
        assert_eq!(
            users.users_of(&namespaced("keys")),
            [user(UserKind::ScaledObject, "team-a", "worker", true)]
        );
        users.forget(&worker);
        assert_eq!(changes.namespaced.next().await, Some(()));
        assert!(users.users_of(&namespaced("keys")).is_empty());
        assert!(
            changes.cluster.try_recv().is_err(),
            "no cluster-wide one changed"
        );
    }

    #[test]
    fn each_install_keeps_the_entries_of_the_namespaces_it_does_not_watch() {
        let written = [
            user(UserKind::ScaledObject, "team-a", "old", true),
            user(UserKind::ScaledJob, "team-b", "nightly", false),
        ];
        let own = vec![user(UserKind::ScaledObject, "team-a", "worker", true)];
        let team_a = |namespace: &str| namespace == "team-a";
        let usage = Usage::of(own.clone(), &written, team_a, true);
        assert_eq!(usage.own, own);
        assert_eq!(usage.scaled_objects, "team-a/worker");
        assert_eq!(usage.scaled_jobs, "team-b/nightly");
        assert!(!usage.shown_by(&written, "team-a/old", "team-b/nightly", team_a));
        let now = [own[0].clone(), written[1].clone()];
        assert!(usage.shown_by(&now, "team-a/worker", "team-b/nightly", team_a));
        let unqualified = Usage::of(own, &[], |_| true, false);
        assert_eq!(unqualified.scaled_objects, "worker");
        assert_eq!(unqualified.scaled_jobs, "");
    }
}
