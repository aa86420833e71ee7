//! Garbage collection, as Karpenter's: an instance this install launched that no NodeClaim
//! accounts for (none has its providerID, none is the NodeClaim its tags name) is terminated
//! once it has been so for 30 s, and its Node removed; a launched NodeClaim whose instance has
//! been gone for 30 s is deleted. Deciding is pure (`collect`); the loop does the I/O.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::controller::NodeClaims;
use crate::apis::labels::CLUSTER_LABEL;
use crate::apis::node_claim::NodeClaim;
use crate::cloud::{CloudProvider, Instance};
use crate::termination::release_node;

/// How long an instance or NodeClaim must look orphaned before it is collected: a launch's
/// status write, or the watch showing it, can lag the instance by a moment.
const GRACE: SignedDuration = SignedDuration::from_secs(30);
/// How often instances are listed: a DescribeInstances per install, so not often (Karpenter
/// lists every two minutes; a shorter pass bounds how long an orphan bills).
const PASS_INTERVAL: Duration = Duration::from_secs(30);

/// When each suspect was first seen orphaned: instances by providerID, NodeClaims by name.
#[derive(Debug, Default)]
pub struct Suspects {
    instances: HashMap<String, Timestamp>,
    claims: HashMap<String, Timestamp>,
}

/// What to collect now.
#[derive(Debug, Default, PartialEq)]
pub struct Garbage {
    pub instances: Vec<Instance>,
    pub claims: Vec<String>,
}

pub fn collect(
    instances: &[Instance],
    claims: &[Arc<NodeClaim>],
    suspects: &mut Suspects,
    now: Timestamp,
) -> Garbage {
    let names: HashSet<String> = claims.iter().map(|c| c.name_any()).collect();
    let recorded: HashSet<&str> = claims
        .iter()
        .filter_map(|c| c.status.as_ref()?.provider_id.as_deref())
        .collect();
    let running: HashSet<&str> = instances.iter().map(|i| i.provider_id.as_str()).collect();
    let due = |first: &mut HashMap<String, Timestamp>, key: &str| {
        let since = *first.entry(key.to_owned()).or_insert(now);
        now.duration_since(since) >= GRACE
    };

    let orphaned: Vec<&Instance> = instances
        .iter()
        .filter(|i| {
            !recorded.contains(i.provider_id.as_str())
                && !i.claim.as_ref().is_some_and(|claim| names.contains(claim))
        })
        .collect();
    suspects
        .instances
        .retain(|id, _| orphaned.iter().any(|i| i.provider_id == *id));
    let mut garbage = Garbage::default();
    for instance in orphaned {
        if due(&mut suspects.instances, &instance.provider_id) {
            garbage.instances.push(instance.clone());
        }
    }

    let lost: Vec<String> = claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .is_some_and(|id| !running.contains(id))
        })
        .map(|c| c.name_any())
        .collect();
    suspects.claims.retain(|name, _| lost.contains(name));
    for name in lost {
        if due(&mut suspects.claims, &name) {
            garbage.claims.push(name);
        }
    }
    garbage
}

/// Runs until `shutdown`.
pub async fn run<C: CloudProvider>(context: Arc<NodeClaims<C>>, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        ready = context.state.wait_until_ready() => if ready.is_err() { return },
    }
    let mut suspects = Suspects::default();
    let mut tick = tokio::time::interval(PASS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Listed first: a NodeClaim created after the list cannot make its instance look
        // orphaned, and one created before it is in the store by the time it is read.
        let instances = match context.cloud.list().await {
            Ok(instances) => instances,
            Err(error) => {
                warn!(%error, "listing instances for garbage collection failed");
                continue;
            }
        };
        *context.instances.write().expect("instances lock") = instances
            .iter()
            .map(|i| (i.provider_id.clone(), i.clone()))
            .collect();
        let claims: Vec<Arc<NodeClaim>> = context
            .state
            .node_claims
            .state()
            .into_iter()
            .filter(|c| c.labels().get(CLUSTER_LABEL) == Some(&context.cluster))
            .collect();
        let garbage = collect(&instances, &claims, &mut suspects, Timestamp::now());
        for instance in garbage.instances {
            remove_instance(&context, &instance).await;
        }
        for name in garbage.claims {
            match Api::<NodeClaim>::all(context.client.clone())
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => info!(nodeclaim = %name, "its instance is gone: deleting the NodeClaim"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(error) => {
                    warn!(nodeclaim = %name, %error, "deleting a NodeClaim whose instance is gone failed")
                }
            }
        }
    }
}

