#!/usr/bin/env bash
# The whole DAG on retention and on DuckDB side by side, with per-job times, the ratio and a row check.
# Usage: bash benches/dag.sh [CUSTOMERS] [RUNS] [-- dag_duckdb.py flags]
#   540000 customers is about 1M orders, 5400000 about 10M (the default).
# Needs a release build (cargo build --release) and python3 with duckdb (pip install duckdb==2.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-5400000}"
runs="${2:-3}"
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
source benches/project.sh

"$bin" generate --customers "$customers" --out "$work/raw" >/dev/null
echo "lake: $customers customers, $(du -sh "$work/raw" | cut -f1); $(nproc) cores; $(git rev-parse --short HEAD)"
python3 benches/dag_duckdb.py "$work/raw" "$work/project" "$bin" --runs "$runs" "$@"
