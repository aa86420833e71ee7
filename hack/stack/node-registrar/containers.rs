//! Plays the container runtime for chosen images, so a worker really runs on the local stack:
//! kwok only moves pods through their phases, which leaves every SQS message unconsumed. A pod
//! on a Node this registrar registered, whose container image is one of `--run-image`'s and
//! which carries `windlass.dev/test-outcome: run` (which holds it Running under kwok's stages),
//! gets that image's local binary run once with the container's literal env. The exit code
//! ends the pod through kwok: 0 takes the annotation off (Succeeded), anything else sets it to
//! `fail` (Failed with exit code 1), so a Job's backoffLimit retries it as on a real kubelet.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

/// The annotation kwok's stages (hack/stack/kwok-stages.yaml) read a Job pod's outcome from.
pub const OUTCOME_ANNOTATION: &str = "windlass.dev/test-outcome";
/// Its value for a pod whose container the registrar runs.
pub const RUN_LOCALLY: &str = "run";

/// `IMAGE=PATH`: pods of image IMAGE (any tag or digest) run the binary at PATH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    pub image: String,
    pub binary: PathBuf,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--run-image {0:?} is not IMAGE=PATH")]
pub struct LocalImageError(String);

impl std::str::FromStr for LocalImage {
    type Err = LocalImageError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('=') {
            Some((image, binary)) if !image.is_empty() && !binary.is_empty() => Ok(Self {
                image: image.to_owned(),
                binary: binary.into(),
            }),
            _ => Err(LocalImageError(text.to_owned())),
        }
    }
}

/// One run to start: the binary and the container's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub binary: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// The image without its tag or digest: `registry:5000/team/app:1.0` is `registry:5000/team/app`.
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => image,
    }
}

/// What to run for `pod`, if it is one of ours: Running on one of `nodes`, held for a local
/// run, with a container of one of `images`.
pub fn run_for(pod: &Pod, nodes: &HashSet<String>, images: &[LocalImage]) -> Option<Run> {
    let spec = pod.spec.as_ref()?;
    let on_our_node = spec.node_name.as_ref().is_some_and(|n| nodes.contains(n));
    let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
    let held = pod
        .annotations()
        .get(OUTCOME_ANNOTATION)
        .map(String::as_str)
        == Some(RUN_LOCALLY);
    if !(on_our_node && running && held && pod.metadata.deletion_timestamp.is_none()) {
        return None;
    }
    spec.containers.iter().find_map(|container| {
        let repository = repository(container.image.as_deref()?);
        let local = images.iter().find(|i| i.image == repository)?;
        let env = container
            .env
            .iter()
            .flatten()
            .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
            .collect();
        Some(Run {
            binary: local.binary.clone(),
            env,
        })
    })
}

/// The annotation that ends the pod through kwok, by the run's success.
pub fn outcome_patch(succeeded: bool) -> serde_json::Value {
    let outcome = if succeeded { None } else { Some("fail") };
    json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: outcome}}})
}

