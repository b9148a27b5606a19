#!/usr/bin/env bash
# Benchmark: object store requests of one `run --all`, and its wall time when every request waits
# as a cloud store's round trip would (--store-latency, default 20ms). Prints the run's request
# counts by kind (lists, footer reads, range reads, whole reads and heads, writes), then the wall
# time without and with the latency. Figures: docs/BENCHMARKS.md.
# Usage: bash benches/store_latency.sh [CUSTOMERS] [LATENCY]   (default 20000 and 20ms)
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-20000}" latency="${2:-20ms}"
source benches/project.sh
"$bin" generate --customers "$customers" --out "$work/raw" | grep -E "^orders:"
echo "raw files: $(find "$work/raw" -type f | wc -l)"
run() {
  rm -rf "$work/curated"
  local started ended
  started=$(date +%s.%N)
  "$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" "$@" run --all 2>/dev/null \
    | grep -E "^object store requests"
  ended=$(date +%s.%N)
  echo "wall: $(echo "$ended - $started" | bc) s"
}
echo "== no added latency"
run
echo "== every request waits $latency"
run --store-latency "$latency"
