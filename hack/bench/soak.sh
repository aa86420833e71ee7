#!/usr/bin/env bash
# The soak (issue 19; not in CI): jobs submitted in bursts and lulls through the jobs API for
# MINUTES minutes, run by the example worker on nodes Windlass launches and gives back, with
# one fault at random per wave (AWS calls throttled, failing or losing their answers; the API
# server Windlass talks to killed and restarted), the invariants checked after every wave.
# Prints a summary table; fails if any invariant was broken. Loopback only, bounded by MINUTES
# (each wave then settles within 5 minutes).
#
#   hack/bench/soak.sh                    20 minutes, seed 1
#   MINUTES=5 SEED=7 hack/bench/soak.sh   a short run with other draws
#
# It runs the ignored test `soak::soak` of the integration suite on a fresh local stack (it
# needs the stack's spare API server), and stops the stack afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export CARGO_TERM_COLOR=never
export WINDLASS_SOAK_MINUTES=${MINUTES:-20}
export WINDLASS_SOAK_SEED=${SEED:-1}

cargo test --workspace --locked --features windlass/cluster-tests --test cluster --no-run
hack/stack/stack.sh build
trap 'hack/stack/stack.sh down' EXIT
hack/stack/stack.sh down
eval "$(hack/stack/stack.sh up)"
log=${TMPDIR:-/tmp}/windlass-soak.log
status=0
cargo test --workspace --locked --features windlass/cluster-tests --test cluster -- \
  --ignored --exact soak::soak --nocapture > "$log" 2>&1 || status=$?
grep -E '^( *[0-9]+s wave|soak summary|\||violation)' "$log" || true
if [ "$status" -ne 0 ]; then
  tail -n 40 "$log"
  exit "$status"
fi
