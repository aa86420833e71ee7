#!/usr/bin/env bash
# The local test stack: a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler), kwok playing the kubelets, and moto playing AWS,
# all as processes on loopback. No Docker. hack/stack/eks_auth.py plays EKS Auth and the EKS Pod
# Identity Agent, which no emulator serves.
#
# With WINDLASS_STACK_AWS=localstack, LocalStack plays AWS instead of moto (in host mode, as a
# process: SQS, EC2, SSM, IAM and STS; it has no EKS). `up` starts the backend asked for (moto
# when unset), restarting a stack that runs the other one; `env` describes the running stack.
#
#   hack/stack/stack.sh build   build the Go binaries and the moto virtualenv (cached), and the
#                               LocalStack virtualenv when WINDLASS_STACK_AWS=localstack
#   hack/stack/stack.sh up      start everything (idempotent) and print the environment
#   hack/stack/stack.sh env     print the environment of a running stack
#   hack/stack/stack.sh down    stop everything and delete the cluster's data
#   hack/stack/stack.sh check   the unit tests of the stack's own Python services
#   hack/stack/stack.sh spare-apiserver PORT
#                               a second kube-apiserver of the running cluster on PORT, in the
#                               foreground (tests stop and start it)
#
# Binaries are built with `go build` from the pinned modules under hack/stack/<component>/ and
# cached in $WINDLASS_CACHE (default ~/.cache/windlass), keyed by version.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${WINDLASS_CACHE:-$HOME/.cache/windlass}
state=${WINDLASS_STACK_DIR:-$cache/stack}
etcd_port=${WINDLASS_STACK_ETCD_PORT:-23790}
api_port=${WINDLASS_STACK_API_PORT:-16443}
moto_port=${WINDLASS_STACK_MOTO_PORT:-15000}
eks_auth_port=${WINDLASS_STACK_EKS_AUTH_PORT:-15010}
localstack_port=${WINDLASS_STACK_LOCALSTACK_PORT:-14566}
kcm_port=${WINDLASS_STACK_KCM_PORT:-20257}
scheduler_port=${WINDLASS_STACK_SCHEDULER_PORT:-20259}
kwok_port=${WINDLASS_STACK_KWOK_PORT:-20247}
region=${AWS_REGION:-us-east-1}
cluster_name=${WINDLASS_CLUSTER_NAME:-windlass-local}
moto_version=5.2.5
localstack_version=2026.3.0
admin_token=windlass-local-admin

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

# The version a wrapper module pins, read from its go.mod so there is one source of truth.
pinned_version() { awk -v mod="$2" '($1 == "require" && $2 == mod) {print $3} ($1 == mod) {print $2}' "$here/$1/go.mod" | head -n1; }

bin_dir() { echo "$cache/$1-$(pinned_version "$1" "$2")/bin"; }
k8s_bin=$(bin_dir kubernetes k8s.io/kubernetes)
etcd_bin=$(bin_dir etcd go.etcd.io/etcd/server/v3)
kwok_bin=$(bin_dir kwok sigs.k8s.io/kwok)
helm_bin=$(bin_dir helm helm.sh/helm/v3)
moto_venv=$cache/moto-$moto_version
localstack_venv=$cache/localstack-$localstack_version

# use_backend moto|localstack: which emulator plays AWS, its port and the access key to sign with.
use_backend() {
  aws_backend=$1
  case $aws_backend in
    moto)
      aws_port=$moto_port
      # moto puts every request signed with keys it did not issue in its account 123456789012.
      access_key_id=testing
      ;;
    localstack)
      aws_port=$localstack_port
      # LocalStack takes a 12-digit access key as the account: moto's, which the tests' ARNs name.
      access_key_id=123456789012
      ;;
    *) die "WINDLASS_STACK_AWS is moto or localstack, not '$aws_backend'" ;;
  esac
}
use_backend "${WINDLASS_STACK_AWS:-moto}"

