#!/usr/bin/env bash
# Reaction times on the local stack (not in CI): message → the ScaledJob's Job created, and
# message → a pod Running on a node launched for it (registrar boot delay 1 s), demand-aware
# provisioning on and off side by side. Prints a table of p50/p95/max in milliseconds.
#
#   hack/bench/reaction.sh              50 runs of each
#   RUNS=10 hack/bench/reaction.sh      a quick look
#
# It runs the ignored test `reaction::reaction_times` of the integration suite on the stack
# hack/stack/stack.sh starts (or the cluster KUBECONFIG and AWS_ENDPOINT_URL name), and stops a
# stack it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export CARGO_TERM_COLOR=never
export WINDLASS_REACTION_RUNS=${RUNS:-50}

cargo test --workspace --locked --features windlass/cluster-tests --test cluster --no-run
if [ -z "${KUBECONFIG:-}" ] || [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  hack/stack/stack.sh build
  trap 'hack/stack/stack.sh down' EXIT
  hack/stack/stack.sh down
  eval "$(hack/stack/stack.sh up)"
fi
log=${TMPDIR:-/tmp}/windlass-reaction.log
status=0
cargo test --workspace --locked --features windlass/cluster-tests --test cluster -- \
  --ignored --exact reaction::reaction_times --nocapture > "$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log"
  exit "$status"
fi
grep -E '^(reaction times|\|)' "$log"
