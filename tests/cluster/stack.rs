//! Proofs that the stack is real and that Windlass's API holds there: CRDs and examples apply,
//! invalid objects are rejected by the API server, Deployments and Jobs run on kwok nodes, an
//! unfitting pod stays Unschedulable, and an instance from CreateFleet becomes the node it runs on.

use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest, FleetType,
    InstanceType, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde_json::{Value, json};
use windlass::apis::labels::{CLUSTER_LABEL, NODEPOOL_LABEL};
use windlass::aws::provider_id;

use crate::support::{
    FIELD_MANAGER, TestEnv, TestNamespace, delete_node, install_crds, start_registrar, test_node,
    unique, wait_until,
};

const DISCOVERY_TAG: &str = "windlass.dev/discovery";

fn example(file: &str, kind: &str) -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(file),
    )
    .unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .find(|doc: &Value| doc["kind"] == kind)
        .unwrap_or_else(|| panic!("examples/{file} has no {kind}"))
}

/// An API handle for the object's kind, in `namespace` when the kind is namespaced. Cluster-scoped
/// objects get a unique name so parallel runs do not collide.
async fn api_for(client: &Client, object: &mut Value, namespace: &str) -> Api<DynamicObject> {
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap_or(("", "v1"));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await.unwrap();
    if capabilities.scope == Scope::Namespaced {
        object["metadata"]["namespace"] = json!(namespace);
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        object["metadata"]["name"] = json!(unique(object["metadata"]["name"].as_str().unwrap()));
        Api::all_with(client.clone(), &resource)
    }
}

async fn create(
    client: &Client,
    mut object: Value,
    namespace: &str,
) -> Result<DynamicObject, kube::Error> {
    let api = api_for(client, &mut object, namespace).await;
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
}

/// The API server's message for an object it refused as invalid.
fn rejection(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        other => panic!("expected the API server to reject the object, got {other:?}"),
    }
}

fn assert_rejected(result: Result<DynamicObject, kube::Error>, expected: &[&str]) {
    let message = rejection(result);
    for text in expected {
        assert!(
            message.contains(text),
            "rejection lacks {text:?}: {message}"
        );
    }
}