# go build every `tool` of a wrapper module into $2, with the extra linker flags $3; once per
# set of flags (.complete records them).
build_module() {
  local module=$1 out=$2 ldflags="-s -w ${3:-}"
  [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" = "$ldflags" ] && return 0
  local tools
  tools=$(awk '/^tool \(/{inside=1; next} inside && /^\)/{inside=0} inside{print $1} /^tool [^(]/{print $2}' "$here/$module/go.mod")
  log "building $module ($(basename "$(dirname "$out")")) ..."
  mkdir -p "$out"
  local started=$SECONDS
  (cd "$here/$module" && go build -trimpath -ldflags="$ldflags" -o "$out/" $tools)
  printf '%s' "$ldflags" > "$out/.complete"
  log "built $module in $((SECONDS - started))s"
}

# The version the Kubernetes binaries report, stamped as Kubernetes' own release build does: a
# module build otherwise reports v0.0.0-master, which clients that check the server version
# (helm's kubeVersion) refuse.
k8s_version_ldflags() {
  local version major minor flags=""
  version=$(pinned_version kubernetes k8s.io/kubernetes)
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major"
    flags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
  done
  echo "${flags# }"
}

build() {
  build_module kubernetes "$k8s_bin" "$(k8s_version_ldflags)"
  build_module etcd "$etcd_bin"
  # etcd's main package is its server module, so go names the binary after that: server.
  if [ -e "$etcd_bin/server" ]; then mv -f "$etcd_bin/server" "$etcd_bin/etcd"; fi
  build_module kwok "$kwok_bin"
  build_module helm "$helm_bin"
  if [ ! -x "$moto_venv/bin/moto_server" ]; then
    log "creating the moto $moto_version virtualenv ..."
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version"
  fi
  if [ "$aws_backend" = localstack ]; then build_localstack; fi
}

# A Python for LocalStack: it needs 3.13 or newer (it imports warnings.deprecated). The first of
# WINDLASS_STACK_PYTHON, python3, python3.13+ on PATH and pyenv's installed versions that is.
localstack_python() {
  local candidate
  for candidate in "${WINDLASS_STACK_PYTHON:-}" python3 python3.14 python3.13 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  die "LocalStack $localstack_version needs Python 3.13 or newer: install one, or name it in WINDLASS_STACK_PYTHON"
}

# LocalStack's virtualenv, every package pinned by hack/stack/localstack-constraints.txt; rebuilt
# when that file changes (.complete holds its checksum).
build_localstack() {
  local constraints=$here/localstack-constraints.txt checksum python
  checksum=$(sha256sum < "$constraints" | cut -d' ' -f1)
  [ -f "$localstack_venv/.complete" ] && [ "$(cat "$localstack_venv/.complete")" = "$checksum" ] && return 0
  python=$(localstack_python)
  log "creating the LocalStack $localstack_version virtualenv with $("$python" --version) ..."
  local started=$SECONDS
  rm -rf "$localstack_venv"
  "$python" -m venv "$localstack_venv"
  "$localstack_venv/bin/pip" install --quiet --disable-pip-version-check \
    --constraint "$constraints" "localstack-core[runtime]==$localstack_version"
  printf '%s' "$checksum" > "$localstack_venv/.complete"
  log "built the LocalStack virtualenv in $((SECONDS - started))s"
}

pki() {
  local dir=$state/pki
  [ -f "$dir/.complete" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=windlass-local-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    printf '%s,admin,admin,system:masters\n' "$admin_token" > tokens.csv
    touch .complete
  )
}

kubeconfig() {
  local ca
  ca=$(base64 -w0 < "$state/pki/ca.crt")
  cat > "$state/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $cluster_name
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $ca
users:
- name: admin
  user:
    token: $admin_token
contexts:
- name: $cluster_name
  context:
    cluster: $cluster_name
    user: admin
current-context: $cluster_name
EOF
}

running() { [ -f "$state/pids/$1" ] && kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; }

# start NAME COMMAND... : run in its own session, logging to $state/logs/NAME.log.
start() {
  local name=$1; shift
  running "$name" && return 0
  mkdir -p "$state/pids" "$state/logs"
  setsid "$@" >"$state/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$state/pids/$name"
}

# wait_for WHAT SECONDS COMMAND... : until COMMAND succeeds; on timeout show the log and fail.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$state/logs/$what.log" >&2 2>/dev/null || true
      die "$what not ready after ${limit}s (log: $state/logs/$what.log)"
    fi
    running "$what" || { tail -n 30 "$state/logs/$what.log" >&2; die "$what exited (log: $state/logs/$what.log)"; }
    sleep 0.5
  done
}

