#!/usr/bin/env bash
# Issue 12's goal 2: the whole DAG under a memory limit, spilling to disk, with its peak RSS.
# Usage: bash benches/memory.sh [CUSTOMERS] [LIMIT] [LAKE]
#   27000000 customers is about 51.6M orders (the default), LIMIT defaults to 2GiB. LAKE reuses a
#   lake `retention generate` wrote before (it takes minutes at this size); without it one is
#   generated in a temporary directory and removed on exit.
# Prints the run's per-job table (rows, seconds, peak MiB, spilled MiB, errors), then the wall time
# and peak RSS from `/usr/bin/time -v`. Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-27000000}"
limit="${2:-2GiB}"
lake="${3:-}"
source benches/project.sh

if [ -z "$lake" ]; then
    lake="$work/raw"
    /usr/bin/time -f "generate: wall %e s, max RSS %M KiB" \
        "$bin" generate --customers "$customers" --out "$lake" >/dev/null
fi
echo "lake: $(du -sh "$lake" | cut -f1); limit $limit; $(nproc) cores; $(git rev-parse --short HEAD)"
/usr/bin/time -v -o "$work/time.txt" \
    "$bin" -C "$work/project" --raw "$lake" --curated "$work/curated" --memory-limit "$limit" \
    run --all 2>"$work/log.txt" || echo "run --all exited non-zero (a job failed)"
grep -E "Elapsed|Maximum resident" "$work/time.txt"
grep -E "WARN|ERROR" "$work/log.txt" | cut -c1-300 | tail -20 || true