#[tokio::test]
async fn crds_and_examples_apply_and_invalid_objects_are_rejected_naming_the_field() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "api").await;

    let mut applied = 0;
    let mut applied_claims = Vec::new();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(&path).unwrap()) {
            let object: Value = serde::Deserialize::deserialize(doc).unwrap();
            let created = create(&env.client, unadoptable(object), &namespace.name)
                .await
                .unwrap_or_else(|e| panic!("{} did not apply: {e}", path.display()));
            if created
                .types
                .as_ref()
                .is_some_and(|t| t.kind == "NodeClaim")
            {
                applied_claims.push(created.metadata.name.clone().unwrap());
            }
            applied += 1;
        }
    }
    assert!(applied >= 9, "only {applied} example objects applied");

    type Mutation = fn(&mut Value);
    let cases: [(&str, &str, Mutation, &[&str]); 31] = [
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| {
                o["spec"]["minReplicaCount"] = json!(5);
                o["spec"]["maxReplicaCount"] = json!(2);
            },
            &[
                "spec.minReplicaCount",
                "minReplicaCount must not exceed maxReplicaCount",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["triggers"][0]["type"] = json!("kafka"),
            &["spec.triggers[0].type", "Unsupported value: \"kafka\""],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| {
                o["spec"]["triggers"][0]["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("queueURLFromEnv");
            },
            &[
                "spec.triggers[0]",
                "needs metadata.queueURL or metadata.queueURLFromEnv",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["triggers"][0]["metricType"] = json!("Utilization"),
            &[
                "spec.triggers[0].metricType",
                "metricType Utilization needs a resource metric",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| {
                let mut twin = o["spec"]["triggers"][0].clone();
                twin["name"] = json!("orders");
                o["spec"]["triggers"][0]["name"] = json!("orders");
                o["spec"]["triggers"].as_array_mut().unwrap().push(twin);
            },
            &["spec.triggers", "trigger names must be unique"],
        ),
        (
            "scaledjob-data-processor.yaml",
            "ScaledJob",
            |o| o["spec"]["triggers"][0]["metricType"] = json!("Value"),
            &[
                "spec.triggers",
                "its triggers' metricType can only be AverageValue",
            ],
        ),
        (
            "scaledjob-data-processor.yaml",
            "ScaledJob",
            |o| {
                let mut twin = o["spec"]["triggers"][0].clone();
                twin["name"] = json!("jobs");
                o["spec"]["triggers"][0]["name"] = json!("jobs");
                o["spec"]["triggers"].as_array_mut().unwrap().push(twin);
            },
            &["spec.triggers", "trigger names must be unique"],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["triggers"][0]["metadata"]["queueLength"] = json!("five"),
            &[
                "spec.triggers[0]",
                "metadata.queueLength must be a positive integer",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["idleReplicaCount"] = json!(0),
            &[
                "spec.idleReplicaCount",
                "idleReplicaCount must be less than minReplicaCount",
            ],
        ),
        (
            "scaledjob-data-processor.yaml",
            "ScaledJob",
            |o| o["spec"]["scalingStrategy"]["customScalingQueueLengthDeduction"] = json!(1),
            &[
                "spec.scalingStrategy",
                "customScaling fields apply only to strategy custom",
            ],
        ),
        (
            "scaledjob-data-processor.yaml",
            "ScaledJob",
            |o| {
                o["spec"]["scalingStrategy"] =
                    json!({"strategy": "custom", "customScalingRunningJobPercentage": "half"});
            },
            &[
                "spec.scalingStrategy.customScalingRunningJobPercentage",
                "should match",
            ],
        ),
        (
            "scaledjob-data-processor.yaml",
            "ScaledJob",
            |o| o["spec"]["pollingInterval"] = json!(0),
            &[
                "spec.pollingInterval",
                "should be greater than or equal to 1",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| {
                o["spec"]["fallback"] = json!({"failureThreshold": 3, "replicas": 2});
                o["spec"]["triggers"][0]["metricType"] = json!("Value");
            },
            &[
                "spec.fallback",
                "fallback requires every trigger to use metricType AverageValue",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["triggers"][0]["metadata"]["scaleOnInFlight"] = json!("yes"),
            &[
                "spec.triggers[0]",
                "metadata.scaleOnInFlight must be \"true\" or \"false\"",
            ],
        ),
        (
            "scaledobject-sqs.yaml",
            "ScaledObject",
            |o| o["spec"]["triggers"][0]["metadata"]["activationQueueLength"] = json!("-1"),
            &[
                "spec.triggers[0]",
                "metadata.activationQueueLength must be a non-negative integer",
            ],
        ),
        (
            "triggerauthentication.yaml",
            "TriggerAuthentication",
            |o| {
                let identity = o["spec"]["podIdentity"].as_object_mut().unwrap();
                identity.remove("roleArn");
                identity.insert("externalID".into(), json!("windlass"));
            },
            &["spec.podIdentity.externalID", "externalID needs roleArn"],
        ),
        (
            "triggerauthentication.yaml",
            "TriggerAuthentication",
            |o| o["spec"]["podIdentity"]["identityOwner"] = json!("workload"),
            &[
                "spec.podIdentity.roleArn",
                "roleArn cannot be combined with identityOwner workload",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| {
                o["spec"]["template"]["spec"]["requirements"].as_array_mut().unwrap()
                .push(json!({"key": "windlass.dev/instance-cpu", "operator": "Gt", "values": ["many"]}));
            },
            &[
                "spec.template.spec.requirements[3].values",
                "operators Gt and Lt take exactly one non-negative integer value",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| {
                o["spec"]["template"]["spec"]["requirements"]
                    .as_array_mut()
                    .unwrap()
                    .push(
                        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}),
                    );
            },
            &[
                "spec.template.spec.requirements[3].key",
                "requirement key is set by Windlass or the kubelet",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| {
                o["spec"]["template"]["spec"]["requirements"]
                    .as_array_mut()
                    .unwrap()
                    .push(
                        json!({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["a"]}),
                    );
            },
            &[
                "spec.template.spec.requirements[3].key",
                "requirement key is set by Windlass or the kubelet",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| {
                o["spec"]["template"]["spec"]["requirements"].as_array_mut().unwrap().push(
                    json!({"key": "karpenter.k8s.aws/instance-cpu-manufacturer", "operator": "In", "values": ["intel"]}),
                );
            },
            &[
                "spec.template.spec.requirements[3].key",
                "Windlass sets these karpenter.k8s.aws labels only",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| o["spec"]["limits"]["hugepages-2Mi"] = json!("1Gi"),
            &[
                "spec.limits",
                "Windlass counts and limits only cpu, memory, pods, ephemeral-storage, nvidia.com/gpu",
            ],
        ),
        (
            "nodepool.yaml",
            "NodePool",
            |o| {
                o["spec"]["disruption"]["budgets"] = json!([{"nodes": "10%", "schedule": "@daily"}])
            },
            &[
                "spec.disruption.budgets[0].schedule",
                "schedule and duration go together",
            ],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| o["spec"]["instanceProfile"] = json!("WindlassNodeProfile"),
            &[
                "spec.role",
                "exactly one of role or instanceProfile must be set",
            ],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| {
                o["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("amiSelectorTerms");
            },
            &["spec.amiSelectorTerms", "Required value"],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| o["spec"]["amiSelectorTerms"] = json!([{"alias": "windows2022@latest"}]),
            &["spec.amiSelectorTerms[0].alias", "should match"],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| o["spec"]["amiFamily"] = json!("Bottlerocket"),
            &[
                "spec.amiFamily",
                "amiFamily must be the alias's family, or Custom, when both are set",
            ],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| {
                o["spec"]["amiSelectorTerms"] = json!([{"alias": "bottlerocket@latest"}]);
                o["spec"]["kubelet"] = json!({"podsPerCore": 10});
            },
            &[
                "spec.kubelet.podsPerCore",
                "Bottlerocket has no pods-per-core setting",
            ],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| {
                o["spec"]["amiFamily"] = json!("Custom");
                o["spec"]["instanceStorePolicy"] = json!("RAID0");
            },
            &[
                "spec.instanceStorePolicy",
                "instanceStorePolicy is written into the family's bootstrap",
            ],
        ),
        (
            "ec2nodeclass.yaml",
            "EC2NodeClass",
            |o| {
                o["spec"]["kubelet"] = json!({"evictionSoft": {"memory.available": "10%"}});
            },
            &[
                "spec.kubelet.evictionSoft",
                "each evictionSoft signal needs an evictionSoftGracePeriod",
            ],
        ),
        (
            "jobschedule.yaml",
            "JobSchedule",
            |o| o["spec"]["schedule"] = json!("every minute"),
            &["spec.schedule"],
        ),
    ];
    for (file, kind, mutate, expected) in cases {
        let mut object = example(file, kind);
        mutate(&mut object);
        assert_rejected(create(&env.client, object, &namespace.name).await, expected);
    }
    // Any decimal KEDA would read as a float is a running-job percentage, above 1 too.
    for (name, percentage) in [("half", ".5"), ("more", "1.5"), ("all", "1")] {
        let mut object = example("scaledjob-data-processor.yaml", "ScaledJob");
        object["metadata"]["name"] = json!(name);
        object["spec"]["scalingStrategy"] =
            json!({"strategy": "custom", "customScalingRunningJobPercentage": percentage});
        create(&env.client, object, &namespace.name)
            .await
            .unwrap_or_else(|e| panic!("percentage {percentage:?} was refused: {e}"));
    }

    let claim = create(
        &env.client,
        unadoptable(example("nodeclaim.yaml", "NodeClaim")),
        &namespace.name,
    )
    .await
    .unwrap();
    let mut changed = example("nodeclaim.yaml", "NodeClaim");
    let claims = api_for(&env.client, &mut changed, &namespace.name).await;
    let name = claim.metadata.name.clone().unwrap();
    let update = claims
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "windlass.dev/v1alpha1", "kind": "NodeClaim",
                "spec": {"resources": {"requests": {"cpu": "2"}}}
            })),
        )
        .await;
    assert_rejected(update, &["NodeClaim spec is immutable"]);
    for name in applied_claims.iter().chain([&name]) {
        claims.delete(name, &DeleteParams::default()).await.unwrap();
    }
    namespace.delete().await;
}

/// A NodeClaim labelled for an install that never runs, so no install of a concurrent test
/// adopts and launches it; other objects unchanged.
fn unadoptable(mut object: Value) -> Value {
    if object["kind"] == "NodeClaim" {
        object["metadata"]["labels"]["windlass.dev/cluster"] = json!("nobody");
    }
    object
}

#[tokio::test]
async fn a_negative_max_replica_count_is_reported_without_blaming_min_replica_count() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "api-max").await;
    for (file, kind) in [
        ("scaledobject-sqs.yaml", "ScaledObject"),
        ("scaledjob-data-processor.yaml", "ScaledJob"),
    ] {
        let mut object = example(file, kind);
        let spec = object["spec"].as_object_mut().unwrap();
        spec.remove("minReplicaCount");
        spec.insert("maxReplicaCount".into(), json!(-1));
        let message = rejection(create(&env.client, object, &namespace.name).await);
        assert!(
            message.contains("spec.maxReplicaCount") && !message.contains("minReplicaCount"),
            "{kind}: {message}"
        );
    }
    namespace.delete().await;
}

#[tokio::test]
async fn job_schedule_cron_fields_are_range_checked_by_the_api_server() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "api-cron").await;
    let with_schedule = |schedule: &str| {
        let mut object = example("jobschedule.yaml", "JobSchedule");
        object["metadata"]["name"] = json!(unique("cron"));
        object["spec"]["schedule"] = json!(schedule);
        object
    };
    for (schedule, expected) in [
        ("61 * * * *", "minute must be *, or 0-59"),
        ("0 0 32 * *", "day-of-month must be *, or 1-31"),
        ("0 24 * * *", "hour must be *, or 0-23"),
        ("0 0 * 13 *", "month must be *, or 1-12"),
        ("0 0 * * 8", "day-of-week must be *, or 0-7"),
        ("30-10 * * * *", "a range must run from low to high"),
        ("0 0 * *", "must be five fields"),
        ("@midnight", "one of @yearly"),
    ] {
        let message =
            rejection(create(&env.client, with_schedule(schedule), &namespace.name).await);
        assert!(
            message.contains("spec.schedule") && message.contains(expected),
            "{schedule:?}: {message}"
        );
    }
    for schedule in [
        "*/5 9-17 * JAN-MAR MON-FRI",
        "0 0 L * ?",
        "30 4 1,15W * 5#2",
        "@hourly",
    ] {
        create(&env.client, with_schedule(schedule), &namespace.name)
            .await
            .unwrap_or_else(|e| panic!("{schedule:?} was refused: {e}"));
    }
    namespace.delete().await;
}

fn pod_running_on(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test]
async fn deployment_of_three_replicas_runs_three_pods_on_a_kwok_node() {
    let env = TestEnv::connect().await;
    let namespace = TestNamespace::create(&env.client, "deploy").await;
    let node = test_node(&env.client, "kwok-deploy").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "nodeSelector": {"windlass.dev/test-node": node},
                    "containers": [{"name": "web", "image": "registry.example.com/web:1", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]
                }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(env.client.clone(), &namespace.name)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &namespace.name);
    wait_until(
        "3 Running pods of the Deployment on the kwok node",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (list
                .items
                .iter()
                .filter(|p| pod_running_on(p, &node))
                .count()
                == 3)
                .then_some(())
        },
    )
    .await;
    namespace.delete().await;
    delete_node(&env.client, &node).await;
}

