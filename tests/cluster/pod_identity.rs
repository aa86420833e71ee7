//! EKS Pod Identity against the stack's stand-in for EKS Auth and the Pod Identity Agent
//! (hack/stack/eks_auth.py), with moto enforcing IAM for the roles tagged
//! `windlass-test/enforce-iam` (hack/stack/moto_server.py): a workload's own identity
//! (`provider: aws-eks-pod-identity`, `identityOwner: workload`) and the controller's own,
//! read from the agent endpoint by the SDK's default chain.

use std::time::Duration;

use aws_sdk_iam::types::Tag;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use windlass::apis::scaled_object::ScaledObject;

use crate::release::RELEASE_NAMESPACE;
use crate::scaled_object::{
    clean_up, deployment, replicas, scaled_object, trigger_authentication, wait_for_condition,
    wait_for_replicas, warning_event,
};
use crate::support::{
    TestEnv, TestNamespace, http_get, install_crds, skipped_without_moto, start_windlass_as,
    start_windlass_with_own_env, test_node, unique,
};

const AUDIENCE: &str = "pods.eks.amazonaws.com";
/// What these tests need that only the stack's moto has: a role's credentials are told apart
/// from the controller's by a queue the role's policy refuses.
const IAM_ENFORCEMENT: &str = "IAM enforcement for tagged roles (hack/stack/moto_server.py); LocalStack's SQS checks no policy";

/// Where the stack serves EKS Auth, the agent and the association API.
fn eks_auth_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_EKS_AUTH")
        .expect("AWS_ENDPOINT_URL_EKS_AUTH is not set: the EKS Pod Identity tests need the local stack's EKS Auth stand-in")
}

fn eks_auth_port() -> u16 {
    eks_auth_endpoint()
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse().ok())
        .expect("AWS_ENDPOINT_URL_EKS_AUTH ends in a port")
}

/// The EKS API for Pod Identity associations: the stand-in's, not moto's.
fn eks(env: &TestEnv) -> aws_sdk_eks::Client {
    let config = aws_sdk_eks::config::Builder::from(&env.aws)
        .endpoint_url(eks_auth_endpoint())
        .build();
    aws_sdk_eks::Client::from_conf(config)
}

async fn associate(env: &TestEnv, cluster: &str, namespace: &str, account: &str, role: &str) {
    eks(env)
        .create_pod_identity_association()
        .cluster_name(cluster)
        .namespace(namespace)
        .service_account(account)
        .role_arn(role)
        .send()
        .await
        .unwrap();
}

async fn queue_arn(env: &TestEnv, queue_url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName::QueueArn;
    env.sqs()
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueArn]
        .clone()
}

/// A role moto checks every request of (tag `windlass-test/enforce-iam`), allowed to read only
/// `queue_url`'s attributes, and with `also` statements; its ARN.
pub(crate) async fn enforced_role(
    env: &TestEnv,
    prefix: &str,
    queue_url: &str,
    also: &[Value],
) -> String {
    let iam = aws_sdk_iam::Client::new(&env.aws);
    let name = unique(prefix);
    // Documents what EKS Pod Identity needs; neither moto nor the stand-in evaluates it.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": AUDIENCE}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]});
    let role = iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(trust.to_string())
        .tags(
            Tag::builder()
                .key("windlass-test/enforce-iam")
                .value("true")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut statements = vec![json!({"Effect": "Allow",
        "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
        "Resource": queue_arn(env, queue_url).await})];
    statements.extend(also.iter().cloned());
    iam.put_role_policy()
        .role_name(&name)
        .policy_name("read-one-queue")
        .policy_document(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
        .send()
        .await
        .unwrap();
    role.role().unwrap().arn().to_owned()
}

/// What the stand-in handed out: `(via, cluster, namespace, service account, role)`.
fn issued() -> Vec<(String, String, String, String, String)> {
    let (status, body) =
        http_get(eks_auth_port(), "/windlass-test/issued").expect("the EKS Auth stand-in answers");
    assert_eq!(status, 200, "{body}");
    let records: Vec<Value> = serde_json::from_str(&body).unwrap();
    records
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap().to_owned();
            (
                field("via"),
                field("cluster"),
                field("namespace"),
                field("serviceAccount"),
                field("roleArn"),
            )
        })
        .collect()
}

fn record(via: &str, cluster: &str, namespace: &str, account: &str, role: &str) -> [String; 5] {
    [via, cluster, namespace, account, role].map(str::to_owned)
}

fn has_record(records: &[(String, String, String, String, String)], wanted: [String; 5]) -> bool {
    let [via, cluster, namespace, account, role] = wanted;
    records.contains(&(via, cluster, namespace, account, role))
}

