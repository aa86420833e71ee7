//! `windlass simulate -f pods.yaml -f nodepools.yaml`: the NodeClaims Windlass would create for
//! some pending pods, with candidate and cheapest instance types and $/hour, from the bundled
//! instance catalog. No cluster and no AWS account needed.

use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::apis::labels::{CAPACITY_TYPE_LABEL, ZONE_LABEL};
use crate::apis::node_pool::NodePool;
use crate::scheduling::instance_types::InstanceType;
use crate::scheduling::pod::{NAMESPACE_NAME_LABEL, NamespaceLabels, PodShape};
use crate::scheduling::resources::{format_cpu, format_memory};
use crate::scheduling::{LAUNCH_CANDIDATES, Plan, Problem, cheapest_candidates, solve};
use crate::scheduling::{catalog, pool_input, template_pods};
use crate::{Error, Result};

/// What the files hold, read and checked.
#[derive(Default)]
pub struct Inputs {
    pub pods: Vec<PodShape>,
    pub daemon_sets: Vec<PodShape>,
    pub node_pools: Vec<NodePool>,
    /// Namespace labels, for pod affinity's `namespaceSelector`.
    pub namespaces: NamespaceLabels,
}

pub fn run(files: &[PathBuf]) -> Result<String> {
    let mut inputs = Inputs::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|source| Error::ReadFile {
            path: file.clone(),
            source,
        })?;
        read(&text, &mut inputs)
            .map_err(|reason| Error::Simulate(format!("{}: {reason}", file.display())))?;
    }
    if inputs.node_pools.is_empty() {
        return Err(Error::Simulate("no NodePool in the given files".into()));
    }
    Ok(report(&inputs, &catalog::bundled()))
}

