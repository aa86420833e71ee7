//! The EC2NodeClass controller: resolves subnet, security group and AMI selector terms against
//! EC2 and SSM, makes the instance profile for `role` in IAM, and writes what they resolved to,
//! with conditions, into status. Resolution is repeated every five minutes (a minute while not
//! Ready), so new subnets and AMIs are picked up, and at once when a launch finds that something
//! a class resolved to is gone ([`Refresh`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::events::Recorder;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::rules::{
    AliasError, alias_parameters, instance_profile_name, newest_per_arch, resolved_ami, role_name,
};
use crate::apis::conditions::{READY, condition};
use crate::apis::ec2_node_class::{EC2NodeClass, EC2NodeClassStatus};
use crate::apis::labels::{CLUSTER_LABEL, NODECLASS_TAG};
use crate::aws::Aws;
use crate::cloud::CloudError;
use crate::status::apply_status;
use crate::status::is_true;

pub const SUBNETS_READY: &str = "SubnetsReady";
pub const SECURITY_GROUPS_READY: &str = "SecurityGroupsReady";
pub const AMIS_READY: &str = "AMIsReady";
pub const INSTANCE_PROFILE_READY: &str = "InstanceProfileReady";

/// What the controller needs.
pub struct NodeClasses {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub aws: Aws,
    /// The cluster's Kubernetes minor version (`1.36`), which AMI aliases resolve against.
    pub kubernetes_minor: String,
    /// `--cluster-name`: names and tags the instance profiles made for roles.
    pub cluster: String,
    /// When each EC2NodeClass (by name) was last resolved, at which generation.
    pub resolved: Mutex<HashMap<String, (Option<i64>, Instant)>>,
    /// The classes a launch asks to have resolved again, out of turn.
    pub refresh: Arc<Refresh>,
}

/// EC2NodeClasses to resolve again at once: a launch found a subnet, security group or image
/// one resolved to gone, and until its status says so every launch from it fails the same way.
/// The cloud asks; the controller resolves.
pub struct Refresh {
    asked: Mutex<BTreeSet<String>>,
    wake: watch::Sender<()>,
}

impl Default for Refresh {
    fn default() -> Self {
        Self {
            asked: Mutex::default(),
            wake: watch::channel(()).0,
        }
    }
}

impl Refresh {
    /// Asks for the EC2NodeClass `name` to be resolved again now.
    pub fn ask(&self, name: &str) {
        self.asked
            .lock()
            .expect("refresh lock")
            .insert(name.to_owned());
        self.wake.send_replace(());
    }

    /// Whether `name` was asked for since it was last resolved; forgets the ask.
    fn take(&self, name: &str) -> bool {
        self.asked.lock().expect("refresh lock").remove(name)
    }

    /// One item per wake-up (asks in a burst may share one).
    fn wake_ups(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.wake.subscribe(), |mut wake| async {
            wake.changed().await.ok()?;
            Some(((), wake))
        })
    }
}

/// How soon an EC2NodeClass whose spec has not changed is resolved again when something else
/// about it changes: a status write, perhaps another install's, is no reason to ask AWS again,
/// or installs sharing a cluster would answer each other's writes without end.
const RESOLVE_AT_MOST_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing EC2NodeClass status: {0}")]
    WriteStatus(#[source] kube::Error),
}

/// Runs the controller until `shutdown`.
pub async fn run(context: Arc<NodeClasses>, shutdown: CancellationToken) {
    let api: Api<EC2NodeClass> = Api::all(context.client.clone());
    Controller::new(api, watcher::Config::default())
        .reconcile_all_on(context.refresh.wake_ups())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
}

fn error_policy(object: Arc<EC2NodeClass>, error: &Error, _: Arc<NodeClasses>) -> Action {
    warn!(name = %object.name_any(), %error, "EC2NodeClass reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(object: Arc<EC2NodeClass>, context: Arc<NodeClasses>) -> Result<Action, Error> {
    if object.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = object.name_any();
    let generation = object.metadata.generation;
    let asked = context.refresh.take(&name);
    if !asked
        && let Some((resolved_at, at)) = context.resolved.lock().expect("resolved lock").get(&name)
        && *resolved_at == generation
        && at.elapsed() < RESOLVE_AT_MOST_EVERY
    {
        return Ok(Action::requeue(RESOLVE_AT_MOST_EVERY - at.elapsed()));
    }
    context
        .resolved
        .lock()
        .expect("resolved lock")
        .insert(name, (generation, Instant::now()));
    let previous = object.status.clone().unwrap_or_default();
    let status = resolve(&context, &object, &previous.conditions).await;
    let ready = is_true(&status.conditions, READY);
    for problem in status
        .conditions
        .iter()
        .filter(|c| c.type_ != READY && c.status == "False")
    {
        let before = previous
            .conditions
            .iter()
            .find(|c| c.type_ == problem.type_);
        if before.is_none_or(|c| c.message != problem.message) {
            crate::events::publish(
                &context.recorder,
                object.as_ref(),
                EventType::Warning,
                &problem.reason,
                problem.message.clone(),
                "Resolve",
            )
            .await;
        }
    }
    if status != previous {
        let api: Api<EC2NodeClass> = Api::all(context.client.clone());
        apply_status(&api, &object.name_any(), &status, None)
            .await
            .map_err(Error::WriteStatus)?;
    }
    Ok(Action::requeue(Duration::from_secs(if ready {
        300
    } else {
        60
    })))
}

/// Why a selector could not be resolved; the message of its condition.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error(transparent)]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Alias(#[from] AliasError),
}

