#!/usr/bin/env bash
# Several instances on one PostgreSQL (BENCHMARKS.md section 8). Usage: scripts/bench-cluster.sh
# PATH/TO/FCGIApp [BUILD], BUILD naming the build in the report (`make bench`: release).
# Knobs: BENCH_CLUSTER_JOBS (1000), BENCH_OUTPUT (BENCHMARKS.md at the repository root).
set -euo pipefail
binary=$(cd "$(dirname "${1:?usage: bench-cluster.sh PATH/TO/FCGIApp}")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
output=${BENCH_OUTPUT:-$here/BENCHMARKS.md}
if [ -n "${MAKELEVEL:-}" ]; then command_line="make bench"; else command_line="scripts/bench-cluster.sh $1"; fi
results=$(mktemp "${TMPDIR:-/tmp}/gw-cluster-bench.XXXXXX.json")
trap 'rm -f "$results"' EXIT
python3 "$here/Tests/Bench/cluster_bench.py" run --binary "$binary" --jobs "${BENCH_CLUSTER_JOBS:-1000}" --out "$results"
# The section is replaced, not appended twice.
python3 - "$output" <<'PY'
import sys, re
path = sys.argv[1]
text = open(path).read()
open(path, "w").write(re.sub(r"\n## 8\. Several instances on one PostgreSQL\n.*", "\n", text, flags=re.S).rstrip("\n") + "\n")
PY
python3 "$here/Tests/Bench/cluster_bench.py" report --results "$results" --output "$output" --command "$command_line" --build "${2:-release}"
