#!/usr/bin/env bash
# The controller's footprint at scale (issue 18, item 4): on the local stack, PODS pending pods
# that need new nodes → NodeClaims → CreateFleet on moto → Nodes (the node registrar plays the
# kubelets, with a fixed boot delay; kwok runs the pods) → every pod Running. Then one table per
# size: time to all Running, NodeClaims and instances created, CreateFleet calls, the
# controller's peak RSS (VmHWM) and CPU seconds (from /proc), and its API server requests by
# verb (from the stack's audit log). Not in CI; loopback only; every wait is bounded.
#
#   hack/bench/scale.sh                  1,000 pods, then 10,000
#   PODS=1000 hack/bench/scale.sh        one size
#   PODS="1000 10000" BOOT_DELAY=2 TIMEOUT=1500 hack/bench/scale.sh
#
# Each pod asks for 380m CPU and 1 GiB and the NodePool allows m5.xlarge on-demand only, whose
# allocatable CPU (3,920m) takes ten of them: PODS/10 nodes. The NodePool's limit leaves room for
# twice that. TIMEOUT (seconds, default 1500) bounds the wait for all pods Running; a size that
# misses it still gets its row, with how far it got.
#
# Each size runs on a fresh stack (hack/stack/stack.sh down, then up), so one size's objects
# weigh nothing on the next; the stack is stopped at the end. Hold the stack lock around it:
#   flock -o /tmp/windlass-stack.lock hack/bench/scale.sh
# Windlass is a release build run as a ServiceAccount (bound to cluster-admin) so that the audit
# log, which records ServiceAccounts only, holds exactly its requests. Needs cargo, kubectl,
# curl, jq and python3 with boto3.
set -euo pipefail
cd "$(dirname "$0")/../.."

sizes=${PODS:-1000 10000}
boot_delay=${BOOT_DELAY:-2}
timeout=${TIMEOUT:-1500}
instance_type=m5.xlarge
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}

echo "== building windlass and the node registrar (release)" >&2
cargo build --workspace --release --locked --bin windlass --bin windlass-node-registrar
windlass=$CARGO_TARGET_DIR/release/windlass
registrar=$CARGO_TARGET_DIR/release/windlass-node-registrar

