#!/usr/bin/env bash
# Benchmark: `retention serve-sql` under 16 psycopg clients running 50 queries each at once, on a
# generated lake after `run --all`. Prints p50/p99 latency, errors, the connections still open
# after the clients finished, and the server's peak RSS (/usr/bin/time -v). Figures:
# docs/BENCHMARKS.md. Usage: bash benches/bi.sh [CUSTOMERS] [CLIENTS] [QUERIES]
# Needs a release build and python3 with psycopg (pip install 'psycopg[binary]').
set -euo pipefail
cd "$(dirname "$0")/.."
customers="${1:-50000}" clients="${2:-16}" queries="${3:-50}"
source benches/project.sh
"$bin" generate --customers "$customers" --months 12 --out "$work/raw" | grep -E "^orders:"
"$bin" -C "$work/project" --raw "$work/raw" --curated "$work/curated" run --all >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/bin/time -v -o "$work/time.txt" "$bin" -C "$work/project" --raw "$work/raw" \
  --curated "$work/curated" serve-sql --no-auth --no-flight --pg "127.0.0.1:$port" 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.2
done
python3 benches/bi_load.py "$port" "$clients" "$queries"
sleep 1
echo "connections still open: $(ss -Htn state established "( sport = :$port )" | wc -l)"
# TERM the server itself (a signal to /usr/bin/time would end it before it reports).
pkill -TERM -P "$server"
wait "$server" || true
grep -E "Maximum resident set size" "$work/time.txt"