fn job(name: &str, node: &str, outcome: Option<&str>) -> Job {
    let annotations = outcome.map_or(json!({}), |o| json!({"windlass.dev/test-outcome": o}));
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"windlass.dev/test-node": node},
                    "containers": [{"name": "work", "image": "registry.example.com/worker:1"}]
                }
            }
        }
    }))
    .unwrap()
}

fn job_condition(job: &Job, condition: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == condition && c.status == "True")
        })
}

#[tokio::test]
async fn job_pod_annotated_to_fail_is_retried_backoff_limit_times_and_fails() {
    let env = TestEnv::connect().await;
    let namespace = TestNamespace::create(&env.client, "jobs").await;
    let node = test_node(&env.client, "kwok-jobs").await;
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &namespace.name);
    jobs.create(&PostParams::default(), &job("fails", &node, Some("fail")))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("succeeds", &node, None))
        .await
        .unwrap();

    let failed = wait_until(
        "Job fails to be Failed",
        Duration::from_secs(150),
        || async {
            jobs.get("fails")
                .await
                .ok()
                .filter(|j| job_condition(j, "Failed"))
        },
    )
    .await;
    let status = failed.status.unwrap();
    assert_eq!(
        status.failed,
        Some(3),
        "backoffLimit 2 means one try and two retries"
    );
    assert_eq!(status.succeeded.unwrap_or(0), 0);
    let succeeded = wait_until(
        "Job succeeds to Complete",
        Duration::from_secs(60),
        || async {
            jobs.get("succeeds")
                .await
                .ok()
                .filter(|j| job_condition(j, "Complete"))
        },
    )
    .await;
    assert_eq!(succeeded.status.unwrap().succeeded, Some(1));
    namespace.delete().await;
    delete_node(&env.client, &node).await;
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