work=$(mktemp -d "${TMPDIR:-/tmp}/windlass-scale.XXXXXX")
windlass_pid=
registrar_pid=
stop_processes() {
  local pid
  for pid in $windlass_pid $registrar_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $windlass_pid $registrar_pid; do
    # Bounded: a process that ignores SIGTERM for 30 s is killed.
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  windlass_pid=
  registrar_pid=
}
clean_up() {
  stop_processes
  hack/stack/stack.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap clean_up EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_size PODS: one measurement on a fresh stack; appends its results to $work/results.jsonl.
run_size() {
  local pods=$1 nodes ns=bench-scale cluster metrics_port health_port
  nodes=$(((pods + 9) / 10))
  cluster=bench-scale-$pods
  echo "== $pods pods ($nodes nodes of $instance_type expected): fresh stack" >&2
  hack/stack/stack.sh down >/dev/null
  eval "$(hack/stack/stack.sh up)"
  export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
  kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

  local admin server ca_file ca_bundle
  admin=$(kubectl config view --raw --minify -o json)
  server=$(jq -r '.clusters[0].cluster.server' <<<"$admin")
  ca_bundle=$(jq -r '.clusters[0].cluster."certificate-authority-data"' <<<"$admin")
  ca_file=$work/ca.crt
  base64 -d <<<"$ca_bundle" > "$ca_file"
  jq -r '.users[0].user.token' <<<"$admin" > "$work/admin-token"

  kubectl create namespace "$ns" >/dev/null
  kubectl create serviceaccount windlass -n "$ns" >/dev/null
  kubectl create clusterrolebinding "$ns-windlass" --clusterrole cluster-admin \
    --serviceaccount "$ns:windlass" >/dev/null
  jq -n --arg server "$server" --arg ca "$ca_bundle" \
    --arg token "$(kubectl create token windlass -n "$ns" --duration 2h)" '{
      apiVersion: "v1", kind: "Config",
      clusters: [{name: "stack", cluster: {server: $server, "certificate-authority-data": $ca}}],
      users: [{name: "windlass", user: {token: $token}}],
      contexts: [{name: "stack", context: {cluster: "stack", user: "windlass"}}],
      "current-context": "stack"}' > "$work/windlass.kubeconfig"

  jq -n --arg name "$ns" --arg discovery "$WINDLASS_CLUSTER_NAME" --arg type "$instance_type" \
    --arg cpu "$((nodes * 8))" '{apiVersion: "v1", kind: "List", items: [
      {apiVersion: "windlass.dev/v1alpha1", kind: "EC2NodeClass", metadata: {name: $name},
       spec: {role: "WindlassNodeRole", amiSelectorTerms: [{alias: "al2023@latest"}],
              subnetSelectorTerms: [{tags: {"windlass.dev/discovery": $discovery}}],
              securityGroupSelectorTerms: [{tags: {"windlass.dev/discovery": $discovery}}]}},
      {apiVersion: "windlass.dev/v1alpha1", kind: "NodePool", metadata: {name: $name},
       spec: {template: {spec: {
                nodeClassRef: {group: "windlass.dev", kind: "EC2NodeClass", name: $name},
                requirements: [
                  {key: "node.kubernetes.io/instance-type", operator: "In", values: [$type]},
                  {key: "windlass.dev/capacity-type", operator: "In", values: ["on-demand"]}],
                taints: [{key: "windlass.dev/bench", value: $name, effect: "NoSchedule"}]}},
              limits: {cpu: $cpu}}}]}' | kubectl apply -f - >/dev/null

  metrics_port=$(free_port)
  health_port=$(free_port)
  echo "== windlass run as system:serviceaccount:$ns:windlass, cluster $cluster" >&2
  KUBECONFIG=$work/windlass.kubeconfig "$windlass" run --watch-namespace "$ns" --namespace "$ns" \
    --cluster-name "$cluster" --leader-elect false \
    --cluster-endpoint "$server" --cluster-ca-bundle "$ca_bundle" --cluster-service-cidr 10.96.0.0/16 \
    --metrics-addr "127.0.0.1:$metrics_port" --health-addr "127.0.0.1:$health_port" \
    > "$work/windlass-$pods.log" 2>&1 &
  windlass_pid=$!
  "$registrar" --cluster-name "$cluster" --boot-delay-seconds "$boot_delay" \
    --cluster-endpoint "$server" --cluster-ca-bundle "$ca_bundle" \
    > "$work/registrar-$pods.log" 2>&1 &
  registrar_pid=$!

  local deadline=$((SECONDS + 300))
  until curl -sf "http://127.0.0.1:$metrics_port/metrics" | grep -Eq '^windlass_instance_types [1-9]'; do
    kill -0 "$windlass_pid" 2>/dev/null || { tail -n 40 "$work/windlass-$pods.log" >&2; echo "windlass exited" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "windlass did not read the instance catalog within 300 s" >&2; exit 1; }
    sleep 2
  done

  echo "== creating $pods pods in $ns; waiting up to $timeout s for all Running" >&2
  python3 - "$server" "$ca_file" "$work/admin-token" "$ns" "$cluster" "$pods" "$windlass_pid" \
    "$timeout" "http://127.0.0.1:$metrics_port/metrics" "$work/run-$pods.json" <<'EOF'
# Creates the pods, then samples until all are Running or the timeout: the controller's RSS
# every second; pods Running, NodeClaims and registered Nodes every 5 s (metadata-only lists).
import concurrent.futures, json, ssl, sys, time, urllib.parse, urllib.request

server, ca_file, token_file, ns, cluster, pods, pid, timeout, metrics_url, out = sys.argv[1:]
pods, timeout = int(pods), float(timeout)
context = ssl.create_default_context(cafile=ca_file)
headers = {"Authorization": "Bearer " + open(token_file).read().strip()}

