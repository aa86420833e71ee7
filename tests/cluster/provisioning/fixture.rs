//! What the provisioning tests share: a NodeClass and NodePool of their own, pods only that pool
//! can take, cleanup that waits until things are gone, and reading back what the controller
//! did: NodeClaims, NodePool conditions, Events, metrics, and instances and launch templates
//! in moto (including its fault injection); and a pool for a pod whose volume pins its node.

use std::time::Duration;

use aws_sdk_ec2::types::{Filter, Instance, ResponseLaunchTemplateData};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use windlass::apis::Condition;
use windlass::apis::ec2_node_class::EC2NodeClass;
use windlass::apis::node_claim::{NodeClaim, NodeClaimStatus};
use windlass::apis::node_pool::NodePool;
use windlass::aws::instance_id;

use crate::support::{
    ChildProcess, TestEnv, TestNamespace, Windlass, install_crds, start_registrar, start_windlass,
    unique, wait_until,
};

/// An EC2NodeClass on the stack's subnets and security group, and a NodePool on it whose taint
/// keeps other tests' pods away.
pub async fn node_class_and_pool(
    env: &TestEnv,
    name: &str,
    requirements: serde_json::Value,
    limits: serde_json::Value,
) -> (Api<EC2NodeClass>, Api<NodePool>) {
    node_class_and_pool_with(env, name, json!({}), json!({}), requirements, limits).await
}

/// As [`node_class_and_pool`], with `class` merged into the class's spec (over its AL2023
/// alias, say) and `labels` on the pool's template.
pub async fn node_class_and_pool_with(
    env: &TestEnv,
    name: &str,
    class: serde_json::Value,
    labels: serde_json::Value,
    requirements: serde_json::Value,
    limits: serde_json::Value,
) -> (Api<EC2NodeClass>, Api<NodePool>) {
    let cluster =
        std::env::var("WINDLASS_CLUSTER_NAME").unwrap_or_else(|_| "windlass-local".into());
    let discovery = json!({"windlass.dev/discovery": cluster});
    let mut spec = json!({"role": "WindlassNodeRole", "amiSelectorTerms": [{"alias": "al2023@latest"}], "tags": {"team": "provisioning"},
                          "subnetSelectorTerms": [{"tags": discovery}], "securityGroupSelectorTerms": [{"tags": discovery}]});
    for (key, value) in class.as_object().unwrap() {
        spec[key] = value.clone();
    }
    let classes: Api<EC2NodeClass> = Api::all(env.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "EC2NodeClass", "metadata": {"name": name},
                "spec": spec
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pools: Api<NodePool> = Api::all(env.client.clone());
    pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": name},
                "spec": {
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeClassRef": {"group": "windlass.dev", "kind": "EC2NodeClass", "name": name},
                            "requirements": requirements,
                            "taints": [{"key": "windlass.dev/test", "value": name, "effect": "NoSchedule"}]
                        }
                    },
                    "limits": limits
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    (classes, pools)
}

/// The instance types the controller plans with: moto's, priced from the bundled table of the
/// stack's region (moto serves no Price List, so the controller falls back to it too).
pub async fn ec2_catalog(env: &TestEnv) -> Vec<windlass::scheduling::instance_types::InstanceType> {
    let region = env
        .aws
        .region()
        .expect("the stack sets AWS_REGION")
        .to_string();
    let (prices, _) = windlass::aws::pricing::tables::fallback(&region);
    windlass::aws::Aws::new(&env.aws)
        .instance_catalog(&prices)
        .await
        .unwrap()
}

