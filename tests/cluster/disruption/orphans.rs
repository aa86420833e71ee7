//! Garbage collection: an instance tagged for this install that no NodeClaim accounts for is
//! terminated after its grace; another install's instance is left alone. A launch template its
//! EC2NodeClass no longer launches from is deleted.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{InstanceType, ResourceType, Tag, TagSpecification};

use crate::provisioning::fixture::describe_instance;
use crate::support::{TestEnv, TestNamespace, install_crds, start_windlass, unique, wait_until};

async fn launch_tagged(env: &TestEnv, cluster: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&env.aws);
    let images = ec2.describe_images().send().await.unwrap();
    let image = images.images()[0].image_id().unwrap().to_owned();
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(
            Tag::builder()
                .key("windlass.dev/cluster")
                .value(cluster)
                .build(),
        )
        .tags(
            Tag::builder()
                .key("windlass.dev/nodeclaim")
                .value("ghost")
                .build(),
        )
        .build();
    let run = ec2
        .run_instances()
        .image_id(image)
        .instance_type(InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(tags)
        .send()
        .await
        .unwrap();
    run.instances()[0].instance_id().unwrap().to_owned()
}

async fn state(env: &TestEnv, id: &str) -> String {
    describe_instance(env, id)
        .await
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn an_instance_no_node_claim_accounts_for_is_terminated() {
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let namespace = TestNamespace::create(&env.client, "orphan").await;
    let windlass = start_windlass(&namespace.name);
    let orphan = launch_tagged(&env, &windlass.cluster).await;
    let elsewhere = launch_tagged(&env, &unique("another-install")).await;
    let launched = Instant::now();
    wait_until(
        "the orphan to be terminated",
        Duration::from_secs(90),
        || async {
            ["shutting-down", "terminated"]
                .contains(&state(&env, &orphan).await.as_str())
                .then_some(())
        },
    )
    .await;
    println!(
        "orphan {orphan} terminated {:.1}s after it was launched",
        launched.elapsed().as_secs_f64()
    );
    assert!(
        launched.elapsed() >= Duration::from_secs(30),
        "not before its 30 s grace: {:?}",
        launched.elapsed()
    );
    assert_eq!(
        state(&env, &elsewhere).await,
        "running",
        "another install's instance is not ours to collect"
    );
    aws_sdk_ec2::Client::new(&env.aws)
        .terminate_instances()
        .instance_ids(&elsewhere)
        .send()
        .await
        .unwrap();
    drop(windlass);
    namespace.delete().await;
}

/// The names of the launch templates made for the EC2NodeClass `class`.
async fn templates_of(env: &TestEnv, class: &str) -> Vec<String> {
    let listed = env
        .ec2()
        .describe_launch_templates()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:windlass.dev/ec2nodeclass")
                .values(class)
                .build(),
        )
        .send()
        .await
        .unwrap();
    listed
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_launch_template_its_class_changed_away_from_is_deleted() {
    let run = super::PoolRun::start("lt", serde_json::json!({})).await;
    let (env, ns, claims, name) = (&run.env, run.ns(), &run.claims, &run.name);
    super::worker_deployment(env, ns, name, 1).await;
    super::initialized_claims(claims, name, 1).await;
    let launched = templates_of(env, name).await;
    assert!(!launched.is_empty(), "the launch made its templates");

    // Other user data: the class launches from another template from now on.
    let started = Instant::now();
    run.classes
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                &serde_json::json!({"spec": {"userData": "#!/bin/sh\necho changed\n"}}),
            ),
        )
        .await
        .unwrap();
    wait_until(
        "the templates the class no longer uses to be deleted",
        Duration::from_secs(300),
        || async {
            let now = templates_of(env, name).await;
            (!launched.iter().any(|t| now.contains(t))).then_some(())
        },
    )
    .await;
    println!(
        "{} deleted {:.1}s after the class changed",
        launched.join(", "),
        started.elapsed().as_secs_f64()
    );
    run.finish().await;
}