/// Starts the runs for pods not started before; `started` holds the uids of pods still
/// around that were.
pub async fn start_runs(
    pods: &Api<Pod>,
    nodes: &HashSet<String>,
    images: &[LocalImage],
    started: &mut HashSet<String>,
) -> Result<(), kube::Error> {
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await?;
    started.retain(|uid| {
        running
            .items
            .iter()
            .any(|p| p.uid().as_deref() == Some(uid))
    });
    for pod in running.items {
        let (Some(run), Some(uid), Some(namespace)) =
            (run_for(&pod, nodes, images), pod.uid(), pod.namespace())
        else {
            continue;
        };
        if !started.insert(uid) {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(pods.clone().into_client(), &namespace);
        tokio::spawn(run_pod(pods, pod.name_any(), run));
    }
    Ok(())
}

/// Runs the binary to its end, then ends the pod by its exit code.
async fn run_pod(pods: Api<Pod>, name: String, run: Run) {
    let binary = run.binary.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&run.binary)
            .envs(&run.env)
            .output()
    })
    .await;
    let succeeded = match output {
        Ok(Ok(output)) => {
            for line in String::from_utf8_lossy(&output.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&output.stderr).lines())
            {
                info!(pod = %name, "{line}");
            }
            info!(pod = %name, binary = %binary.display(), status = %output.status, "container exited");
            output.status.success()
        }
        Ok(Err(error)) => {
            warn!(pod = %name, binary = %binary.display(), %error, "cannot run the container's binary");
            false
        }
        Err(error) => {
            warn!(pod = %name, %error, "the container's run panicked");
            false
        }
    };
    if let Err(error) = pods
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(outcome_patch(succeeded)),
        )
        .await
    {
        warn!(pod = %name, %error, "cannot end the pod");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> Vec<LocalImage> {
        vec![
            "registry.example.com/data-processor=/bin/data-processor"
                .parse()
                .unwrap(),
        ]
    }

    fn pod(node: &str, phase: &str, outcome: Option<&str>, image: &str) -> Pod {
        let annotations = outcome.map_or(json!({}), |o| json!({OUTCOME_ANNOTATION: o}));
        serde_json::from_value(json!({
            "metadata": {"name": "job-1-abcde", "annotations": annotations},
            "spec": {"nodeName": node, "containers": [{"name": "worker", "image": image, "env": [
                {"name": "QUEUE_URL", "value": "http://localhost:5000/q"},
                {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    fn ours() -> HashSet<String> {
        HashSet::from(["ip-10-0-0-1.ec2.internal".to_owned()])
    }

    #[test]
    fn a_held_running_pod_of_a_local_image_on_our_node_runs_with_its_literal_env() {
        let pod = pod(
            "ip-10-0-0-1.ec2.internal",
            "Running",
            Some("run"),
            "registry.example.com/data-processor:1.0.0",
        );
        let run = run_for(&pod, &ours(), &images()).unwrap();
        assert_eq!(run.binary, PathBuf::from("/bin/data-processor"));
        assert_eq!(
            run.env,
            BTreeMap::from([("QUEUE_URL".into(), "http://localhost:5000/q".into())])
        );
    }

    #[test]
    fn other_nodes_phases_outcomes_and_images_are_left_to_kwok() {
        let image = "registry.example.com/data-processor:1";
        for (node, phase, outcome, image) in [
            ("someone-elses-node", "Running", Some("run"), image),
            ("ip-10-0-0-1.ec2.internal", "Pending", Some("run"), image),
            ("ip-10-0-0-1.ec2.internal", "Running", None, image),
            ("ip-10-0-0-1.ec2.internal", "Running", Some("fail"), image),
            (
                "ip-10-0-0-1.ec2.internal",
                "Running",
                Some("run"),
                "registry.example.com/order-processor:1",
            ),
        ] {
            let pod = pod(node, phase, outcome, image);
            assert_eq!(
                run_for(&pod, &ours(), &images()),
                None,
                "{node} {phase} {outcome:?} {image}"
            );
        }
    }

    #[test]
    fn the_repository_drops_tag_and_digest_but_keeps_a_registry_port() {
        assert_eq!(
            repository("registry:5000/team/app:1.0"),
            "registry:5000/team/app"
        );
        assert_eq!(
            repository("registry:5000/team/app"),
            "registry:5000/team/app"
        );
        assert_eq!(repository("app@sha256:abc"), "app");
        assert_eq!(repository("app"), "app");
    }

    #[test]
    fn success_takes_the_annotation_off_and_failure_sets_fail() {
        assert_eq!(
            outcome_patch(true),
            json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: null}}})
        );
        assert_eq!(
            outcome_patch(false),
            json!({"metadata": {"annotations": {OUTCOME_ANNOTATION: "fail"}}})
        );
    }

    #[test]
    fn a_local_image_is_image_equals_path() {
        assert!("no-equals".parse::<LocalImage>().is_err());
        assert!("=path".parse::<LocalImage>().is_err());
    }
}