/// Adds every YAML document in `text` to `inputs`: Pods (not yet bound), Deployments,
/// ReplicaSets, StatefulSets and Jobs (one pod per replica), DaemonSets (per-node overhead)
/// NodePools and Namespaces (for their labels). Other kinds are skipped.
pub fn read(text: &str, inputs: &mut Inputs) -> std::result::Result<(), String> {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|e: serde_yaml::Error| format!("document {}: {e}", index + 1))?;
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let what = format!(
            "{kind} {}",
            value["metadata"]["name"].as_str().unwrap_or("?")
        );
        let context = |e: String| format!("{what}: {e}");
        let namespace = value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        match kind.as_str() {
            "Pod" => {
                let pod: Pod = parse(value).map_err(context)?;
                if pod.spec.as_ref().is_none_or(|s| s.node_name.is_none()) {
                    inputs
                        .pods
                        .push(PodShape::from_pod(&pod).map_err(|e| context(e.to_string()))?);
                }
            }
            "Deployment" | "ReplicaSet" | "StatefulSet" | "Job" => {
                let (replicas, template) = match kind.as_str() {
                    "Deployment" => {
                        let d: Deployment = parse(value).map_err(context)?;
                        let spec = d.spec.unwrap_or_default();
                        (spec.replicas.unwrap_or(1), spec.template)
                    }
                    "ReplicaSet" => {
                        let r: ReplicaSet = parse(value).map_err(context)?;
                        let spec = r.spec.unwrap_or_default();
                        (
                            spec.replicas.unwrap_or(1),
                            spec.template.unwrap_or_default(),
                        )
                    }
                    "StatefulSet" => {
                        let s: StatefulSet = parse(value).map_err(context)?;
                        let spec = s.spec.unwrap_or_default();
                        (spec.replicas.unwrap_or(1), spec.template)
                    }
                    _ => {
                        let j: Job = parse(value).map_err(context)?;
                        let spec = j.spec.unwrap_or_default();
                        (spec.parallelism.unwrap_or(1), spec.template)
                    }
                };
                let name = what.split_once(' ').map_or("?", |(_, n)| n).to_owned();
                let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
                let spec = template.spec.unwrap_or_default();
                inputs.pods.extend(
                    template_pods(&name, &namespace, labels, &spec, replicas)
                        .map_err(|e| context(e.to_string()))?,
                );
            }
            "DaemonSet" => {
                let d: DaemonSet = parse(value).map_err(context)?;
                let template = d.spec.unwrap_or_default().template;
                let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
                let spec = template.spec.unwrap_or_default();
                inputs.daemon_sets.extend(
                    template_pods("daemon", &namespace, labels, &spec, 1)
                        .map_err(|e| context(e.to_string()))?,
                );
            }
            "NodePool" => inputs.node_pools.push(parse(value).map_err(context)?),
            "Namespace" => {
                let labels: Option<std::collections::BTreeMap<String, String>> =
                    parse(value["metadata"]["labels"].clone()).map_err(context)?;
                let name = what.split_once(' ').map_or("?", |(_, n)| n).to_owned();
                let mut labels = labels.unwrap_or_default();
                labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
                inputs.namespaces.insert(name, labels);
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(value: Value) -> std::result::Result<T, String> {
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The plan as text: one block per NodeClaim, then the pods left pending, then the total.
pub fn report(inputs: &Inputs, catalog: &[InstanceType]) -> String {
    let pools: Vec<_> = inputs
        .node_pools
        .iter()
        .map(|pool| pool_input(pool, catalog, &inputs.daemon_sets))
        .collect();
    let plan: Plan = solve(&Problem {
        catalog,
        pools: &pools,
        existing: &[],
        bound: &[],
        pods: &inputs.pods,
        namespaces: &inputs.namespaces,
    });
    let mut out = String::new();
    let mut total = 0.0;
    for (index, claim) in plan.new_claims.iter().enumerate() {
        let cheapest = &catalog[claim.instance_types[0]];
        let offering = cheapest.cheapest_offering(&claim.requirements);
        let price = offering.and_then(|o| o.price);
        total += price.unwrap_or_default();
        let price = price.map_or("price unknown".to_owned(), |p| format!("${p:.4}/hour"));
        let constraint = |key: &str| {
            claim
                .requirements
                .get(key)
                .map_or("any".to_owned(), ToString::to_string)
        };
        let _ = writeln!(
            out,
            "NodeClaim {}  nodepool={}  pods={}  requests cpu={} memory={}",
            index + 1,
            pools[claim.pool].name,
            claim.pods.len(),
            format_cpu(claim.requests.cpu),
            format_memory_rounded(claim.requests.memory),
        );
        let _ = writeln!(
            out,
            "  cheapest: {} {} {price}   zone: {}   capacity type: {}",
            cheapest.name,
            offering.map_or("", |o| o.capacity_type.as_str()),
            constraint(ZONE_LABEL),
            constraint(CAPACITY_TYPE_LABEL),
        );
        const SHOWN: usize = 10;
        let names: Vec<&str> = claim
            .instance_types
            .iter()
            .take(SHOWN)
            .map(|&i| catalog[i].name.as_str())
            .collect();
        let more = if claim.instance_types.len() > SHOWN {
            ", …"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  candidates ({} fit, the {} cheapest offered to CreateFleet): {}{more}",
            claim.instance_types.len(),
            cheapest_candidates(
                &claim.instance_types,
                &claim.requirements,
                catalog,
                LAUNCH_CANDIDATES
            )
            .len(),
            names.join(", ")
        );
        let pods: Vec<&str> = claim
            .pods
            .iter()
            .map(|&p| inputs.pods[p].name.as_str())
            .collect();
        let _ = writeln!(out, "  pods: {}", pods.join(", "));
    }
    if !plan.unplaced.is_empty() {
        let _ = writeln!(out, "Pending ({}):", plan.unplaced.len());
        for (pod, reason) in &plan.unplaced {
            let _ = writeln!(out, "  {}: {reason}", inputs.pods[*pod].name);
        }
    }
    let _ = writeln!(
        out,
        "Total: {} NodeClaims, ${total:.4}/hour at the cheapest candidates (bundled us-east-1 on-demand prices)",
        plan.new_claims.len()
    );
    out
}

/// Memory for people: whole Gi or Mi when exact, else Mi rounded up.
fn format_memory_rounded(bytes: i64) -> String {
    if bytes % (1 << 20) == 0 {
        format_memory(bytes)
    } else {
        format!("{}Mi", (bytes + (1 << 20) - 1) >> 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_POOL: &str = r#"
apiVersion: windlass.dev/v1alpha1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: windlass.dev, kind: EC2NodeClass, name: default}
      requirements:
        - {key: windlass.dev/capacity-type, operator: In, values: [on-demand]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
  limits: {cpu: "4", memory: 8Gi}
"#;

    const WORKLOAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: jobs}
spec:
  replicas: 3
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
        - name: worker
          image: worker
          resources: {requests: {cpu: "1", memory: 3Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: bound, namespace: jobs}
spec: {nodeName: somewhere, containers: [{name: c, image: c}]}
"#;

    #[test]
    fn reports_claims_prices_and_the_pods_limits_leave_pending() {
        let mut inputs = Inputs::default();
        read(WORKLOAD, &mut inputs).unwrap();
        read(NODE_POOL, &mut inputs).unwrap();
        assert_eq!(inputs.pods.len(), 3, "bound pods are not pending");
        let text = report(&inputs, &catalog::bundled());
        // Two 1-vCPU pods share a 4-vCPU, 8 GiB node; that node is the whole cpu limit.
        for expected in [
            "NodeClaim 1  nodepool=default  pods=2  requests cpu=2 memory=6Gi",
            "cheapest: c5.xlarge on-demand $0.1700/hour",
            "candidates (3 fit",
            "Pending (1):\n  jobs/worker-2: nodepool default: limit cpu=4 reached",
            "Total: 1 NodeClaims, $0.1700/hour",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }

    #[test]
    fn namespace_labels_decide_which_pods_an_affinity_term_counts() {
        let pods = |team: &str| {
            format!(
                r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: {team}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
spec: {{containers: [{{name: c, image: c, resources: {{requests: {{cpu: 100m}}}}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: guard, namespace: guard}}
spec:
  containers: [{{name: c, image: c, resources: {{requests: {{cpu: 100m}}}}}}]
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector: {{matchLabels: {{app: web}}}}
          namespaceSelector: {{matchLabels: {{team: a}}}}
"#
            )
        };
        let unlimited = NODE_POOL.replace("  limits: {cpu: \"4\", memory: 8Gi}\n", "");
        let claims = |team: &str| {
            let mut inputs = Inputs::default();
            read(&pods(team), &mut inputs).unwrap();
            read(&unlimited, &mut inputs).unwrap();
            let text = report(&inputs, &catalog::bundled());
            assert!(!text.contains("Pending"), "{text}");
            text.matches("NodeClaim ").count()
        };
        assert_eq!(claims("a"), 2, "shop is selected: web and guard part");
        assert_eq!(claims("b"), 1, "shop is not selected: they share a node");
    }

    #[test]
    fn bad_documents_are_named() {
        let mut inputs = Inputs::default();
        let error = read(
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: 7}\n",
            &mut inputs,
        )
        .unwrap_err();
        assert!(error.starts_with("Pod p: "), "{error}");
    }
}