async fn service_account(client: &Client, namespace: &str, name: &str) {
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

/// A Deployment with no replicas whose pods run as `account`.
async fn deployment_as(client: &Client, namespace: &str, name: &str, node: &str, account: &str) {
    deployment(client, namespace, name, node, 0).await;
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(
                json!({"spec": {"template": {"spec": {"serviceAccountName": account}}}}),
            ),
        )
        .await
        .unwrap();
}

/// A ScaledObject on `name` reading `queue_url`, with `authentication` if given.
async fn scaled_by_queue(
    objects: &Api<ScaledObject>,
    name: &str,
    queue_url: &str,
    authentication: Option<&str>,
) {
    let mut trigger = json!({"type": "aws-sqs-queue", "name": "queue",
        "metadata": {"queueURL": queue_url, "queueLength": "2"}});
    if let Some(authentication) = authentication {
        trigger["authenticationRef"] = json!({"name": authentication});
    }
    objects
        .create(
            &PostParams::default(),
            &scaled_object(
                name,
                name,
                queue_url,
                json!({"spec": {"triggers": [trigger]}}),
            ),
        )
        .await
        .unwrap();
}

/// Ready=False from a poll that moto refused for `role`'s policy, so signed with that role's
/// credentials; the replicas stay at 0.
async fn refused_by_iam(
    env: &TestEnv,
    objects: &Api<ScaledObject>,
    ns: &str,
    name: &str,
    role: &str,
) {
    let role_name = role.rsplit('/').next().unwrap();
    let (_, reason, message) = wait_for_condition(objects, name, "Ready", "False").await;
    assert_eq!(reason, "TriggerError", "{message}");
    assert!(
        message.contains(&format!(
            "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/{role_name}/"
        )),
        "{name}: not refused by IAM: {message}"
    );
    assert_eq!(replicas(&env.client, ns, name).await, Some(0));
}

/// Two workloads in two namespaces, each ServiceAccount associated with its own role that may
/// read only its own queue: each scales from its queue with its role's credentials, and the
/// same ServiceAccount's trigger on the other queue is refused by IAM, so the credentials were
/// that role's and not the controller's. A ServiceAccount whose only association is in
/// another cluster is Ready=False naming it and the cluster, with a Warning Event.
#[tokio::test]
async fn each_workload_reads_its_queue_with_its_own_pod_identity_role() {
    if skipped_without_moto(IAM_ENFORCEMENT) {
        return;
    }
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    let team_a = TestNamespace::create(&env.client, "pi-team-a").await;
    let team_b = TestNamespace::create(&env.client, "pi-team-b").await;
    let (ns_a, ns_b) = (team_a.name.clone(), team_b.name.clone());
    let node = test_node(&env.client, "kwok-pod-identity").await;
    let (queue_a, queue_b) = (env.queue("pi-a").await, env.queue("pi-b").await);
    env.send_messages(&queue_a, 4).await;
    env.send_messages(&queue_b, 4).await;
    let role_a = enforced_role(&env, "pi-reader-a", &queue_a, &[]).await;
    let role_b = enforced_role(&env, "pi-reader-b", &queue_b, &[]).await;
    // One install per namespace (an install watches one): each is its own cluster.
    let (cluster_a, cluster_b) = (unique("cluster"), unique("cluster"));
    associate(&env, &cluster_a, &ns_a, "reader", &role_a).await;
    associate(&env, &cluster_b, &ns_b, "reader", &role_b).await;
    associate(&env, &cluster_a, &ns_b, "elsewhere", &role_b).await;
    let listed = eks(&env)
        .list_pod_identity_associations()
        .cluster_name(&cluster_a)
        .namespace(&ns_b)
        .send()
        .await
        .unwrap();
    let listed: Vec<_> = listed
        .associations()
        .iter()
        .map(|a| a.service_account().unwrap_or_default())
        .collect();
    assert_eq!(listed, ["elsewhere"]);

    let pod_identity =
        json!({"podIdentity": {"provider": "aws-eks-pod-identity", "identityOwner": "workload"}});
    for (ns, accounts) in [
        (&ns_a, &["reader"][..]),
        (&ns_b, &["reader", "elsewhere"][..]),
    ] {
        for account in accounts {
            service_account(&env.client, ns, account).await;
        }
        trigger_authentication(&env.client, ns, "pod-identity", pod_identity.clone()).await;
    }
    let objects_a: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns_a);
    let objects_b: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns_b);
    for (objects, ns, name, account, queue) in [
        (&objects_a, &ns_a, "own", "reader", &queue_a),
        (&objects_a, &ns_a, "other", "reader", &queue_b),
        (&objects_b, &ns_b, "own", "reader", &queue_b),
        (&objects_b, &ns_b, "unassociated", "elsewhere", &queue_b),
    ] {
        deployment_as(&env.client, ns, name, &node, account).await;
        scaled_by_queue(objects, name, queue, Some("pod-identity")).await;
    }
    let _windlass_a = start_windlass_as(&ns_a, "windlass", &cluster_a);
    let _windlass_b = start_windlass_as(&ns_b, "windlass", &cluster_b);

    for (objects, ns) in [(&objects_a, &ns_a), (&objects_b, &ns_b)] {
        wait_for_replicas(&env.client, ns, "own", 2, Duration::from_secs(30)).await;
        wait_for_condition(objects, "own", "Ready", "True").await;
    }
    refused_by_iam(&env, &objects_a, &ns_a, "other", &role_a).await;
    let (_, reason, message) =
        wait_for_condition(&objects_b, "unassociated", "Ready", "False").await;
    assert_eq!(reason, "AuthenticationError");
    let expected = format!(
        "triggers[0].authenticationRef: ServiceAccount {ns_b}/elsewhere has no EKS Pod Identity association in cluster {cluster_b} (identityOwner workload)"
    );
    assert_eq!(message, expected);
    warning_event(&env.client, &ns_b, "unassociated", &expected).await;
    assert_eq!(replicas(&env.client, &ns_b, "unassociated").await, Some(0));

    let records = issued();
    let via = "eks-auth";
    assert!(has_record(
        &records,
        record(via, &cluster_a, &ns_a, "reader", &role_a)
    ));
    assert!(has_record(
        &records,
        record(via, &cluster_b, &ns_b, "reader", &role_b)
    ));
    assert!(
        !records.iter().any(|r| r.2 == ns_b && r.3 == "elsewhere"),
        "no credentials for a ServiceAccount without an association in the asking cluster"
    );
    // The node goes with the first; deleting it again is a no-op.
    clean_up(&env, team_b, &objects_b, &node).await;
    clean_up(&env, team_a, &objects_a, &node).await;
}

