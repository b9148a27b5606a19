#!/usr/bin/env bash
# Benchmark: the nightly run of the incremental marts after one new day, against a full rebuild
# of the same lake, at 1 and at 2 years of history. The lake's period is 25 months from
# 2024-01-01, cut with `generate --through`; "one new day" is `generate --through` the next day.
# Each night is timed after the night before it ran; the rebuild runs on an empty curated root.
# Both must give the same rows (checksums printed side by side). Figures: docs/BENCHMARKS.md.
# Usage: bash benches/incremental.sh [CUSTOMERS]
#   540000 (default): about 1M orders at 2 years; 5400000: about 10M. Needs a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-540000}"
source benches/project.sh
marts=(order_experience fulfillment_sla)

generate_through() {
  /usr/bin/time -f "  generate --through $1: wall %e s" \
    "$bin" generate --customers "$customers" --months 25 --start 2024-01-01 --through "$1" \
    --out "$work/raw" | grep -E "^orders:|written to"
}

# Run the marts on curated root $1; print wall time, and each job's seconds and rows written.
run_marts() {
  local curated="$work/$1" label="$2"
  /usr/bin/time -f "  $label: wall %e s, max RSS %M KiB" \
    "$bin" -C "$work/project" --raw "$work/raw" --curated "$curated" run "${marts[@]}" \
    2>&1 | grep -E "wall" || true
  "$bin" -C "$work/project" --raw "$work/raw" --curated "$curated" query \
    "SELECT job, round(CAST(finished_at - started_at AS BIGINT) / 1e6, 2) AS seconds, rows_written,
            interval_start, interval_end
     FROM (SELECT *, row_number() OVER (PARTITION BY job ORDER BY started_at DESC) AS n FROM _runs)
     WHERE n = 1 ORDER BY job" 2>/dev/null
}

checksum() {
  "$bin" -C "$work/project" --raw "$work/raw" --curated "$work/$1" query \
    "SELECT (SELECT count(*) FROM order_experience) AS orders,
            (SELECT sum(net_revenue) FROM order_experience) AS net_revenue,
            (SELECT count(*) FILTER (WHERE bad_experience) FROM order_experience) AS bad,
            (SELECT sum(shipped_orders * 1000 + refunds + tickets) FROM fulfillment_sla) AS sla" \
    2>/dev/null
}

for history in "1 year:2024-12-30:2024-12-31" "2 years:2025-12-30:2025-12-31"; do
  IFS=: read -r label before night <<<"$history"
  echo "## $label of history ($customers customers over the 25-month period)"
  generate_through "$before"
  run_marts nightly "catch up through $before"
  generate_through "$night"
  run_marts nightly "nightly run for $night"
  rm -rf "$work/rebuild"
  run_marts rebuild "full rebuild through $night"
  echo "  nightly vs rebuild rows:"
  checksum nightly
  checksum rebuild
done