def request(method, path, body=None, accept="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server + path, data=data, method=method,
                                 headers={**headers, "Accept": accept, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=context, timeout=60) as response:
        return json.load(response)

def count(path, **query):
    metadata = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    return len(request("GET", path + "?" + urllib.parse.urlencode(query), accept=metadata)["items"] or [])

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def pod(index):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"worker-{index}", "labels": {"app": "worker", "shard": str(index % 16)}},
        "spec": {
            "nodeSelector": {"windlass.dev/nodepool": ns},
            "tolerations": [{"key": "windlass.dev/bench", "operator": "Equal", "value": ns, "effect": "NoSchedule"}],
            "containers": [{
                "name": "worker", "image": "registry.example.com/worker:1.0.0",
                "command": ["/worker", "--queue", "jobs"],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "SHARD", "value": str(index % 16)}],
                "ports": [{"containerPort": 8080, "name": "metrics"}],
                "resources": {"requests": {"cpu": "380m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
            }],
        },
    }

idle_rss = rss_kib()
started = time.time()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for _ in pool.map(lambda i: request("POST", f"/api/v1/namespaces/{ns}/pods", pod(i)), range(pods)):
        pass
created = time.time() - started
print(f"   {pods} pods created in {created:.1f} s", file=sys.stderr)

peak_rss, samples, running, claims, nodes = 0, [], 0, 0, 0
all_running = None
next_count = 0.0
while True:
    now = time.time() - started
    try:
        peak_rss = max(peak_rss, rss_kib())
    except (FileNotFoundError, TypeError):
        print("windlass exited", file=sys.stderr)
        break
    if now >= next_count:
        next_count = now + 5
        running = count(f"/api/v1/namespaces/{ns}/pods", fieldSelector="status.phase=Running")
        claims = count("/apis/windlass.dev/v1alpha1/nodeclaims", labelSelector=f"windlass.dev/cluster={cluster}")
        nodes = count("/api/v1/nodes", labelSelector=f"node-registrar.windlass.dev/cluster={cluster},windlass.dev/registered")
        samples.append({"t": round(now, 1), "running": running, "nodeclaims": claims, "nodes": nodes, "rss_kib": rss_kib()})
        print(f"   {now:6.0f} s: {running} Running, {claims} NodeClaims, {nodes} registered Nodes, RSS {samples[-1]['rss_kib'] / 1024:.1f} MiB", file=sys.stderr)
        if running >= pods:
            all_running = now
            break
    if now > timeout:
        break
    time.sleep(1)
json.dump({"pods": pods, "created_s": created, "all_running_s": all_running, "waited_s": time.time() - started,
           "running": running, "nodeclaims_seen": claims, "nodes": nodes, "peak_rss_sampled_kib": peak_rss,
           "idle_rss_kib": idle_rss, "end_rss_kib": samples[-1]["rss_kib"] if samples else None,
           "samples": samples}, open(out, "w"))
EOF

  kill -0 "$windlass_pid" 2>/dev/null || { tail -n 40 "$work/windlass-$pods.log" >&2; echo "windlass exited" >&2; exit 1; }
  # Read before the process ends: its high-water mark, CPU and metrics.
  local hwm cpu_ticks
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$windlass_pid/status")
  cpu_ticks=$(awk '{print $14 + $15}' "/proc/$windlass_pid/stat")
  curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics-$pods.txt"
  python3 - "$cluster" > "$work/instances-$pods.json" <<'EOF'
import json, sys, boto3
ec2 = boto3.client("ec2")
pages = ec2.get_paginator("describe_instances").paginate(Filters=[{"Name": "tag:windlass.dev/cluster", "Values": [sys.argv[1]]}])
states = {}
for page in pages:
    for reservation in page["Reservations"]:
        for instance in reservation["Instances"]:
            states[instance["State"]["Name"]] = states.get(instance["State"]["Name"], 0) + 1