/// The controller's own EKS Pod Identity: started with the agent's
/// AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (a token of
/// its ServiceAccount, audience pods.eks.amazonaws.com) and no static keys, it scales from the
/// queue its associated role may read. The agent handed it that role's credentials, and a
/// queue the role may not read is refused by IAM, so its SQS calls were signed with them.
#[tokio::test]
async fn the_controllers_own_pod_identity_comes_from_the_agent_endpoint() {
    if skipped_without_moto(IAM_ENFORCEMENT) {
        return;
    }
    let env = TestEnv::connect().await;
    install_crds(&env.client).await;
    // The release's ServiceAccount is the controller's, whose token the agent is given.
    crate::release::suite_release();
    let namespace = TestNamespace::create(&env.client, "pi-agent").await;
    let ns = namespace.name.clone();
    let node = test_node(&env.client, "kwok-pi-agent").await;
    let (granted, denied) = (env.queue("pi-granted").await, env.queue("pi-denied").await);
    env.send_messages(&granted, 4).await;
    env.send_messages(&denied, 4).await;
    // Everything but SQS, so that only the queue permissions decide.
    let everything_else = json!({"Effect": "Allow", "NotAction": "sqs:*", "Resource": "*"});
    let role = enforced_role(&env, "pi-controller", &granted, &[everything_else]).await;
    let cluster = unique("cluster");
    let account = crate::release::RELEASE;
    associate(&env, &cluster, RELEASE_NAMESPACE, account, &role).await;

    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![AUDIENCE.to_owned()]),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(env.client.clone(), RELEASE_NAMESPACE)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap();
    let token_file = std::env::temp_dir().join(format!("{}.token", unique("pi-agent")));
    std::fs::write(&token_file, token).unwrap();

    let objects: Api<ScaledObject> = Api::namespaced(env.client.clone(), &ns);
    for (name, queue) in [("granted", &granted), ("denied", &denied)] {
        deployment(&env.client, &ns, name, &node, 0).await;
        scaled_by_queue(&objects, name, queue, None).await;
    }
    let agent = format!("{}/agent/{cluster}/v1/credentials", eks_auth_endpoint());
    let _windlass = start_windlass_with_own_env(
        &ns,
        &cluster,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.as_str()),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ],
    );

    wait_for_replicas(&env.client, &ns, "granted", 2, Duration::from_secs(30)).await;
    refused_by_iam(&env, &objects, &ns, "denied", &role).await;
    let records = issued();
    assert!(
        has_record(
            &records,
            record("agent", &cluster, RELEASE_NAMESPACE, account, &role)
        ),
        "the agent stand-in handed the controller its role's credentials: {records:?}"
    );
    clean_up(&env, namespace, &objects, &node).await;
    std::fs::remove_file(token_file).unwrap();
}
