#!/usr/bin/env bash
# Benchmark: object store requests of one `run --all`, and its wall time when every request waits
# as a cloud store's round trip would (--store-latency, default 20ms), without and with the read
# cache of small Parquet files (storage.read_cache). Prints each run's request counts by kind
# (lists, footer reads, range reads, whole reads and heads, writes) and wall time, then checks
# that the four runs published the same rows (every job's table exported as CSV, lines sorted,
# SHA-256). Figures: docs/BENCHMARKS.md.
# Usage: bash benches/store_latency.sh [CUSTOMERS] [LATENCY]   (default 20000 and 20ms)
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-20000}" latency="${2:-20ms}"
source benches/project.sh
"$bin" generate --customers "$customers" --out "$work/raw" | grep -E "^orders:"
echo "raw files: $(find "$work/raw" -name '*.parquet' | wc -l)"
retention() { "$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" "$@"; }
run() {
  local label="$1" started ended
  shift
  rm -rf "$work/curated"
  echo "== $label"
  started=$(date +%s.%N)
  retention "$@" run --all 2>/dev/null | grep -E "^(object store requests|read cache)"
  ended=$(date +%s.%N)
  echo "wall: $(echo "$ended - $started" | bc) s"
  for table in $(ls "$work/curated" | grep -v '^_'); do
    retention export "$table" --format csv --out "$work/export" >/dev/null 2>&1
    echo "$table $(cat "$work/export"/*.csv | sort | sha256sum | cut -c1-16)"
    rm -rf "$work/export"
  done > "$work/sums.$label"
}
run "no added latency, no read cache" --read-cache off
run "no added latency, read cache" --read-cache 256MiB
run "every request waits $latency, no read cache" --read-cache off --store-latency "$latency"
run "every request waits $latency, read cache (auto)" --store-latency "$latency"
first="$work/sums.no added latency, no read cache"
echo "tables compared: $(wc -l < "$first")"
for f in "$work"/sums.*; do
  diff -q "$first" "$f" >/dev/null || { echo "DIFFERENT ROWS: $f"; diff "$first" "$f"; exit 1; }
done
echo "all four runs published the same rows"
