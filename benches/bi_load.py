"""Load on `retention serve-sql`'s PostgreSQL endpoint: CLIENTS threads, each with its own
psycopg 3 connection, run QUERIES queries from a fixed mix, then close. Prints the latency
percentiles and the error count; exits non-zero on any error.
Usage: bi_load.py PORT CLIENTS QUERIES
"""

import statistics
import sys
import threading
import time

import psycopg

port, clients, queries = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
MIX = [
    "SELECT months_since_first, sum(active_customers), sum(cohort_size) FROM cohort_retention "
    "WHERE acquisition_channel = 'search' GROUP BY 1 ORDER BY 1",
    "SELECT primary_issue, count(*), sum(net_revenue) FROM order_experience GROUP BY 1 ORDER BY 1",
    "SELECT * FROM fulfillment_sla ORDER BY 1, 2 LIMIT 50",
    "SELECT program_id, roi, roas FROM program_roi ORDER BY program_id",
    "SELECT month, sum(variance) FROM budget_reconciliation GROUP BY 1 ORDER BY 1",
    "SELECT count(*) FROM customer_summary WHERE orders >= 2",
]
latencies, errors = [], []
# (query index in MIX, whether it was the client's first query, seconds)
samples = []
lock = threading.Lock()


def client(n):
    try:
        with psycopg.connect(host="127.0.0.1", port=port, dbname="retention", user="bench",
                             sslmode="disable") as conn:
            for i in range(queries):
                k = (n + i) % len(MIX)
                started = time.perf_counter()
                conn.execute(MIX[k]).fetchall()
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    samples.append((k, i == 0, took))
    except Exception as e:  # counted, reported, and fails the run
        with lock:
            errors.append(repr(e))


started = time.perf_counter()
threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.perf_counter() - started
latencies.sort()
q = statistics.quantiles(latencies, n=100)
print(f"clients {clients} x {queries} queries: {len(latencies)} done in {wall:.1f} s, "
      f"{len(errors)} errors; p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
      f"max {latencies[-1] * 1000:.0f} ms")
later = sorted(t for _, first, t in samples if not first)
if len(later) > 1:
    ql = statistics.quantiles(later, n=100)
    print(f"without each client's first query: p50 {ql[49] * 1000:.0f} ms, "
          f"p99 {ql[98] * 1000:.0f} ms, max {later[-1] * 1000:.0f} ms")
for k, sql in enumerate(MIX):
    ts = sorted(t for j, _, t in samples if j == k)
    if ts:
        print(f"  query {k + 1}: n {len(ts)}, p50 {statistics.median(ts) * 1000:.0f} ms, "
              f"max {ts[-1] * 1000:.0f} ms  {sql[:70]}")
for e in errors[:5]:
    print("error:", e)
sys.exit(1 if errors else 0)
