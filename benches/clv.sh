#!/usr/bin/env bash
# Benchmark: the CLV fit and scoring at scale. Generates the 10M-order lake (5.4M customers
# sign up, about 4.7M of them buy), runs what customer_ltv needs, and prints each job's time:
# clv_model is the fit, customer_ltv the scoring.
# Usage: bash benches/clv.sh [CUSTOMERS]   (needs a release build: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-5400000}"
source benches/project.sh

"$bin" generate --customers "$customers" --out "$work/raw" > /dev/null
echo "## run +customer_ltv ($customers customers signed up)"
/usr/bin/time -f "wall %e s, max RSS %M KiB" \
  "$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" run +customer_ltv 2>&1 \
  | grep -v INFO | tail -12
"$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" query \
  "SELECT model, customers, converged, iterations, round(log_likelihood, 1) AS log_likelihood FROM clv_model" 2>/dev/null
