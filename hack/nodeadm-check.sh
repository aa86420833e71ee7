#!/usr/bin/env bash
# Checks the AL2023 user data Windlass writes with the real nodeadm, the node agent of the
# EKS AL2023 images.
#
#   hack/nodeadm-check.sh build   build nodeadm (cached) and print the binary's path
#   hack/nodeadm-check.sh         build it if needed, then run the nodeadm test (tests/nodeadm.rs)
#
# nodeadm is built with `go build` from the module pinned in hack/nodeadm/go.mod and cached in
# $WINDLASS_CACHE (default ~/.cache/windlass), keyed by version, as hack/stack/stack.sh does.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${WINDLASS_CACHE:-$HOME/.cache/windlass}
module=github.com/awslabs/amazon-eks-ami/nodeadm
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

log() { printf 'nodeadm-check: %s\n' "$*" >&2; }
die() { printf 'nodeadm-check: %s\n' "$*" >&2; exit 1; }

version=$(awk -v mod="$module" '$1 == mod {print $2}' "$here/nodeadm/go.mod")
[ -n "$version" ] || die "hack/nodeadm/go.mod pins no $module"
bin_dir=$cache/nodeadm-$version/bin

build() {
  [ -f "$bin_dir/.complete" ] && return 0
  log "building nodeadm $version ..."
  mkdir -p "$bin_dir"
  local started=$SECONDS
  (cd "$here/nodeadm" && go build -trimpath -ldflags="-s -w" -o "$bin_dir/" "$module/cmd/nodeadm")
  touch "$bin_dir/.complete"
  log "built nodeadm in $((SECONDS - started))s"
}

case ${1:-} in
  build)
    build
    echo "$bin_dir/nodeadm"
    ;;
  "")
    build
    cd "$here/.."
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/windlass/target}
    WINDLASS_NODEADM=$bin_dir/nodeadm \
      cargo test --workspace --locked --features windlass/cluster-tests --test nodeadm
    ;;
  *) die "usage: $0 [build]" ;;
esac
