#!/usr/bin/env bash
# Benchmark: the daemon's overhead. A one-job project (a count over a small generated lake, due
# every 5 seconds) served for SECONDS: the delay from each slot's instant to its job starting,
# the daemon's RSS while idle between firings, and a daemon with nothing due (idle RSS).
# Usage: bash benches/daemon.sh [SECONDS]   (needs a release build: cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
bin="${CARGO_TARGET_DIR:-target}/release/retention"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/project/jobs" "$work/project/sql" "$work/idle/jobs" "$work/idle/sql"
cp jobs/sources.toml "$work/project/jobs/"
cp jobs/sources.toml "$work/idle/jobs/"
printf 'schedule = "*/5 * * * * *"\ncatchup = "none"\n' > "$work/project/jobs/heartbeat.toml"
printf 'schedule = "0 0 0 1 1 *"\ncatchup = "none"\n' > "$work/idle/jobs/heartbeat.toml"
echo "SELECT count(*) AS customers FROM customers" | tee "$work/project/sql/heartbeat.sql" > "$work/idle/sql/heartbeat.sql"
"$bin" generate --customers 2000 --out "$work/raw" > /dev/null

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

serve() { # project log
  "$bin" -C "$1" --raw "$work/raw" --curated "$work/curated-$(basename "$1")" --log-format json \
    serve --http 127.0.0.1:0 > /dev/null 2> "$2" &
  pid=$!
}

serve "$work/project" "$work/busy.log"
sleep "$seconds"
busy_rss=$(rss_kib "$pid")
kill -TERM "$pid"; wait "$pid" || true

serve "$work/idle" "$work/idle.log"
sleep 10
idle_rss=$(rss_kib "$pid")
kill -TERM "$pid"; wait "$pid" || true

python3 - "$work/busy.log" "$busy_rss" "$idle_rss" <<'PY'
import json, sys, datetime
starts = []
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("fields", {}).get("message") == "job started":
        t = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        slot = t.replace(microsecond=0, second=t.second - t.second % 5)
        starts.append((t - slot).total_seconds() * 1000)
starts.sort()
if not starts:
    sys.exit("no job started: see the log")
p = lambda q: starts[min(len(starts) - 1, int(q * len(starts)))]
print(f"slots run: {len(starts)}")
print(f"slot instant -> job started: p50 {p(0.5):.1f} ms, p90 {p(0.9):.1f} ms, max {starts[-1]:.1f} ms")
print(f"RSS after the run (one job every 5 s): {int(sys.argv[2]) / 1024:.1f} MiB")
print(f"RSS of a daemon with nothing due, after 10 s: {int(sys.argv[3]) / 1024:.1f} MiB")
PY
