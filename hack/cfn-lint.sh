#!/usr/bin/env bash
# docs/iam/cloudformation.yaml through cfn-lint from PyPI, in a virtualenv cached outside the
# clone.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.58.0
venv=${WINDLASS_CACHE:-$HOME/.cache/windlass}/cfn-lint-$version
if [ ! -x "$venv/bin/cfn-lint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==$version"
fi
"$venv/bin/cfn-lint" docs/iam/cloudformation.yaml
echo "cfn-lint $version: docs/iam/cloudformation.yaml is clean"
