//! Launch templates no EC2NodeClass launches from any more are deleted: those of a class that
//! is gone, and those a class changed away from (another image, user data, security groups,
//! or the labels and taints of the NodePools on it, which its nodes' bootstrap carries). The
//! labels and taints of NodeClaims still to launch count too: one adopted by hand, or made
//! before its pool changed, launches with its own.
//! A template is named by a hash of its content and made again before each launch that needs
//! it; one is deleted only once it has been unused for a minute (and is a minute old), so a
//! launch reading a class a moment old still finds its own, and at worst a launch in that
//! race fails once and is retried. Deciding is pure (`stale`); the loop lists the templates
//! tagged for this install every 30 s and deletes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Aws;
use super::bootstrap::NodeSettings;
use super::cluster::ClusterSource;
use super::launch::{TemplateInput, current_templates};
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::CLUSTER_LABEL;
use crate::apis::node_claim::NodeClaim;
use crate::apis::node_pool::NodePool;

const PASS_INTERVAL: Duration = Duration::from_secs(30);
/// How old a template must be before it may go.
const GRACE: SignedDuration = SignedDuration::from_mins(1);

/// A launch template as DescribeLaunchTemplates shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTemplate {
    pub name: String,
    /// Its `windlass.dev/ec2nodeclass` tag.
    pub node_class: Option<String>,
    pub created: Option<Timestamp>,
}

/// When each unused template was first seen unused.
pub type Unused = HashMap<String, Timestamp>;

/// The templates to delete: older than the grace, and not among those their class (by tag)
/// launches from now for the grace; `current` has an entry for every class that exists.
pub fn stale(
    templates: &[LaunchTemplate],
    current: &BTreeMap<String, BTreeSet<String>>,
    unused: &mut Unused,
    now: Timestamp,
) -> Vec<String> {
    let candidates: Vec<&LaunchTemplate> = templates
        .iter()
        .filter(|t| t.created.is_some_and(|at| now.duration_since(at) >= GRACE))
        .filter(|t| {
            t.node_class
                .as_ref()
                .and_then(|class| current.get(class))
                .is_none_or(|names| !names.contains(&t.name))
        })
        .collect();
    unused.retain(|name, _| candidates.iter().any(|t| t.name == *name));
    candidates
        .into_iter()
        .filter(|t| {
            let since = *unused.entry(t.name.clone()).or_insert(now);
            now.duration_since(since) >= GRACE
        })
        .map(|t| t.name.clone())
        .collect()
}

/// Runs until `shutdown`.
pub async fn run(
    aws: Aws,
    joins: Arc<ClusterSource>,
    client: kube::Client,
    cluster: String,
    shutdown: CancellationToken,
) {
    let classes: Api<EC2NodeClass> = Api::all(client.clone());
    let pools: Api<NodePool> = Api::all(client.clone());
    let claims: Api<NodeClaim> = Api::all(client);
    let ours = ListParams::default().labels(&format!("{CLUSTER_LABEL}={cluster}"));
    let mut unused = Unused::new();
    let mut tick = tokio::time::interval(PASS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Without the cluster nothing can be told current, so nothing is deleted.
        let Ok(joined) = joins.get().await else {
            continue;
        };
        // Classes, pools and claims before templates: a template made after the lists is too
        // young to go.
        let (listed, pools, claims) = match (
            classes.list(&Default::default()).await,
            pools.list(&Default::default()).await,
            claims.list(&ours).await,
        ) {
            (Ok(classes), Ok(pools), Ok(claims)) => (classes.items, pools.items, claims.items),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                warn!(%error, "listing EC2NodeClasses, NodePools and NodeClaims for launch template cleanup failed");
                continue;
            }
        };
        let current: BTreeMap<String, BTreeSet<String>> = listed
            .iter()
            .map(|class| {
                let name = class.name_any();
                let to_launch = claims.iter().filter(|claim| {
                    claim.spec.node_class_ref.name == name
                        && claim
                            .status
                            .as_ref()
                            .is_none_or(|s| s.provider_id.is_none())
                });
                let nodes: Vec<NodeSettings> = pools
                    .iter()
                    .filter(|pool| pool.spec.template.spec.node_class_ref.name == name)
                    .map(NodeSettings::of_pool)
                    .chain(to_launch.map(NodeSettings::of_claim))
                    .collect();
                let names = class.status.as_ref().map_or_else(BTreeSet::new, |status| {
                    let input = TemplateInput {
                        cluster: &cluster,
                        node_class: &name,
                        spec: &class.spec,
                        status,
                        joins: &joined,
                        node: &NodeSettings::default(),
                    };
                    current_templates(&input, &nodes)
                });
                (name, names)
            })
            .collect();
        let ours = format!("windlass-{cluster}-");
        let templates = match aws.launch_templates(&cluster).await {
            Ok(mut templates) => {
                templates.retain(|t| t.name.starts_with(&ours));
                templates
            }
            Err(error) => {
                warn!(%error, "listing launch templates failed");
                continue;
            }
        };
        for name in stale(&templates, &current, &mut unused, Timestamp::now()) {
            match aws.delete_launch_template(&name).await {
                Ok(()) => {
                    info!(launch_template = %name, "deleted a launch template no EC2NodeClass uses")
                }
                Err(error) => {
                    warn!(launch_template = %name, %error, "deleting a launch template failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn template(name: &str, class: Option<&str>, created: i64) -> LaunchTemplate {
        LaunchTemplate {
            name: name.into(),
            node_class: class.map(str::to_owned),
            created: Some(at(created)),
        }
    }

    #[test]
    fn templates_of_gone_or_changed_classes_go_after_a_minute() {
        let current = BTreeMap::from([(
            "default".to_owned(),
            BTreeSet::from(["windlass-c-default-amd64-new".to_owned()]),
        )]);
        let templates = [
            template("windlass-c-default-amd64-new", Some("default"), 0),
            template("windlass-c-default-amd64-old", Some("default"), 0),
            template("windlass-c-gone-amd64-x", Some("gone"), 0),
            template("windlass-c-default-arm64-young", Some("default"), 100),
            template("untagged", None, 0),
        ];
        let mut unused = Unused::new();
        assert!(
            stale(&templates, &current, &mut unused, at(59)).is_empty(),
            "nothing younger than a minute"
        );
        assert!(
            stale(&templates, &current, &mut unused, at(120)).is_empty(),
            "unused only from now"
        );
        assert_eq!(
            stale(&templates, &current, &mut unused, at(180)),
            [
                "windlass-c-default-amd64-old",
                "windlass-c-gone-amd64-x",
                "untagged"
            ]
        );
        let back_in_use = BTreeMap::from([(
            "default".to_owned(),
            BTreeSet::from(["windlass-c-default-amd64-old".to_owned()]),
        )]);
        let mut unused = Unused::new();
        stale(&templates, &current, &mut unused, at(120));
        assert!(
            !stale(&templates, &back_in_use, &mut unused, at(180))
                .contains(&"windlass-c-default-amd64-old".to_owned()),
            "a template in use again is not deleted"
        );
    }
}
