#!/usr/bin/env bash
# Runs Windlass on this machine against the local stack: starts the stack (building it the first
# time), installs the CRDs and the examples, then runs `windlass run` in the foreground.
# Ctrl-C stops the controller; `hack/stack/stack.sh down` stops the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
eval "$(hack/stack/stack.sh up)"
kubectl apply --server-side -f crds/
kubectl wait --for condition=Established --timeout 60s -f crds/
kubectl apply --server-side -f examples/
exec cargo run --locked --bin windlass -- run --metrics-addr 127.0.0.1:8080 --health-addr 127.0.0.1:8081
