#!/usr/bin/env bash
# The whole DAG on a distributed engine: a coordinator and N `retention worker` processes on this
# machine, against a local run of the same lake; wall times, the fragments each worker ran, and a
# check that every curated table has the same rows (sorted CSV, SHA-256).
# Usage: bash benches/cluster.sh [CUSTOMERS] [WORKERS] [BYTES_PER_TASK]
#   540000 customers is about 1M orders. BYTES_PER_TASK is the planner's
#   distributed.file_scan_config_bytes_per_partition (default 16777216, datafusion-distributed's).
# Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-540000}"
workers="${2:-2}"
bytes_per_task="${3:-16777216}"
source benches/project.sh
printf '"distributed.file_scan_config_bytes_per_partition" = %s\n' "$bytes_per_task" >> "$work/project/retention.toml"
export RETENTION_WORKER_TOKEN="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
retention() { "$bin" -C "$work/project" --raw "$work/raw" "$@"; }

"$bin" generate --customers "$customers" --out "$work/raw" >/dev/null
echo "lake: $customers customers, $(du -sh "$work/raw" | cut -f1); $(nproc) cores; $(git rev-parse --short HEAD)"

pids=()
addresses=()
for i in $(seq 1 "$workers"); do
  RUST_LOG=retention=debug NO_COLOR=1 retention worker --listen 127.0.0.1:0 \
    > "$work/w$i.out" 2> "$work/w$i.log" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
for i in $(seq 1 "$workers"); do
  until grep -q listening "$work/w$i.out" 2>/dev/null; do sleep 0.1; done
  addresses+=("$(sed 's/worker listening on //' "$work/w$i.out")")
done

timed() {
  local label="$1" curated="$2" started ended
  shift 2
  started=$(date +%s.%N)
  retention --curated "$curated" "$@" run --all >/dev/null 2>&1
  ended=$(date +%s.%N)
  echo "$label: $(echo "$ended - $started" | bc) s"
}
sums() {
  for table in $(ls "$1" | grep -v '^_'); do
    retention --curated "$1" export "$table" --format csv --out "$work/export" >/dev/null 2>&1
    echo "$table $(sort "$work/export"/*.csv | sha256sum | cut -c1-16)"
    rm -rf "$work/export"
  done
}
timed "local" "$work/local"
timed "distributed on $workers workers" "$work/distributed" --workers "$(IFS=,; echo "${addresses[*]}")"
for i in $(seq 1 "$workers"); do
  echo "worker $i ran $(grep -c 'plan fragment received' "$work/w$i.log") fragments"
done
sums "$work/local" > "$work/sums.local"
sums "$work/distributed" > "$work/sums.distributed"
if diff "$work/sums.local" "$work/sums.distributed" >/dev/null; then
  echo "all $(wc -l < "$work/sums.local") tables identical"
else
  diff "$work/sums.local" "$work/sums.distributed"
  exit 1
fi
