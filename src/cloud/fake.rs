//! An in-memory cloud for the node controllers' unit tests: it launches the first offering the
//! NodeClaim's requirements allow, remembers one instance per NodeClaim (as a ClientToken
//! would), and counts what it was asked.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::apis::ec2_node_class::EC2NodeClass;
use crate::apis::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use crate::apis::node_claim::NodeClaim;
use crate::scheduling::instance_types::{Hardware, InstanceType, TypeFacts};
use crate::scheduling::requirements::Requirements;

use super::{CloudError, CloudProvider, CreateError, Instance, Launched};

#[derive(Default)]
pub struct FakeCloud {
    pub types: Vec<InstanceType>,
    /// Every `create` fails with "no capacity" while this is set.
    pub out_of_capacity: Mutex<bool>,
    /// Every `create` fails as EC2 does for a subnet that no longer exists while this holds
    /// its id.
    pub subnet_gone: Mutex<Option<String>>,
    /// NodeClaim name → its instance.
    pub instances: Mutex<BTreeMap<String, Instance>>,
    /// How many instances were started (not found again).
    pub launches: Mutex<usize>,
    /// The providerIDs `delete` was called with.
    pub deleted: Mutex<Vec<String>>,
}

impl FakeCloud {
    pub fn new(types: Vec<InstanceType>) -> Self {
        Self {
            types,
            ..Self::default()
        }
    }

    pub fn launches(&self) -> usize {
        *self.launches.lock().unwrap()
    }
}

impl CloudProvider for FakeCloud {
    async fn create(
        &self,
        claim: &NodeClaim,
        _class: &EC2NodeClass,
    ) -> Result<Launched, CreateError> {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let requirements = Requirements::from_node_pool(&claim.spec.requirements);
        let (instance_type, offering) = self
            .types
            .iter()
            .filter(|t| requirements.allows(INSTANCE_TYPE_LABEL, &t.name))
            .flat_map(|t| t.offerings.iter().map(move |o| (t, o)))
            .find(|(_, o)| {
                requirements.allows(ZONE_LABEL, &o.zone)
                    && requirements.allows(CAPACITY_TYPE_LABEL, &o.capacity_type)
            })
            .ok_or_else(|| CreateError::NoLaunchOption("no offering fits".into()))?;
        let launched = |instance: Instance| Launched {
            instance,
            capacity_type: offering.capacity_type.clone(),
            facts: Some(TypeFacts {
                shape: instance_type.shape,
                arch: if instance_type.arch == "arm64" {
                    "arm64"
                } else {
                    "amd64"
                },
                hardware: Hardware::default(),
            }),
        };
        if let Some(instance) = self.instances.lock().unwrap().get(&name) {
            return Ok(launched(instance.clone()));
        }
        if let Some(subnet) = self.subnet_gone.lock().unwrap().clone() {
            return Err(CreateError::NodeClassOutdated {
                class: claim.spec.node_class_ref.name.clone(),
                cause: format!(
                    "CreateFleet: InvalidSubnetID.NotFound: The subnet ID '{subnet}' does not exist"
                ),
            });
        }
        if *self.out_of_capacity.lock().unwrap() {
            return Err(CreateError::LaunchedNothing(format!(
                "InsufficientInstanceCapacity: no {} capacity",
                instance_type.name
            )));
        }
        let mut launches = self.launches.lock().unwrap();
        *launches += 1;
        let id = format!("i-{:04}", *launches);
        let instance = Instance {
            provider_id: format!("fake:///{}/{id}", offering.zone),
            claim: Some(name.clone()),
            id,
            instance_type: instance_type.name.clone(),
            zone: offering.zone.clone(),
            image_id: Some("ami-fake".into()),
            subnet_id: None,
            security_group_ids: Vec::new(),
        };
        self.instances
            .lock()
            .unwrap()
            .insert(name, instance.clone());
        Ok(launched(instance))
    }

    async fn get(&self, claim: &str) -> Result<Option<Instance>, CloudError> {
        Ok(self.instances.lock().unwrap().get(claim).cloned())
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.instances.lock().unwrap().values().cloned().collect())
    }

    async fn delete(&self, provider_id: &str) -> Result<(), CloudError> {
        self.instances
            .lock()
            .unwrap()
            .retain(|_, i| i.provider_id != provider_id);
        self.deleted.lock().unwrap().push(provider_id.to_owned());
        Ok(())
    }

    async fn instance_types(&self) -> Result<Vec<InstanceType>, CloudError> {
        Ok(self.types.clone())
    }
}
