#!/usr/bin/env bash
# Benchmark: the CLV fit and scoring at scale. Generates the 10M-order lake (5.4M customers
# sign up, about 4.7M of them buy), runs what customer_ltv needs, and times the fit (clv_model)
# and the scoring (customer_ltv) together; figures in docs/BENCHMARKS.md.
# Usage: bash benches/clv.sh [CUSTOMERS]   (needs a release build: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-5400000}"
source benches/project.sh

project=(-C "$work/project" --raw "$work/raw" --curated "$work/curated")
/usr/bin/time -f "generate: wall %e s, max RSS %M KiB" \
  "$bin" generate --customers "$customers" --out "$work/raw" > /dev/null
# The upstream jobs, each in its own process (one process for all of them hits issue 12's
# cross-job memory reservation failure in customer_summary).
for job in order_experience customer_summary; do
  /usr/bin/time -f "$job: wall %e s, max RSS %M KiB" \
    "$bin" "${project[@]}" run "$job" 2>&1 | grep -v INFO | tail -3
done
echo "## the fit and the scoring ($customers customers signed up)"
/usr/bin/time -f "clv_model + customer_ltv: wall %e s, max RSS %M KiB" \
  "$bin" "${project[@]}" run clv_model customer_ltv 2>&1 | grep -v INFO | tail -5
"$bin" "${project[@]}" query \
  "SELECT model, customers, converged, iterations, round(log_likelihood, 1) AS log_likelihood FROM clv_model" 2>/dev/null
