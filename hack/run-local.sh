#!/usr/bin/env bash
# Runs Windlass on this machine against the local stack: starts the stack (building it the first
# time), installs the CRDs and the examples (pointed at the stack's queues, subnets and security
# group), builds Windlass, then runs `windlass run` with the jobs API on 127.0.0.1:8082 and the
# node registrar (the local stand-in for a kubelet joining, which also runs the example
# data-processor worker for the ScaledJob's pods) beside it. Then it plays the seed scenario
# (hack/demo.py: jobs and orders arrive, nodes launch, everything scales back, a summary) and
# leaves Windlass running until Ctrl-C. `--no-demo` (or WINDLASS_DEMO=false) skips the demo.
# `hack/stack/stack.sh down` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=${WINDLASS_DEMO:-true}
for arg in "$@"; do
  case $arg in
    --no-demo) demo=false ;;
    *) echo "usage: $0 [--no-demo]" >&2; exit 2 ;;
  esac
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export WINDLASS_JOBS_TOKEN=${WINDLASS_JOBS_TOKEN:-windlass-local}
metrics_addr=${WINDLASS_METRICS_ADDR:-127.0.0.1:8080}
health_addr=${WINDLASS_HEALTH_ADDR:-127.0.0.1:8081}
jobs_addr=${WINDLASS_JOBS_ADDR:-127.0.0.1:8082}

# Built first, so nothing answers on the printed addresses before Windlass does; built as
# hack/test.sh's unit tests build it (dev-dependencies change shared crates' features), so
# either reuses the other's build.
# The data-processor feature builds the example worker too, which the registrar runs for Job pods.
cargo test --workspace --locked --features data-processor/sqs-tests --no-run
eval "$(hack/stack/stack.sh up)"
# This script installs them: it takes over fields another applier (an older checkout, a test)
# set.
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for condition=Established --timeout 60s -f crds/
kubectl apply --server-side --force-conflicts -f examples/
queue() { python3 -c 'import json, os, sys; print(json.load(open(os.environ["WINDLASS_STACK_FIXTURE"]))["queues"][sys.argv[1]])' "$1"; }
# The examples name AWS queues and a discovery tag; locally they use the stack's.
# Kwok runs no containers: the annotation hands the Jobs' pods to the node registrar, which runs
# the worker binary (examples/data-processor) for them against the stack's SQS.
kubectl patch scaledjob data-processor --type json -p "[
  {\"op\": \"replace\", \"path\": \"/spec/triggers/0/metadata/queueURL\", \"value\": \"$(queue jobs)\"},
  {\"op\": \"replace\", \"path\": \"/spec/jobTargetRef/template/spec/containers/0/env/0/value\", \"value\": \"$(queue jobs)\"},
  {\"op\": \"add\", \"path\": \"/spec/jobTargetRef/template/metadata\", \"value\": {\"annotations\": {\"windlass.dev/test-outcome\": \"run\"}}}]"
kubectl set env deployment/order-processor QUEUE_URL="$(queue orders)"
discovery="{\"tags\": {\"windlass.dev/discovery\": \"$WINDLASS_CLUSTER_NAME\"}}"
kubectl patch ec2nodeclass default --type merge \
  -p "{\"spec\": {\"subnetSelectorTerms\": [$discovery], \"securityGroupSelectorTerms\": [$discovery]}}"
# The ClusterTriggerAuthentication reads its Secret from the controller's namespace.
kubectl create namespace windlass --dry-run=client -o yaml | kubectl apply --server-side -f -
kubectl create secret generic sqs-credentials --namespace windlass \
  --from-literal AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  --from-literal AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  --dry-run=client -o yaml | kubectl apply --server-side -f -

# Nodes join the stack's API server, as a bootstrap names it; on EKS, DescribeCluster says this.
WINDLASS_CLUSTER_ENDPOINT=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
WINDLASS_CLUSTER_CA_BUNDLE=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
export WINDLASS_CLUSTER_ENDPOINT WINDLASS_CLUSTER_CA_BUNDLE WINDLASS_CLUSTER_SERVICE_CIDR=10.96.0.0/16

children=()
trap 'kill "${children[@]}" 2>/dev/null; wait' EXIT INT TERM
"$CARGO_TARGET_DIR/debug/windlass-node-registrar" \
  --run-image "registry.example.com/data-processor=$CARGO_TARGET_DIR/debug/data-processor" &
children+=($!)
"$CARGO_TARGET_DIR/debug/windlass" run --metrics-addr "$metrics_addr" --health-addr "$health_addr" \
  --jobs-addr "$jobs_addr" --jobs-plain-http &
children+=($!)
until curl -sf "http://$health_addr/readyz" >/dev/null; do
  kill -0 "${children[1]}" 2>/dev/null || { echo "windlass exited" >&2; exit 1; }
  sleep 0.5
done
if [ "$demo" = true ]; then
  WINDLASS_JOBS_ADDR=$jobs_addr python3 hack/demo.py "$CARGO_TARGET_DIR/debug/windlass"
fi
echo "windlass is running: jobs API http://$jobs_addr (Authorization: Bearer $WINDLASS_JOBS_TOKEN), metrics http://$metrics_addr/metrics" >&2
wait -n "${children[@]}"
