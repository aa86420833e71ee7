//! `AwsCloud`, the cloud boundary over EC2: a NodeClaim's launch (launch templates, one
//! CreateFleet, the instance a lost answer left behind adopted instead of launched again), the
//! instance catalog read at most every five minutes and again once the on-demand prices change,
//! and the offerings that just ran out of capacity, which both the catalog and the next launch
//! leave out. A launch that finds a subnet, security group or image of its node class gone asks
//! for the class to be resolved again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use tracing::{info, warn};

use crate::apis::conditions::READY;
use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::node_claim::NodeClaim;
use crate::aws::bootstrap::NodeSettings;
use crate::aws::capacity::{UnavailableOfferings, is_insufficient_capacity};
use crate::aws::client::{Aws, FleetOutcome};
use crate::aws::cluster::ClusterSource;
use crate::aws::instance_id;
use crate::aws::launch::{LaunchInput, fleet_request};
use crate::aws::nodeclass::controller::Refresh;
use crate::aws::pricing::{OnDemandPrices, RegionPrices};
use crate::cloud::{CloudError, CloudProvider, CreateError, Instance, Launched};
use crate::metrics::Metrics;
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::requirements::Requirements;
use crate::status::is_true;

/// How often the instance catalog is read again from EC2.
const CATALOG_LIFETIME: Duration = Duration::from_secs(300);
/// After a failed catalog read, how long the failure is answered without asking EC2 again.
const CATALOG_RETRY: Duration = Duration::from_secs(10);

pub struct AwsCloud {
    aws: Aws,
    /// The cluster its nodes join.
    joins: Arc<ClusterSource>,
    /// Tags every instance, and finds the ones this install launched.
    cluster: String,
    unavailable: Mutex<UnavailableOfferings>,
    prices: Arc<OnDemandPrices>,
    catalog: tokio::sync::Mutex<Catalog>,
    metrics: Arc<Metrics>,
    node_class_refresh: Arc<Refresh>,
}

/// EC2's error codes for a subnet, security group or image that does not exist (any more).
const GONE: [&str; 5] = [
    "InvalidSubnetID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidSecurityGroupID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
];

fn is_gone(code: &str) -> bool {
    GONE.contains(&code)
}

#[derive(Default)]
struct Catalog {
    /// When it was read, with the prices it was priced from.
    read: Option<(Instant, Arc<RegionPrices>, Vec<InstanceType>)>,
    failed: Option<(Instant, CloudError)>,
}

impl AwsCloud {
    pub fn new(
        aws: Aws,
        joins: Arc<ClusterSource>,
        cluster: String,
        prices: Arc<OnDemandPrices>,
        metrics: Arc<Metrics>,
        node_class_refresh: Arc<Refresh>,
    ) -> Self {
        Self {
            aws,
            joins,
            cluster,
            prices,
            unavailable: Mutex::default(),
            catalog: tokio::sync::Mutex::default(),
            metrics,
            node_class_refresh,
        }
    }

    /// `cause` as the launch's error: when it says something `class` resolved to is gone, the
    /// class is out of date and is resolved again.
    fn launch_error(&self, class: &str, cause: CloudError) -> CreateError {
        if !cause.code.as_deref().is_some_and(is_gone) {
            return CreateError::Api(cause);
        }
        self.node_class_refresh.ask(class);
        CreateError::NodeClassOutdated {
            class: class.to_owned(),
            cause: cause.to_string(),
        }
    }

