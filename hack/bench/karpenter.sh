#!/usr/bin/env bash
# Karpenter's scheduling benchmark and Windlass' simulation side by side, on the same pods,
# instance types and prices (issue 18). Not in CI: it builds Karpenter's Go module and runs
# for several minutes.
#
#   hack/bench/karpenter.sh
#   CASES="1000 10000" REPEATS=1 hack/bench/karpenter.sh   # cases of: 1000 5000 10000 20000 preferences-4000
#
# 1. Builds the test binary of sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling
#    at the version hack/bench/karpenter/go.mod pins, with its build tag test_performance,
#    plus our hack/bench/karpenter/testdata/windlass_world_test.go (tag windlass_world).
# 2. Runs our TestWindlassWorld once: for each case it draws the benchmark's pods from the
#    benchmark's own generator (seed 42, as when that benchmark runs alone), writes them with
#    the 400 fake instance types (allocatable, offerings, prices) to JSON, and runs one
#    Karpenter Solve on them for its NodeClaims, $/hour and CPU seconds.
# 3. For each case, REPEATS times, alternating: Karpenter's own benchmark alone in a fresh
#    process (`-benchtime=1x`, so one Solve on exactly those pods), then Windlass'
#    benches/karpenter_world on the JSON (one solve in a fresh process).
# 4. Prints one table: medians over the repetitions.
#
# Needs go (run as GOTOOLCHAIN=local), cargo, jq and python3; Go's caches are its defaults
# (~/go, ~/.cache/go-build), outside the repository.
set -euo pipefail
cd "$(dirname "$0")/../.."

cases=${CASES:-"1000 5000 10000 20000 preferences-4000"}
repeats=${REPEATS:-3}
export GOTOOLCHAIN=local
wrapper=$PWD/hack/bench/karpenter
package=sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling
work=$(mktemp -d "${TMPDIR:-/tmp}/windlass-karpenter.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=$work/results

benchmark_of() {
  case $1 in
    preferences-4000) echo BenchmarkRespectPreferences ;;
    *) echo "BenchmarkScheduling$1" ;;
  esac
}

version=$(cd "$wrapper" && go list -m -f '{{.Version}}' sigs.k8s.io/karpenter)
echo "== building Karpenter $version's scheduling benchmark ($(go version))" >&2
source=$(cd "$wrapper" && go mod download -json sigs.k8s.io/karpenter | jq -r .Dir)
# go refuses overlays of files in its module cache, so our file joins a copy of the module,
# kept at one path beside Go's caches so that Go's build cache serves the next run.
copy=${XDG_CACHE_HOME:-$HOME/.cache}/windlass/karpenter-bench
rm -rf "$copy"
mkdir -p "$copy"
cp -r "$source" "$copy/karpenter"
chmod -R u+w "$copy/karpenter"
cp "$wrapper/testdata/windlass_world_test.go" "$copy/karpenter/${package#sigs.k8s.io/karpenter/}/"
cp "$wrapper/go.mod" "$wrapper/go.sum" "$copy/"
go mod edit -replace "sigs.k8s.io/karpenter=$copy/karpenter" "$copy/go.mod"
go_start=$SECONDS
(cd "$wrapper" && go test -c -modfile="$copy/go.mod" -tags 'test_performance windlass_world' \
  -o "$work/scheduling.test" "$package")
go_build=$((SECONDS - go_start))

echo "== generating the worlds (one Karpenter Solve each)" >&2
mkdir "$work/worlds"
pattern=$(echo "$cases" | tr ' ' '|')
(cd "$work" && WINDLASS_WORLD_DIR="$work/worlds" ./scheduling.test \
  -test.run "^TestWindlassWorld\$/^($pattern)\$") | grep '^karpenter ' | tee -a "$results" >&2

echo "== building Windlass' benches/karpenter_world" >&2
windlass=$(cargo bench --workspace --locked --bench karpenter_world --no-run --message-format=json |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "karpenter_world") | .executable')

