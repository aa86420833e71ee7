#!/usr/bin/env bash
# Runs Windlass on this machine against the local stack: starts the stack (building it the first
# time), installs the CRDs and the examples (pointed at the stack's queues), then runs `windlass run` in the foreground with the jobs API on 127.0.0.1:8082.
# Ctrl-C stops the controller; `hack/stack/stack.sh down` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export WINDLASS_JOBS_TOKEN=${WINDLASS_JOBS_TOKEN:-windlass-local}
eval "$(hack/stack/stack.sh up)"
kubectl apply --server-side -f crds/
kubectl wait --for condition=Established --timeout 60s -f crds/
kubectl apply --server-side -f examples/
queue() { python3 -c 'import json, os, sys; print(json.load(open(os.environ["WINDLASS_STACK_FIXTURE"]))["queues"][sys.argv[1]])' "$1"; }
# The examples name AWS queues; locally they use the stack's.
kubectl patch scaledjob data-processor --type json \
  -p "[{\"op\": \"replace\", \"path\": \"/spec/triggers/0/metadata/queueURL\", \"value\": \"$(queue jobs)\"}]"
kubectl set env deployment/order-processor QUEUE_URL="$(queue orders)"
echo "jobs API: http://127.0.0.1:8082 (Authorization: Bearer $WINDLASS_JOBS_TOKEN)" >&2
# Built as part of the workspace, as hack/test.sh builds it, so the two share dependencies.
cargo build --workspace --locked --bin windlass
exec "$CARGO_TARGET_DIR/debug/windlass" run --metrics-addr 127.0.0.1:8080 --health-addr 127.0.0.1:8081 \
  --jobs-addr 127.0.0.1:8082