json.dump(states, sys.stdout)
EOF
  # Its watches are in the audit log once they end.
  stop_processes
  sleep 2
  local user="system:serviceaccount:$ns:windlass"
  grep -F "\"$user\"" "$WINDLASS_AUDIT_LOG" |
    jq -c --arg user "$user" 'select(.user.username == $user) |
      {verb, resource: (.objectRef.resource + (if .objectRef.subresource then "/" + .objectRef.subresource else "" end))}' |
    jq -s 'group_by(.verb + " " + .resource) | map({key: (.[0].verb + " " + .[0].resource), value: length}) | from_entries' \
    > "$work/requests-$pods.json"
  jq -c --argjson hwm "$hwm" --argjson cpu_ticks "$cpu_ticks" --argjson clk "$(getconf CLK_TCK)" \
    --slurpfile instances "$work/instances-$pods.json" --slurpfile requests "$work/requests-$pods.json" \
    --rawfile metrics "$work/metrics-$pods.txt" '. + {
      peak_rss_kib: $hwm, cpu_s: ($cpu_ticks / $clk), instances: $instances[0], requests: $requests[0],
      metrics: ($metrics | split("\n") | map(select(test("^windlass_(nodeclaims_(created|launched|launch_failures)|disruption_actions)_total")) | split(" ") | {key: .[0], value: (.[1] | tonumber)}) | from_entries)}' \
    "$work/run-$pods.json" >> "$work/results.jsonl"
  grep -E ' (WARN|ERROR) ' "$work/windlass-$pods.log" | tail -n 5 >&2 || true
}

for pods in $sizes; do
  run_size "$pods"
done

python3 - "$work/results.jsonl" "$boot_delay" "$instance_type" <<'EOF'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
boot_delay, instance_type = sys.argv[2], sys.argv[3]

def metric(run, prefix):
    return sum(value for name, value in run["metrics"].items() if name.startswith(prefix))

def verbs(run):
    by_verb = {}
    for key, n in run["requests"].items():
        by_verb[key.split(" ")[0]] = by_verb.get(key.split(" ")[0], 0) + n
    return ", ".join(f"{verb} {n}" for verb, n in sorted(by_verb.items(), key=lambda kv: -kv[1]))

def busiest(run):
    top = sorted(run["requests"].items(), key=lambda kv: -kv[1])[:5]
    return ", ".join(f"{key} {n}" for key, n in top)

rows = [
    ("pending pods (380m, 1 GiB each)", lambda r: f"{r['pods']:,}"),
    ("pods created in", lambda r: f"{r['created_s']:.0f} s"),
    ("time to all Running (from the first pod created)", lambda r: f"{r['all_running_s']:.0f} s" if r["all_running_s"] is not None
        else f"not within {r['waited_s']:.0f} s: {r['running']:,} Running"),
    ("NodeClaims created (metric) / seen at the end", lambda r: f"{metric(r, 'windlass_nodeclaims_created_total'):.0f} / {r['nodeclaims_seen']:,}"),
    (f"instances launched ({instance_type}), by state", lambda r: ", ".join(f"{n:,} {state}" for state, n in sorted(r["instances"].items())) or "0"),
    ("registered Nodes at the end", lambda r: f"{r['nodes']:,}"),
    ("CreateFleet calls (launched + launched nothing)", lambda r: f"{metric(r, 'windlass_nodeclaims_launched_total') + metric(r, 'windlass_nodeclaims_launch_failures_total'):.0f}"
        f" ({metric(r, 'windlass_nodeclaims_launched_total'):.0f} + {metric(r, 'windlass_nodeclaims_launch_failures_total'):.0f})"),
    ("NodeClaims deleted by disruption", lambda r: f"{metric(r, 'windlass_disruption_actions_total'):.0f}"),
    ("controller RSS: before the pods / at the end", lambda r: f"{r['idle_rss_kib'] / 1024:.1f} / {r['end_rss_kib'] / 1024:.1f} MiB"),
    ("controller peak RSS (VmHWM)", lambda r: f"{r['peak_rss_kib'] / 1024:.1f} MiB"),
    ("controller CPU (user + system)", lambda r: f"{r['cpu_s']:.1f} s"),
    ("controller API requests by verb", verbs),
    ("controller API requests, busiest", busiest),
]
print(f"| boot delay {boot_delay} s | " + " | ".join(f"{r['pods']:,} pods" for r in runs) + " |")
print("| --- |" + " --- |" * len(runs))
for label, cell in rows:
    print(f"| {label} | " + " | ".join(cell(r) for r in runs) + " |")
EOF
