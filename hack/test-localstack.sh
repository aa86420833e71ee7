#!/usr/bin/env bash
# The integration suite with LocalStack playing AWS instead of moto (hack/stack/stack.sh with
# WINDLASS_STACK_AWS=localstack). Not part of hack/test.sh, which CI runs: it is the suite's
# length again.
#
# It builds the LocalStack virtualenv if needed, starts a fresh stack on it, runs the suite and
# stops the stack. Tests that need something only the stack's moto has print
# `moto-only: <test> skipped: needs <hook>` and return, which the test harness counts as a
# pass; the last line here counts them apart:
#   localstack: N passed, N failed, N skipped
# Extra arguments go to the test harness (a filter, --test-threads, ...); the default is
# `--test-threads 4`, as hack/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export CARGO_TERM_COLOR=never
export WINDLASS_STACK_AWS=localstack

[ $# -gt 0 ] || set -- --test-threads 4
log=${TMPDIR:-/tmp}/windlass-localstack-suite.log

cargo test --workspace --locked --features windlass/cluster-tests --test cluster --no-run
hack/stack/stack.sh build
trap 'hack/stack/stack.sh down' EXIT
hack/stack/stack.sh down
eval "$(hack/stack/stack.sh up)"

status=0
cargo test --workspace --locked --features windlass/cluster-tests --test cluster -- "$@" 2>&1 |
  tee "$log" || status=$?

summary=$(grep -E '^test result: ' "$log" | tail -n1 || true)
[ -n "$summary" ] || exit "$status"
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<< "$summary")
failed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<< "$summary")
skipped=$(grep -c '^moto-only: ' "$log" || true)
printf '\nmoto-only tests, skipped on LocalStack:\n'
grep '^moto-only: ' "$log" | sed 's/^moto-only: /  /' || echo "  none"
printf 'localstack: %d passed, %d failed, %d skipped\n' "$((passed - skipped))" "$failed" "$skipped"
exit "$status"
