#!/usr/bin/env bash
# Many ScaledObjects (issue 18, item 5): on the local stack, 1,000 ScaledObjects on 100 SQS
# queues at pollingInterval 1, each scaling a small Deployment of its own, for DURATION seconds;
# then one table: how late the polls started (windlass_scaler_poll_lag_seconds), the
# GetQueueAttributes requests sent, and the controller's CPU seconds and RSS (from /proc).
# Not in CI; loopback only (the stack's kube-apiserver and moto), bounded by DURATION.
#
#   hack/bench/many-objects.sh                  # 5 minutes
#   DURATION=60 hack/bench/many-objects.sh      # a quick run
#   OBJECTS=1000 QUEUES=100 ACTIVE_QUEUES=10 MESSAGES=3 DURATION=300 hack/bench/many-objects.sh
#
# ACTIVE_QUEUES of the queues get MESSAGES messages each, so their ScaledObjects scale their
# Deployments out (kwok runs no containers, and the pods select a node label nothing has, so
# they stay pending); the other queues stay empty and their Deployments at 0. The measured
# window starts once every ScaledObject is Ready and the scale-outs are done, so start-up is
# not in the lag figures (peak RSS is the process's own high-water mark, start-up included).
# Windlass is a release build; the stack (hack/stack/stack.sh up) is started if it is not up.
# Needs cargo, kubectl, curl, jq and python3 with boto3.
set -euo pipefail
cd "$(dirname "$0")/../.."

objects=${OBJECTS:-1000}
queues=${QUEUES:-100}
duration=${DURATION:-300}
active_queues=${ACTIVE_QUEUES:-10}
messages=${MESSAGES:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}

echo "== building windlass (release)" >&2
cargo build --release --locked --bin windlass
eval "$(hack/stack/stack.sh up)"
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$AWS_REGION}
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

ns=bench-many-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/windlass-many-objects.XXXXXX")
windlass_pid=
clean_up() {
  [ -n "$windlass_pid" ] && kill "$windlass_pid" 2>/dev/null && wait "$windlass_pid" 2>/dev/null
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  python3 - "$ns" "$queues" <<'EOF' || true
import sys, boto3
prefix, queues = sys.argv[1], int(sys.argv[2])
sqs = boto3.client("sqs")
for q in range(queues):
    try:
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{prefix}-{q}")["QueueUrl"])
    except Exception:
        pass
EOF
  rm -rf "$work"
}
trap clean_up EXIT

echo "== $queues queues ($active_queues with $messages messages), $objects Deployments and ScaledObjects in $ns" >&2
kubectl create namespace "$ns" >/dev/null
python3 - "$ns" "$queues" "$objects" "$active_queues" "$messages" > "$work/objects.json" <<'EOF'
import json, sys, boto3
ns, queues, objects, active, messages = sys.argv[1], *map(int, sys.argv[2:])
sqs = boto3.client("sqs")
urls = [sqs.create_queue(QueueName=f"{ns}-{q}")["QueueUrl"] for q in range(queues)]
for url in urls[:active]:
    for n in range(messages):
        sqs.send_message(QueueUrl=url, MessageBody=f"message {n}")
items = []
for i in range(objects):
    name = f"worker-{i}"
    items.append({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"windlass.dev/bench": "no-such-node"},
                    "containers": [{"name": "worker", "image": "registry.example.com/worker:1",
                                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                },
            },
        },
    })
    items.append({
        "apiVersion": "windlass.dev/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 1,
            "cooldownPeriod": 300,
            "maxReplicaCount": 5,
            "triggers": [{"type": "aws-sqs-queue", "metadata": {"queueURL": urls[i % queues], "queueLength": "1"}}],
        },
    })
json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)
EOF
kubectl apply --server-side -f "$work/objects.json" >/dev/null

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metrics_port=$(free_port)
health_port=$(free_port)
echo "== windlass run, watching $ns" >&2
"$CARGO_TARGET_DIR/release/windlass" run --watch-namespace "$ns" --namespace "$ns" \
  --cluster-name "$ns" --leader-elect false \
  --metrics-addr "127.0.0.1:$metrics_port" --health-addr "127.0.0.1:$health_port" \
  > "$work/windlass.log" 2>&1 &
windlass_pid=$!