    fn unavailable(&self) -> std::sync::MutexGuard<'_, UnavailableOfferings> {
        self.unavailable
            .lock()
            .expect("the offerings lock is never poisoned")
    }

    /// The catalog as last read, read again once it is `CATALOG_LIFETIME` old or the on-demand
    /// prices changed.
    async fn catalog(&self) -> Result<Vec<InstanceType>, CloudError> {
        let mut catalog = self.catalog.lock().await;
        let prices = self.prices.current();
        if let Some((read, priced_from, types)) = &catalog.read
            && read.elapsed() < CATALOG_LIFETIME
            && Arc::ptr_eq(priced_from, &prices)
        {
            return Ok(types.clone());
        }
        if let Some((at, error)) = &catalog.failed
            && at.elapsed() < CATALOG_RETRY
        {
            return Err(error.clone());
        }
        let started = Instant::now();
        match self.aws.instance_catalog(&prices.prices).await {
            Ok(types) => {
                info!(
                    types = types.len(),
                    priced = types.iter().filter(|t| t.min_price().is_some()).count(),
                    prices = ?prices.origin,
                    elapsed_ms = started.elapsed().as_millis(),
                    "read the instance catalog"
                );
                self.metrics
                    .instance_types
                    .set(i64::try_from(types.len()).unwrap_or(i64::MAX));
                catalog.read = Some((Instant::now(), prices, types.clone()));
                catalog.failed = None;
                Ok(types)
            }
            Err(error) => {
                warn!(%error, "reading the instance catalog failed; retrying in 10 s");
                catalog.failed = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Leaves one offering out for a while, as if EC2 had reported it out of capacity: a spot
    /// offering about to be reclaimed.
    pub fn leave_out(&self, capacity_type: &str, instance_type: &str, zone: &str) {
        self.unavailable()
            .mark(capacity_type, instance_type, zone, Instant::now());
    }

    /// Leaves out, for a while, each offering EC2 reported out of capacity.
    fn mark_unavailable(&self, class: &EC2NodeClass, capacity_type: &str, outcome: &FleetOutcome) {
        let subnets = class.status.iter().flat_map(|s| &s.subnets);
        let zone_of = |subnet: &str| subnets.clone().find(|s| s.id == subnet).map(|s| &s.zone);
        let mut unavailable = self.unavailable();
        for error in outcome
            .errors
            .iter()
            .filter(|e| is_insufficient_capacity(&e.code))
        {
            if let (Some(instance_type), Some(zone)) = (
                &error.instance_type,
                error.subnet.as_deref().and_then(zone_of),
            ) {
                unavailable.mark(capacity_type, instance_type, zone, Instant::now());
            }
        }
    }
}

/// The catalog with the offerings that recently ran out of capacity marked unavailable.
fn with_availability(
    mut catalog: Vec<InstanceType>,
    unavailable: &UnavailableOfferings,
    now: Instant,
) -> Vec<InstanceType> {
    for instance_type in &mut catalog {
        for offering in &mut instance_type.offerings {
            offering.available = !unavailable.is_unavailable(
                &offering.capacity_type,
                &instance_type.name,
                &offering.zone,
                now,
            );
        }
    }
    catalog
}

impl CloudProvider for AwsCloud {
    async fn create(
        &self,
        claim: &NodeClaim,
        class: &EC2NodeClass,
    ) -> Result<Launched, CreateError> {
        let class_name = class.name_any();
        let Some(class_status) = class
            .status
            .as_ref()
            .filter(|s| is_true(&s.conditions, READY))
        else {
            return Err(CreateError::NodeClassNotReady(class_name));
        };
        let requirements = Requirements::from_node_pool(&claim.spec.requirements);
        let catalog = self.instance_types().await?;
        let joins = self
            .joins
            .get()
            .await
            .map_err(CreateError::ClusterUnknown)?;
        let name = claim.name_any();
        let request = fleet_request(&LaunchInput {
            cluster: &self.cluster,
            node_class: &class_name,
            claim_name: &name,
            claim_uid: claim.metadata.uid.as_deref().unwrap_or_default(),
            requirements: &requirements,
            labels: claim.labels(),
            joins: &joins,
            node: &NodeSettings::of_claim(claim),
            spec: &class.spec,
            status: class_status,
            catalog: &catalog,
        })
        .map_err(|reason| CreateError::NoLaunchOption(Box::new(reason)))?;
        let offered: BTreeSet<String> = request
            .configs
            .iter()
            .flat_map(|c| c.overrides.iter().map(|(name, _)| name.clone()))
            .collect();
        let facts = self
            .aws
            .type_facts(&offered.into_iter().collect::<Vec<_>>())
            .await?;
        for config in &request.configs {
            self.aws
                .ensure_launch_template(config)
                .await
                .map_err(|cause| self.launch_error(&class_name, cause))?;
        }
        // A crash or a timeout can lose CreateFleet's answer: the instance it launched for this
        // NodeClaim is adopted, not launched again.
        let outcome = match self.aws.instance_for_claim(&self.cluster, &name).await? {
            Some(instance) => FleetOutcome {
                instance: Some(instance),
                errors: Vec::new(),
            },
            None => self
                .aws
                .create_fleet(&request)
                .await
                .map_err(|cause| self.launch_error(&class_name, cause))?,
        };
        // Offerings EC2 reported out of capacity are left out for a while, whether or not
        // another offering launched.
        self.mark_unavailable(class, request.capacity_type, &outcome);
        let Some(instance) = outcome.instance else {
            let errors: Vec<String> = outcome
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect();
            let message = format!(
                "CreateFleet launched nothing ({}): {}",
                request.capacity_type,
                errors.join("; ")
            );
            if outcome.errors.iter().any(|e| is_gone(&e.code)) {
                self.node_class_refresh.ask(&class_name);
                return Err(CreateError::NodeClassOutdated {
                    class: class_name,
                    cause: message,
                });
            }
            return Err(CreateError::LaunchedNothing(message));
        };
        Ok(Launched {
            facts: facts.get(&instance.instance_type).cloned(),
            instance,
            capacity_type: request.capacity_type.to_owned(),
        })
    }

    async fn get(&self, claim: &str) -> Result<Option<Instance>, CloudError> {
        self.aws.instance_for_claim(&self.cluster, claim).await
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        self.aws.instances(&self.cluster, None).await
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        match instance_id(provider_id) {
            Some(id) => self.aws.terminate(id).await,
            // Not an EC2 instance: nothing this cloud launched.
            None => Ok(()),
        }
    }

    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        let catalog = self.catalog().await?;
        Ok(with_availability(
            catalog,
            &self.unavailable(),
            Instant::now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::fake;

    #[test]
    fn offerings_that_ran_out_of_capacity_are_unavailable_for_a_while() {
        let now = Instant::now();
        let catalog = fake::catalog(2);
        let name = catalog[0].name.clone();
        let mut unavailable = UnavailableOfferings::default();
        unavailable.mark("spot", &name, fake::ZONES[0], now);
        let marked = with_availability(catalog.clone(), &unavailable, now);
        let out: Vec<(&str, &str, &str)> = marked
            .iter()
            .flat_map(|t| t.offerings.iter().map(move |o| (t, o)))
            .filter(|(_, o)| !o.available)
            .map(|(t, o)| (t.name.as_str(), o.capacity_type.as_str(), o.zone.as_str()))
            .collect();
        assert_eq!(out, [(name.as_str(), "spot", fake::ZONES[0])]);
        let later = with_availability(catalog, &unavailable, now + Duration::from_secs(181));
        assert!(
            later
                .iter()
                .all(|t| t.offerings.iter().all(|o| o.available))
        );
    }
}
