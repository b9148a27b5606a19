#!/usr/bin/env bash
# Benchmarks: generator throughput and memory, the full run, and the same SQL on DuckDB.
# Usage: bash benches/run.sh [CUSTOMERS]   (default 5,400,000 customers: about 10M orders)
# Needs a release build (cargo build --release) and python3 with duckdb (pip install duckdb).
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-5400000}"
source benches/project.sh

echo "## generate --customers $customers"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" generate --customers "$customers" --out "$work/raw" 2>&1 | tail -20
du -sh "$work/raw"

echo "## run --all"
/usr/bin/time -f "wall %e s, max RSS %M KiB" "$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" run --all 2>&1 | grep -v INFO | tail -16

echo "## same SQL, DuckDB"
python3 benches/compare_duckdb.py "$work/raw" "$bin"