ready_objects() {
  kubectl get scaledobjects -n "$ns" -o json |
    jq '[.items[] | select(any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length'
}
deadline=$((SECONDS + 300))
until [ "$(ready_objects)" -ge "$objects" ]; do
  kill -0 "$windlass_pid" 2>/dev/null || { cat "$work/windlass.log" >&2; echo "windlass exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "not every ScaledObject became Ready within 300 s" >&2; exit 1; }
  sleep 5
done
# The active ScaledObjects scale out on their first polls; the window starts after.
sleep 10

scrape() {
  curl -sf "http://127.0.0.1:$metrics_port/metrics" > "$1"
  kubectl get --raw /metrics | grep '^apiserver_request_total' >> "$1"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$windlass_pid/stat"; }
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6}' /proc/stat; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$windlass_pid/status"; }

echo "== measuring for $duration s" >&2
scrape "$work/before.txt"
cpu_before=$(cpu_ticks)
machine_before=$(machine_ticks)
started=$(date +%s.%N)
peak_rss=0
end=$((SECONDS + duration))
while [ "$SECONDS" -lt "$end" ]; do
  kill -0 "$windlass_pid" 2>/dev/null || { cat "$work/windlass.log" >&2; echo "windlass exited" >&2; exit 1; }
  rss=$(rss_kib)
  [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
  sleep 1
done
scrape "$work/after.txt"
cpu_after=$(cpu_ticks)
machine_after=$(machine_ticks)
elapsed=$(python3 -c "import time; print(time.time() - $started)")
hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$windlass_pid/status")
ready_at_end=$(ready_objects)
replicas=$(kubectl get deployments -n "$ns" -o json | jq '[.items[].spec.replicas] | add')

python3 - "$work/before.txt" "$work/after.txt" <<EOF
import re, sys

def samples(path):
    values = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values

before, after = samples(sys.argv[1]), samples(sys.argv[2])
delta = lambda name: after.get(name, 0.0) - before.get(name, 0.0)
buckets = sorted(
    (float(re.search(r'le="([^"]+)"', name).group(1)), delta(name))
    for name in after if name.startswith("windlass_scaler_poll_lag_seconds_bucket")
)
polls = delta("windlass_scaler_poll_lag_seconds_count")

def ms(seconds):
    return f"{seconds * 1000:.2f} ms" if seconds < float("inf") else "> 2.5 s"

def quantile(q):
    rank, lower, below = q * polls, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return bound
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return float("inf")

highest = next(((lower, bound) for (lower, _), (bound, count) in zip([(0.0, 0.0)] + buckets, buckets) if count >= polls), None)
get_queue_attributes = sum(delta(name) for name in after if name.startswith("windlass_sqs_get_queue_attributes_total"))
elapsed = $elapsed
cpu = ($cpu_after - $cpu_before) / $(getconf CLK_TCK)
machine_total = [a - b for a, b in zip(map(int, "$machine_after".split()), map(int, "$machine_before".split()))]
machine_busy = 1 - machine_total[1] / machine_total[0]
print(f"| objects / queues / pollingInterval | $objects / $queues / 1 s |")
print(f"| measured | {elapsed:.0f} s, {polls:.0f} polls ({polls / elapsed:.0f}/s) |")
print(f"| poll lag p50 / p95 / p99 | {ms(quantile(0.5))} / {ms(quantile(0.95))} / {ms(quantile(0.99))} |")
print(f"| poll lag max | in ({ms(highest[0])}, {ms(highest[1])}] |")
print(f"| polls that started 10 ms late or more | {polls - dict(buckets).get(0.01, 0):.0f} ({(polls - dict(buckets).get(0.01, 0)) / max(polls, 1) * 100:.2f} %) |")
print(f"| GetQueueAttributes sent | {get_queue_attributes:.0f} ({get_queue_attributes / elapsed:.1f}/s; one per queue per tick is $queues/s) |")
print(f"| controller CPU | {cpu:.1f} s ({cpu / elapsed * 100:.0f} % of one core) |")
print(f"| controller RSS | peak {$hwm / 1024:.1f} MiB (VmHWM); {$peak_rss / 1024:.1f} MiB at most in the window |")
requests = {}
for name in after:
    if name.startswith("apiserver_request_total{"):
        verb = re.search(r'verb="([^"]+)"', name).group(1)
        resource = re.search(r'resource="([^"]*)"', name).group(1)
        subresource = re.search(r'subresource="([^"]*)"', name)
        key = f"{verb} {resource}" + (f"/{subresource.group(1)}" if subresource and subresource.group(1) else "")
        requests[key] = requests.get(key, 0.0) + delta(name)
busiest = sorted(((count, key) for key, count in requests.items() if count > 0), reverse=True)[:4]
print(f"| API server requests, all clients | {sum(requests.values()) / elapsed:.0f}/s: " + ", ".join(f"{key} {count / elapsed:.0f}/s" for count, key in busiest) + " |")
print(f"| machine CPU busy (2 cores: stack and controller) | {machine_busy * 100:.0f} % |")
print(f"| Ready ScaledObjects at the end / Deployment replicas | $ready_at_end / $replicas |")
EOF