async fn remove_instance<C: CloudProvider>(context: &NodeClaims<C>, instance: &Instance) {
    if let Err(error) = context.cloud.delete(&instance.provider_id).await {
        warn!(instance = %instance.id, %error, "terminating an orphaned instance failed");
        return;
    }
    info!(instance = %instance.id, claim = ?instance.claim, "terminated an instance no NodeClaim accounts for");
    if let Some(node) = context.state.node_by_provider_id(&instance.provider_id)
        && let Err(error) = release_node(&context.client, &node.name_any()).await
    {
        warn!(node = %node.name_any(), %error, "removing an orphaned instance's Node failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(id: &str, claim: Option<&str>) -> Instance {
        Instance {
            id: id.into(),
            provider_id: format!("aws:///z/{id}"),
            claim: claim.map(str::to_owned),
            instance_type: "m5.large".into(),
            zone: "z".into(),
            image_id: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
        }
    }

    fn claim(name: &str, instance: Option<&str>) -> Arc<NodeClaim> {
        let status = match instance {
            Some(id) => json!({"providerID": format!("aws:///z/{id}")}),
            None => json!({}),
        };
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
                "metadata": {"name": name},
                "spec": {"requirements": [{"key": "k", "operator": "Exists"}],
                         "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": "d"}},
                "status": status
            }))
            .unwrap(),
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn an_instance_no_claim_accounts_for_is_collected_after_the_grace() {
        let instances = [instance("i-1", Some("gone")), instance("i-2", None)];
        let mut suspects = Suspects::default();
        assert_eq!(
            collect(&instances, &[], &mut suspects, at(0)),
            Garbage::default()
        );
        assert_eq!(
            collect(&instances, &[], &mut suspects, at(29)),
            Garbage::default()
        );
        assert_eq!(
            collect(&instances, &[], &mut suspects, at(30)).instances,
            instances.to_vec()
        );
    }

    #[test]
    fn an_instance_whose_claim_exists_is_kept_even_before_its_status_names_it() {
        let instances = [instance("i-1", Some("a")), instance("i-2", Some("b"))];
        let claims = [claim("a", None), claim("other", Some("i-2"))];
        let mut suspects = Suspects::default();
        collect(&instances, &claims, &mut suspects, at(0));
        assert_eq!(
            collect(&instances, &claims, &mut suspects, at(60)),
            Garbage::default()
        );
    }

    #[test]
    fn a_claim_accounted_for_again_starts_over() {
        let instances = [instance("i-1", Some("a"))];
        let mut suspects = Suspects::default();
        collect(&instances, &[], &mut suspects, at(0));
        collect(&instances, &[claim("a", None)], &mut suspects, at(20));
        assert_eq!(
            collect(&instances, &[], &mut suspects, at(40)),
            Garbage::default(),
            "orphaned again only since 40 s"
        );
    }

    #[test]
    fn a_launched_claim_whose_instance_is_gone_is_collected_after_the_grace() {
        let claims = [claim("lost", Some("i-9")), claim("launching", None)];
        let mut suspects = Suspects::default();
        assert_eq!(
            collect(&[], &claims, &mut suspects, at(0)),
            Garbage::default()
        );
        assert_eq!(
            collect(&[], &claims, &mut suspects, at(30)).claims,
            ["lost"]
        );
        let running = [instance("i-9", Some("lost"))];
        assert_eq!(
            collect(&running, &claims, &mut suspects, at(31)),
            Garbage::default()
        );
    }
}