#[tokio::test]
async fn unfitting_pod_stays_unschedulable_until_a_create_fleet_instance_registers_and_runs_it() {
    let env = TestEnv::connect().await;
    let namespace = TestNamespace::create(&env.client, "fleet").await;
    let cluster = unique("fleet-cluster");
    let pool = unique("pool");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &namespace.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {
            "nodeSelector": {"windlass.dev/nodepool": pool},
            "containers": [{"name": "work", "image": "registry.example.com/worker:1",
                            "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until(
        "the pod to be marked PodScheduled=False, reason Unschedulable",
        Duration::from_secs(30),
        || async {
            let pod = pods.get("worker").await.ok()?;
            let conditions = pod.status?.conditions?;
            conditions
                .iter()
                .any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
                .then_some(())
        },
    )
    .await;

    let ec2 = env.ec2();
    // The fixture (hack/stack/aws_fixture.py) tags its subnets with the stack's cluster name.
    let discovery =
        std::env::var("WINDLASS_CLUSTER_NAME").unwrap_or_else(|_| "windlass-local".into());
    let subnets = ec2
        .describe_subnets()
        .filters(
            Filter::builder()
                .name(format!("tag:{DISCOVERY_TAG}"))
                .values(&discovery)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let subnet = subnets.subnets()[0].clone();
    let images = ec2
        .describe_images()
        .owners("self")
        .filters(
            Filter::builder()
                .name("name")
                .values("amazon-eks-node-al2023-x86_64-standard-*")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let image = images.images()[0].image_id().unwrap().to_owned();
    let template = unique("windlass-test");
    // What the kubelet joins with comes from the user data alone, as on EKS: a NodeConfig of
    // the kind nodeadm reads, written here by hand.
    let access = crate::release::cluster_access();
    let node_config = format!(
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: application/node.eks.aws\n\n\
         apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: {cluster}\n    \
         apiServerEndpoint: {}\n    certificateAuthority: {}\n    cidr: {}\n  kubelet:\n    flags:\n    \
         - --node-labels={NODEPOOL_LABEL}={pool},hand-written=yes\n--b--\n",
        access.endpoint, access.ca_bundle, access.service_cidr
    );
    ec2.create_launch_template()
        .launch_template_name(&template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&image)
                .user_data(aws_smithy_types::base64::encode(&node_config))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let fleet = ec2
        .create_fleet()
        .r#type(FleetType::Instant)
        .client_token(unique("token"))
        .target_capacity_specification(
            TargetCapacitySpecificationRequest::builder()
                .total_target_capacity(1)
                .default_target_capacity_type(DefaultTargetCapacityType::OnDemand)
                .build(),
        )
        .launch_template_configs(
            FleetLaunchTemplateConfigRequest::builder()
                .launch_template_specification(
                    FleetLaunchTemplateSpecificationRequest::builder()
                        .launch_template_name(&template)
                        .version("$Latest")
                        .build(),
                )
                .overrides(
                    FleetLaunchTemplateOverridesRequest::builder()
                        .instance_type(InstanceType::M5Large)
                        .subnet_id(subnet.subnet_id().unwrap())
                        .build(),
                )
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(tag(CLUSTER_LABEL, &cluster))
                .tags(tag(NODEPOOL_LABEL, &pool))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance_id = fleet.instances()[0].instance_ids()[0].clone();
    let zone = subnet.availability_zone().unwrap();

    let _registrar = start_registrar(&cluster, 1);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let expected_provider_id = provider_id(zone, &instance_id);
    let node = wait_until(
        "the registrar's Node for the instance to be Ready",
        Duration::from_secs(60),
        || async {
            let list = nodes
                .list(&ListParams::default().labels(&format!("windlass.dev/nodepool={pool}")))
                .await
                .ok()?;
            list.items.into_iter().find(|n| {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                ready
                    && n.spec.as_ref().and_then(|s| s.provider_id.as_deref())
                        == Some(expected_provider_id.as_str())
            })
        },
    )
    .await;
    let node_name = node.metadata.name.clone().unwrap();
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["node.kubernetes.io/instance-type"], "m5.large");
    assert_eq!(labels["topology.kubernetes.io/zone"], zone);
    assert_eq!(
        labels["hand-written"], "yes",
        "the label came from the user data"
    );
    wait_until(
        "the pending pod to run on the new node",
        Duration::from_secs(60),
        || async {
            pods.get("worker")
                .await
                .ok()
                .filter(|p| pod_running_on(p, &node_name))
        },
    )
    .await;

    ec2.terminate_instances()
        .instance_ids(&instance_id)
        .send()
        .await
        .unwrap();
    wait_until(
        "the registrar to delete the terminated instance's Node",
        Duration::from_secs(30),
        || async {
            nodes
                .get_opt(&node_name)
                .await
                .ok()
                .and_then(|n| n.is_none().then_some(()))
        },
    )
    .await;
    ec2.delete_launch_template()
        .launch_template_name(&template)
        .send()
        .await
        .unwrap();
    namespace.delete().await;
}