for case in $cases; do
  benchmark=$(benchmark_of "$case")
  for repeat in $(seq "$repeats"); do
    echo "== $case pods, repetition $repeat: Karpenter's $benchmark, then Windlass" >&2
    (cd "$work" && ./scheduling.test -test.run '^$' -test.bench "^$benchmark\$" \
      -test.benchtime 1x -test.count 1) |
      awk -v case="$case" '/^Benchmark/ {
          for (i = 2; i < NF; i++) {
            if ($(i + 1) == "ns/op") ns = $i
            if ($(i + 1) == "nodes") nodes = $i
          }
          printf "karpenter-benchmark case=%s seconds=%.6f node_claims=%d\n", case, ns / 1e9, nodes
        }' | tee -a "$results" >&2
    "$windlass" "$work/worlds/world-$case.json" | tee -a "$results" >&2
  done
done

cat <<EOF

Karpenter $version ($package, -tags test_performance, GOTOOLCHAIN=local $(go version | cut -d' ' -f3)) against Windlass $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with uncommitted changes)')
$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB; Go test binary built in ${go_build} s
EOF
python3 - "$results" "$repeats" <<'EOF'
import statistics, sys

rows = {}
for line in open(sys.argv[1]):
    side, *fields = line.split()
    values = dict(field.split("=", 1) for field in fields)
    rows.setdefault((values["case"], side), []).append(values)

def median(case, side, key):
    return statistics.median(float(v[key]) for v in rows[(case, side)])

def duration(seconds):
    return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"

cases = list(dict.fromkeys(case for case, _ in rows))
print(f"| case | side | time per solve (median of {sys.argv[2]}) | pods/s | CPU s per solve | NodeClaims | $/hour | ÷ lower bound |")
# Karpenter's CPU seconds, NodeClaims and $/hour are those of the one Solve that generated the
# world (TestWindlassWorld), whose wall time the CPU cell gives; its time per solve is its benchmark's.
print("|---|---|---:|---:|---:|---:|---:|---:|")
for case in cases:
    pods = int(rows[(case, "windlass")][0]["pods"])
    bound = median(case, "windlass", "lower_bound")
    karpenter_seconds = median(case, "karpenter-benchmark", "seconds")
    windlass_seconds = median(case, "windlass", "seconds")
    karpenter = rows[(case, "karpenter")][0]
    benchmark_nodes = {v["node_claims"] for v in rows[(case, "karpenter-benchmark")]}
    note = "" if benchmark_nodes == {karpenter["node_claims"]} else f" (benchmark: {', '.join(sorted(benchmark_nodes))})"
    label = f"{pods:,} pods" + (", preferences" if case.startswith("preferences") else "")
    print(f"| {label} | Karpenter | {duration(karpenter_seconds)} | {pods / karpenter_seconds:,.0f} "
          f"| {float(karpenter['cpu_seconds']):.2f} (in {duration(float(karpenter['seconds']))}) | {karpenter['node_claims']}{note} "
          f"| {float(karpenter['dollars_per_hour']):,.2f} | {float(karpenter['dollars_per_hour']) / bound:.2f} |")
    print(f"| | Windlass ({karpenter_seconds / windlass_seconds:,.0f}× faster) | {duration(windlass_seconds)} "
          f"| {pods / windlass_seconds:,.0f} | {median(case, 'windlass', 'cpu_seconds'):.3f} "
          f"| {rows[(case, 'windlass')][0]['node_claims']} | {median(case, 'windlass', 'dollars_per_hour'):,.2f} "
          f"| {median(case, 'windlass', 'dollars_per_hour') / bound:.2f} |")
    print(f"| | fractional lower bound | | | | | {bound:,.2f} | 1.00 |")
unplaced = [(case, side) for (case, side), vs in rows.items() if side != "karpenter-benchmark" and any(v["unplaced"] != "0" for v in vs)]
if unplaced:
    print("\nunplaced pods in: " + ", ".join(f"{side} {case}" for case, side in unplaced))
EOF