kubectl_() { "$k8s_bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

api_ready() {
  curl -sf --cacert "$state/pki/ca.crt" -H "Authorization: Bearer $admin_token" \
    "https://127.0.0.1:$1/readyz" | grep -q ok
}

# apiserver PORT FLAGS...: becomes a kube-apiserver of the stack's cluster serving on PORT. The
# stack's own runs this way; so does a spare one beside it (`spare-apiserver`), which a test
# stops and starts to show a controller its API server restarting.
apiserver() {
  local port=$1 pki=$state/pki; shift
  exec "$k8s_bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged --profiling=false --cert-dir "$state/apiserver-$port" "$@"
}

# spare-apiserver PORT: a second kube-apiserver on the running stack's etcd, in the foreground
# until killed; no audit log (the suite's RBAC check reads the stack's own).
spare_apiserver() {
  local port=${1:?usage: $0 spare-apiserver PORT}
  running kube-apiserver || die "the stack is not up"
  apiserver "$port"
}

default_service_account() { kubectl_ get serviceaccount default -n default; }

localstack_ready() {
  curl -sf "http://127.0.0.1:$localstack_port/_localstack/init/ready" | grep -q '"completed": true'
}

# LocalStack in host mode, its files under $state/localstack. Its start hook
# (hack/stack/localstack_start.py) makes moto_server.py's changes to the moto models it serves
# EC2, SSM, IAM and STS from. Nothing of it reaches beyond loopback: no DNS server, no
# certificate download, no usage events.
start_localstack() {
  local root=$state/localstack
  mkdir -p "$root/etc/localstack/init/start.d"
  cp "$here/localstack_start.py" "$root/etc/localstack/init/start.d/"
  start localstack env OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$root" \
    GATEWAY_LISTEN="127.0.0.1:$localstack_port" LOCALSTACK_HOST="127.0.0.1:$localstack_port" \
    SERVICES=sqs,ec2,ssm,iam,sts SQS_ENDPOINT_STRATEGY=path \
    DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 WINDLASS_STACK_HOOKS="$here" \
    "$localstack_venv/bin/python" -m localstack.runtime.main
}

up() {
  local started=$SECONDS component
  # moto holds AWS in memory while etcd keeps the cluster on disk: a stack that did not survive
  # whole (a reboot, a killed session) would keep Nodes and NodeClaims for instances moto no
  # longer has, and a new instance could get a stale Node's name. Such a stack starts afresh.
  for component in etcd kube-apiserver kube-controller-manager kube-scheduler kwok "$aws_backend" eks-auth; do
    if ! running "$component"; then down; break; fi
  done
  build
  pki
  kubeconfig
  local pki=$state/pki
  start etcd "$etcd_bin/etcd" --name windlass-local --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 10))" \
    --initial-cluster "windlass-local=http://127.0.0.1:$((etcd_port + 10))" \
    --listen-metrics-urls "http://127.0.0.1:$((etcd_port + 20))" --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  start kube-apiserver "$here/stack.sh" apiserver "$api_port" \
    --audit-policy-file "$here/audit-policy.yaml" --audit-log-format json \
    --audit-log-path "$state/logs/audit.log" --audit-log-maxsize 0
  wait_for kube-apiserver 90 api_ready "$api_port"

  start kube-controller-manager "$k8s_bin/kube-controller-manager" \
    --kubeconfig "$state/kubeconfig" --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --leader-elect=false --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --controllers '*' --node-monitor-grace-period 60s --profiling=false
  start kube-scheduler "$k8s_bin/kube-scheduler" \
    --kubeconfig "$state/kubeconfig" --bind-address 127.0.0.1 --secure-port "$scheduler_port" \
    --leader-elect=false --profiling=false
  start kwok "$kwok_bin/kwok" --kubeconfig "$state/kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$kwok_port" --node-lease-duration-seconds 40 \
    --config "$here/kwok-stages.yaml"
  printf '%s' "$aws_backend" > "$state/aws-backend"
  if [ "$aws_backend" = localstack ]; then
    start_localstack
  else
    start moto "$moto_venv/bin/python" "$here/moto_server.py" -H 127.0.0.1 -p "$moto_port"
  fi
  start eks-auth "$moto_venv/bin/python" "$here/eks_auth.py" --port "$eks_auth_port" \
    --api-server "https://127.0.0.1:$api_port" --ca-file "$pki/ca.crt" --token "$admin_token" \
    --aws-endpoint "http://127.0.0.1:$aws_port" --access-key-id "$access_key_id" --region "$region"

  wait_for kube-controller-manager 60 default_service_account
  # The cluster DNS Service an EKS cluster has; Windlass tells nodes its address. Nothing
  # answers on it here: kwok's pods resolve nothing.
  kubectl_ apply -f "$here/kube-dns.yaml" > /dev/null
  if [ "$aws_backend" = localstack ]; then
    wait_for localstack 90 localstack_ready
    curl -sf "http://127.0.0.1:$localstack_port/_localstack/init/start" | grep -q '"state": "SUCCESSFUL"' ||
      die "LocalStack's start hook failed (log: $state/logs/localstack.log)"
  else
    wait_for moto 30 curl -sf "http://127.0.0.1:$moto_port/moto-api/"
  fi
  wait_for eks-auth 30 curl -sf "http://127.0.0.1:$eks_auth_port/healthz"
  AWS_ENDPOINT_URL="http://127.0.0.1:$aws_port" AWS_REGION=$region \
    AWS_ACCESS_KEY_ID=$access_key_id AWS_SECRET_ACCESS_KEY=testing \
    "$moto_venv/bin/python" "$here/aws_fixture.py" "$cluster_name" > "$state/aws-fixture.json"
  log "up in $((SECONDS - started))s"
  env_
}