/// Deletes every pod of the test, and waits until they are gone.
pub async fn delete_pods(pods: &Api<Pod>) {
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
    wait_until("the pods to be gone", Duration::from_secs(30), || async {
        pods.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The instance as moto describes it.
pub async fn describe_instance(env: &TestEnv, instance: &str) -> Instance {
    let described = env
        .ec2()
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .unwrap();
    described.reservations()[0].instances()[0].clone()
}

/// The value of the instance's tag `key`.
pub fn instance_tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

pub async fn assert_terminated(env: &TestEnv, instance: &str) {
    let state = describe_instance(env, instance)
        .await
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_owned();
    assert!(
        ["shutting-down", "terminated"].contains(&state.as_str()),
        "instance {instance} is {state}"
    );
}

/// Deletes the NodePool (unless a test already did) and its EC2NodeClass.
pub async fn delete_pool_and_class(pools: &Api<NodePool>, classes: &Api<EC2NodeClass>, name: &str) {
    match pools.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(error) => panic!("deleting NodePool {name}: {error}"),
    }
    classes
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Deletes the NodeClaims `selector` matches and waits until they are gone.
pub async fn delete_claims(claims: &Api<NodeClaim>, selector: &str) {
    let list = claims
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    for claim in list.items {
        claims
            .delete(&claim.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    wait_claims_gone(claims, selector).await;
}

pub async fn wait_claims_gone(claims: &Api<NodeClaim>, selector: &str) {
    wait_until(
        "the NodeClaims to be gone",
        Duration::from_secs(60),
        || async {
            let list = claims
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
}

pub async fn wait_claim_gone(claims: &Api<NodeClaim>, name: &str) {
    wait_until(
        "the NodeClaim to be gone",
        Duration::from_secs(60),
        || async { claims.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

pub async fn wait_node_gone(nodes: &Api<Node>, name: &str) {
    wait_until("the Node to be gone", Duration::from_secs(30), || async {
        nodes.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// `count` pods of 1 vCPU / 3 GiB that only the test's NodePool can take.
pub async fn pending_pods(env: &TestEnv, namespace: &str, pool: &str, count: usize) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    for index in 0..count {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("worker-{index}"), "labels": {"app": "worker"}},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": pool},
                "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    pods
}

/// The NodePool's condition `type_`, if it has `status`; None also while the NodePool or its
/// status cannot be read.
pub async fn pool_condition(
    pools: &Api<NodePool>,
    name: &str,
    type_: &str,
    status: &str,
) -> Option<Condition> {
    let pool_status = pools.get(name).await.ok()?.status?;
    pool_status
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

/// The note of the first listed Event with `reason` about an object named `name`, in any
/// namespace; None also while the Events cannot be listed.
pub async fn event_note(env: &TestEnv, name: &str, reason: &str) -> Option<String> {
    let events: Api<Event> = Api::all(env.client.clone());
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find_map(|e| {
        (e.regarding.as_ref()?.name.as_deref() == Some(name) && e.reason.as_deref() == Some(reason))
            .then(|| e.note.unwrap_or_default())
    })
}

/// The moto server's fault injection (hack/stack/moto_server.py): CreateFleet for `cluster`
/// reports the offerings `value` matches (`capacity-type:type:zone`, `*` for any) as out of
/// capacity until the returned parameter is deleted.
pub async fn exhaust(env: &TestEnv, cluster: &str, value: &str) -> String {
    let name = format!("/windlass-test/insufficient-capacity/{cluster}");
    aws_sdk_ssm::Client::new(&env.aws)
        .put_parameter()
        .name(&name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    name
}

pub async fn restore(env: &TestEnv, parameter: &str) {
    aws_sdk_ssm::Client::new(&env.aws)
        .delete_parameter()
        .name(parameter)
        .send()
        .await
        .unwrap();
}

/// The first of the pool's NodeClaims (`selector`) that carries `label`, which a launch sets.
pub async fn claim_with_label(
    claims: &Api<NodeClaim>,
    selector: &str,
    label: &str,
    what: &str,
    timeout: Duration,
) -> NodeClaim {
    wait_until(what, timeout, || async {
        let list = claims
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|c| c.labels().contains_key(label))
    })
    .await
}

/// The values of the NodeClaim's instance-type requirement.
pub fn candidate_types(claim: &NodeClaim) -> Vec<String> {
    claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == "node.kubernetes.io/instance-type")
        .flat_map(|r| r.values.clone())
        .collect()
}

/// The id of the instance the NodeClaim launched, from its providerID.
pub fn claim_instance(status: &NodeClaimStatus) -> String {
    instance_id(status.provider_id.as_deref().unwrap())
        .unwrap()
        .to_owned()
}

/// A DescribeInstances or DescribeLaunchTemplates filter for what Windlass tagged for `cluster`.
fn cluster_filter(cluster: &str) -> Filter {
    Filter::builder()
        .name("tag:windlass.dev/cluster")
        .values(cluster)
        .build()
}

/// How many instances are tagged for `cluster`, in any state.
pub async fn tagged_instances(env: &TestEnv, cluster: &str) -> usize {
    let described = env
        .ec2()
        .describe_instances()
        .filters(cluster_filter(cluster))
        .send()
        .await
        .unwrap();
    described
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum()
}

/// The instances tagged for `cluster` that are pending or running.
pub async fn live_instances(env: &TestEnv, cluster: &str) -> Vec<String> {
    let described = env
        .ec2()
        .describe_instances()
        .filters(cluster_filter(cluster))
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect()
}

/// The first launch template tagged for `cluster`, read back from moto: its name and the data
/// of its first version.
pub async fn launch_template(env: &TestEnv, cluster: &str) -> (String, ResponseLaunchTemplateData) {
    let templates = env
        .ec2()
        .describe_launch_templates()
        .filters(cluster_filter(cluster))
        .send()
        .await
        .unwrap();
    let name = templates.launch_templates()[0]
        .launch_template_name()
        .unwrap()
        .to_owned();
    let versions = env
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(&name)
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap()
        .clone();
    (name, data)
}

/// The names of the roles in the IAM instance profile `profile`.
pub async fn instance_profile_roles(env: &TestEnv, profile: &str) -> Vec<String> {
    aws_sdk_iam::Client::new(&env.aws)
        .get_instance_profile()
        .instance_profile_name(profile)
        .send()
        .await
        .unwrap()
        .instance_profile
        .unwrap()
        .roles
        .into_iter()
        .map(|r| r.role_name)
        .collect()
}

/// How many batches the controller has planned since it started.
pub fn batches_planned(windlass: &Windlass) -> f64 {
    windlass
        .metric("windlass_scheduling_duration_seconds_count")
        .unwrap_or(0.0)
}

/// The notes of the Events with `reason` about the object named `name` in `namespace` (`None`
/// for a cluster-scoped object), oldest first.
pub async fn event_notes(
    env: &TestEnv,
    namespace: Option<&str>,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let events: Api<Event> = Api::all(env.client.clone());
    let mut matching: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            let regarding = e.regarding.as_ref();
            regarding.and_then(|r| r.name.as_deref()) == Some(name)
                && regarding.and_then(|r| r.namespace.as_deref()) == namespace
                && e.reason.as_deref() == Some(reason)
        })
        .collect();
    matching.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    matching.into_iter().filter_map(|e| e.note).collect()
}

/// One pod of 1 vCPU / 1 GiB that only `pool` can take.
pub async fn pod_for_pool(pods: &Api<Pod>, pod_name: &str, pool: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name},
        "spec": {
            "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
            "nodeSelector": {"windlass.dev/nodepool": pool},
            "containers": [{"name": "worker", "image": "worker", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

/// The pool's one NodeClaim once it is Initialized.
pub async fn initialized_claim(claims: &Api<NodeClaim>, pool: &str) -> NodeClaim {
    let selector = format!("windlass.dev/nodepool={pool}");
    wait_until(
        "the NodeClaim to be Initialized",
        Duration::from_secs(90),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().find(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Initialized" && c.status == "True")
                })
            })
        },
    )
    .await
}

/// `count` pods in the pool `name` that may not share a node (one NodeClaim each), each
/// 1 vCPU / 3 GiB: more than half of the smallest candidate type.
pub async fn create_apart_pods(pods: &Api<Pod>, name: &str, count: usize) {
    for index in 0..count {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("apart-{index}"), "labels": {"app": "apart"}},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": name},
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "apart"}}}
                ]}},
                "containers": [{"name": "apart", "image": "apart", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&kube::api::PostParams::default(), &pod)
            .await
            .unwrap();
    }
}

/// A namespace and an on-demand NodePool of their own, for a pod whose volume decides where
/// its node goes.
pub struct VolumePool {
    pub env: TestEnv,
    pub namespace: TestNamespace,
    /// The NodePool's and EC2NodeClass's name.
    pub name: String,
    classes: Api<EC2NodeClass>,
    pools: Api<NodePool>,
}

/// Windlass and the registrar running, and the pod with a volume that only the pool can take.
pub struct VolumePod {
    windlass: Windlass,
    _registrar: ChildProcess,
    pub pods: Api<Pod>,
    pub claims: Api<NodeClaim>,
    /// The first NodeClaim planned for the pool.
    pub planned: NodeClaim,
    selector: String,
}

impl VolumePool {
    pub async fn create(prefix: &str) -> Self {
        let env = TestEnv::connect().await;
        install_crds(&env.client).await;
        let namespace = TestNamespace::create(&env.client, prefix).await;
        let name = unique(prefix);
        let (classes, pools) = node_class_and_pool(
            &env,
            &name,
            json!([{"key": "windlass.dev/capacity-type", "operator": "In", "values": ["on-demand"]}]),
            json!({}),
        )
        .await;
        Self {
            env,
            namespace,
            name,
            classes,
            pools,
        }
    }

    /// The stack's zone with this letter (`a`, `b` or `c`).
    pub fn zone(&self, letter: char) -> String {
        format!("{}{letter}", self.env.aws.region().unwrap())
    }

    /// Starts Windlass and the registrar, creates the pod `pod` (1 vCPU / 1 GiB) with the
    /// claim `claim` as its volume, and waits for the pool's first NodeClaim.
    pub async fn launch_pod_with_claim(&self, pod: &str, claim: &str) -> VolumePod {
        let ns = self.namespace.name.as_str();
        let windlass = start_windlass(ns);
        windlass.catalog_read().await;
        let registrar = start_registrar(&windlass.cluster, 1);
        let pods: Api<Pod> = Api::namespaced(self.env.client.clone(), ns);
        let with_claim: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {
                "tolerations": [{"key": "windlass.dev/test", "operator": "Equal", "value": self.name, "effect": "NoSchedule"}],
                "nodeSelector": {"windlass.dev/nodepool": self.name},
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                "containers": [{"name": "worker", "image": "worker",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &with_claim)
            .await
            .unwrap();
        let claims: Api<NodeClaim> = Api::all(self.env.client.clone());
        let selector = format!("windlass.dev/nodepool={}", self.name);
        let planned = wait_until("a NodeClaim", Duration::from_secs(30), || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        })
        .await;
        VolumePod {
            windlass,
            _registrar: registrar,
            pods,
            claims,
            planned,
            selector,
        }
    }

    /// Deletes the NodePool, its class and the namespace.
    pub async fn delete(self) {
        delete_pool_and_class(&self.pools, &self.classes, &self.name).await;
        self.namespace.delete().await;
    }
}

impl VolumePod {
    /// Every NodeClaim of the pool.
    pub async fn pool_claims(&self) -> Vec<NodeClaim> {
        self.claims
            .list(&ListParams::default().labels(&self.selector))
            .await
            .unwrap()
            .items
    }

    /// Deletes the pod and the pool's NodeClaims, then stops Windlass and the registrar.
    pub async fn delete(self) {
        delete_pods(&self.pods).await;
        delete_claims(&self.claims, &self.selector).await;
        drop(self.windlass);
    }
}