/// The status the selector terms resolve to now.
async fn resolve(
    context: &NodeClasses,
    object: &EC2NodeClass,
    existing: &[Condition],
) -> EC2NodeClassStatus {
    let spec = &object.spec;
    let aws = &context.aws;
    let generation = object.metadata.generation;
    let now = Timestamp::now();
    let mut conditions = Vec::new();
    let mut judge = |type_: &str, found: Result<bool, ResolveError>, what: &str| -> bool {
        let (ok, reason, message) = match found {
            Ok(true) => (true, "Resolved", format!("{what} resolved")),
            Ok(false) => (
                false,
                "NotFound",
                format!("no {what} match the selector terms"),
            ),
            Err(error) => (false, "ResolveFailed", error.to_string()),
        };
        conditions.push(condition(
            existing, type_, ok, reason, message, generation, now,
        ));
        ok
    };

    let mut subnets = BTreeMap::new();
    let subnet_result: Result<(), CloudError> = async {
        for term in &spec.subnet_selector_terms {
            for subnet in aws.subnets(term).await? {
                subnets.insert(subnet.id.clone(), subnet);
            }
        }
        Ok(())
    }
    .await;
    let mut subnets: Vec<_> = subnets.into_values().collect();
    subnets.sort_by(|a, b| a.zone.cmp(&b.zone).then(a.id.cmp(&b.id)));
    let subnets_ok = judge(
        SUBNETS_READY,
        subnet_result
            .map(|()| !subnets.is_empty())
            .map_err(ResolveError::from),
        "subnets",
    );

    let mut groups = BTreeMap::new();
    let group_result: Result<(), CloudError> = async {
        for term in &spec.security_group_selector_terms {
            for group in aws.security_groups(term).await? {
                groups.insert(group.id.clone(), group);
            }
        }
        Ok(())
    }
    .await;
    let groups: Vec<_> = groups.into_values().collect();
    let groups_ok = judge(
        SECURITY_GROUPS_READY,
        group_result
            .map(|()| !groups.is_empty())
            .map_err(ResolveError::from),
        "security groups",
    );

    let mut images = Vec::new();
    let image_result: Result<(), ResolveError> = async {
        for term in &spec.ami_selector_terms {
            match &term.alias {
                Some(alias) => {
                    for parameter in alias_parameters(alias, &context.kubernetes_minor)? {
                        if let Some(id) = aws.parameter(&parameter.path).await? {
                            // The alias says the architecture; the parameter's date orders nothing.
                            images.push((resolved_ami(&id, None, parameter.arch), String::new()));
                        }
                    }
                }
                None => images.extend(aws.images(term).await?),
            }
        }
        Ok(())
    }
    .await;
    let amis = newest_per_arch(images);
    let amis_ok = judge(AMIS_READY, image_result.map(|()| !amis.is_empty()), "AMIs");

    let profile_result: Result<Option<String>, CloudError> =
        match (&spec.role, &spec.instance_profile) {
            (_, Some(profile)) => Ok(Some(profile.clone())),
            (Some(role), None) => {
                let name = instance_profile_name(&context.cluster, &object.name_any());
                let mut tags = spec.tags.clone();
                tags.insert(CLUSTER_LABEL.into(), context.cluster.clone());
                tags.insert(NODECLASS_TAG.into(), object.name_any());
                aws.ensure_instance_profile(&name, role_name(role), &tags)
                    .await
                    .map(|()| Some(name))
            }
            (None, None) => Ok(None),
        };
    let profile_ok = judge(
        INSTANCE_PROFILE_READY,
        profile_result
            .clone()
            .map(|p| p.is_some())
            .map_err(ResolveError::from),
        "instance profile",
    );

    let ready = subnets_ok && groups_ok && amis_ok && profile_ok;
    let not_ready: Vec<&str> = conditions
        .iter()
        .filter(|c| c.status == "False")
        .map(|c| c.type_.as_str())
        .collect();
    let message = if ready {
        "subnets, security groups, AMIs and instance profile resolved".to_owned()
    } else {
        format!("not resolved: {}", not_ready.join(", "))
    };
    conditions.push(condition(
        existing,
        READY,
        ready,
        if ready { "Resolved" } else { "NotResolved" },
        message,
        generation,
        now,
    ));
    EC2NodeClassStatus {
        observed_generation: generation,
        conditions,
        subnets,
        security_groups: groups,
        amis,
        instance_profile: profile_result.ok().flatten(),
    }
}
