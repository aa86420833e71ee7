#!/usr/bin/env bash
# The whole test suite: formatting, lints, CRD drift and unit tests, then the integration tests
# against a real cluster and AWS endpoint.
#
# With KUBECONFIG and AWS_ENDPOINT_URL both set (kind + LocalStack, say), the integration tests
# run against those. Otherwise the local stack (hack/stack/stack.sh) is built if needed, started,
# and stopped again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
export CARGO_TERM_COLOR=never
# A CI run builds once; incremental state would only double the target directory's size on a
# disk a CI run once filled.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

step() { printf '\n== %s\n' "$*"; }

own_stack=true
if [ -n "${KUBECONFIG:-}" ] && [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  own_stack=false
fi
if $own_stack; then
  # The stack's first build is long; let it run while cargo works.
  hack/stack/stack.sh build > "${TMPDIR:-/tmp}/windlass-stack-build.log" 2>&1 &
  stack_build=$!
fi
# nodeadm's first build takes a few minutes too; it runs alongside.
hack/nodeadm-check.sh build > "${TMPDIR:-/tmp}/windlass-nodeadm-build.log" 2>&1 &
nodeadm_build=$!

# The `windlass top` integration test drives the binary in a real terminal under tmux.
if ! command -v tmux > /dev/null; then
  step "installing tmux"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update && $sudo apt-get install -y tmux
fi

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
step "unit tests (types, CRD and OpenAPI drift, examples, pure logic)"
cargo test --workspace --locked
step "the IAM CloudFormation template (cfn-lint)"
hack/cfn-lint.sh

if $own_stack; then
  step "building and starting the local stack"
  if ! wait "$stack_build"; then
    cat "${TMPDIR:-/tmp}/windlass-stack-build.log"
    exit 1
  fi
  step "the stack's own services (hack/stack/*_test.py)"
  hack/stack/stack.sh check
  trap 'hack/stack/stack.sh down' EXIT
  # A fresh cluster every run: whatever an earlier run left behind is gone.
  hack/stack/stack.sh down
  eval "$(hack/stack/stack.sh up)"
else
  step "using KUBECONFIG=$KUBECONFIG and AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
fi
# Every cargo call selects the whole workspace, so dependency features unify the same way each
# time and the dependencies build once.
step "the AL2023 user data read by the real nodeadm"
if ! wait "$nodeadm_build"; then
  cat "${TMPDIR:-/tmp}/windlass-nodeadm-build.log"
  exit 1
fi
hack/nodeadm-check.sh
step "the data-processor worker against SQS"
cargo test --workspace --locked --features data-processor/sqs-tests --test worker
step "integration tests"
cargo test --workspace --locked --features windlass/cluster-tests --test cluster -- --test-threads 4
if $own_stack; then
  # The local stack's API server keeps an audit log; a cluster from KUBECONFIG may not.
  step "the RBAC and IAM the suite used, against the chart's RBAC and docs/iam"
  cargo test --workspace --locked --features windlass/cluster-tests --test permissions
fi
if $own_stack; then
  # hack/run-local.sh always runs on the local stack, never on the cluster KUBECONFIG names.
  step "the local demo (hack/run-local.sh), alone"
  cargo test --workspace --locked --features windlass/cluster-tests --test demo
fi
