#!/usr/bin/env bash
# Finance benchmark: about 1.1M ledger entries through the reconciliation, a month close, a run
# after the close (closed months overlaid from their snapshots), and the XLSX and CSV exports.
# Usage: bash benches/finance.sh [LEDGER_LINES]   (default 5000 lines per booked entry)
# Needs a release build (cargo build --release); python3 with duckdb for the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
lines="${1:-5000}"
source benches/project.sh
r=("$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated")
t() { /usr/bin/time -f "  wall %e s, max RSS %M KiB" "$@"; }
export RUST_LOG=warn RETENTION_ACTOR=bench

echo "## generate --customers 2000 --ledger-lines $lines"
t "$bin" generate --customers 2000 --ledger-lines "$lines" --out "$work/raw" 2>&1 | grep -E "spend_ledger|wall"
echo "## run +budget_reconciliation reconciliation_exceptions (first run: the marts program_roi reads too)"
t "${r[@]}" run +budget_reconciliation reconciliation_exceptions > /dev/null
echo "## run tag:finance (the finance jobs alone)"
t "${r[@]}" run budget_plan_current budget_reconciliation_entries budget_reconciliation reconciliation_exceptions close_candidates 2>&1 | grep -E "budget|recon|close|wall"
echo "## close-month 2025-06 (runs the close's jobs, then freezes)"
t "${r[@]}" close-month 2025-06 2>&1 | grep -E "closed|frozen|wall"
echo "## the finance jobs again, with 2025-06 closed (overlaid from its snapshot)"
t "${r[@]}" run budget_plan_current budget_reconciliation_entries budget_reconciliation reconciliation_exceptions close_candidates 2>&1 | grep -E "wall"
echo "## export --format xlsx / csv for 2025-06"
t "${r[@]}" export budget_reconciliation --month 2025-06 --format xlsx --out "$work/export" 2>&1 | grep -E "wrote|wall"
t "${r[@]}" export budget_reconciliation --month 2025-06 --format csv --out "$work/export" 2>&1 | grep -E "wrote|wall"
ls -l "$work/export"
echo "## same SQL, DuckDB"
python3 benches/compare_duckdb.py "$work/raw" "$bin"