# The environment of the running stack, whichever backend it was started with.
env_() {
  if [ -f "$state/aws-backend" ]; then use_backend "$(cat "$state/aws-backend")"; fi
  cat <<EOF
export KUBECONFIG=$state/kubeconfig
export AWS_ENDPOINT_URL=http://127.0.0.1:$aws_port
export AWS_REGION=$region
export AWS_ACCESS_KEY_ID=$access_key_id
export AWS_SECRET_ACCESS_KEY=testing
export AWS_ENDPOINT_URL_EKS_AUTH=http://127.0.0.1:$eks_auth_port
export WINDLASS_CLUSTER_NAME=$cluster_name
export WINDLASS_STACK_AWS=$aws_backend
export WINDLASS_STACK_FIXTURE=$state/aws-fixture.json
export WINDLASS_AUDIT_LOG=$state/logs/audit.log
export WINDLASS_AWS_CALL_LOG=$state/logs/aws-calls.log
export PATH=$k8s_bin:$helm_bin:\$PATH
EOF
}

down() {
  local name pid
  for name in eks-auth moto localstack kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$state/pids/$name" ] || continue
    pid=$(cat "$state/pids/$name")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$state/pids/$name"
  done
  rm -rf "$state/etcd" "$state"/apiserver-* "$state/kubeconfig" "$state/aws-fixture.json" \
    "$state/logs/audit.log" "$state/logs/aws-calls.log" "$state/localstack" "$state/aws-backend"
  log "down"
}

case ${1:-} in
  build) build ;;
  up) up ;;
  env) env_ ;;
  down) down ;;
  check) "$moto_venv/bin/python" -m unittest discover -s "$here" -p '*_test.py' ;;
  apiserver) shift; apiserver "$@" ;;
  spare-apiserver) spare_apiserver "${2:-}" ;;
  *) die "usage: $0 build|up|env|down|check|spare-apiserver PORT" ;;
esac
