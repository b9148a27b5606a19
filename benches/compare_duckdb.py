"""Run the same SQL on retention (DataFusion) and DuckDB over the same generated Parquet.

Usage: python3 benches/compare_duckdb.py RAW_DIR RETENTION_BINARY [RUNS]
Prints a Markdown table of median wall-clock seconds per query (whole process for retention,
including start-up and source registration; in-process for DuckDB, including its Parquet scan)
and checks both engines return the same number of rows.
"""
import decimal
import pathlib
import statistics
import subprocess
import sys
import time

import duckdb

raw, binary = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
queries = sorted(pathlib.Path(__file__).parent.joinpath("sql").glob("*.sql"))
con = duckdb.connect()
for table in ["orders", "shipments", "refunds", "spend_ledger"]:
    con.execute(
        f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{raw}/{table}/*/*.parquet', hive_partitioning = true)"
    )
con.execute(f"CREATE VIEW fx_rates AS SELECT * FROM read_parquet('{raw}/fx_rates/*.parquet')")
# retention's round_half_even(x): banker's rounding to cents on the exact decimal.
con.execute("CREATE MACRO round_half_even(x) AS round_even(x, 2)")
print("| query | retention (s) | DuckDB (s) | rows |")
print("|---|---|---|---|")
for q in queries:
    sql = "\n".join(l for l in q.read_text().splitlines() if not l.lstrip().startswith("--"))
    ours, theirs = [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(
            [binary, "--raw", str(raw), "query", "--format", "csv", sql],
            check=True, capture_output=True, text=True, env={"RUST_LOG": "off", "PATH": "/usr/bin:/bin"},
        ).stdout
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        theirs.append(time.perf_counter() - t)
    our_rows = len(out.strip().splitlines()) - 1
    assert our_rows == len(rows), f"{q.name}: retention {our_rows} rows, DuckDB {len(rows)}"
    if q.stem.startswith("ledger"):
        # Money must agree to the cent, cell by cell (both sides exact decimals).
        ours_cells = [line.split(",") for line in out.strip().splitlines()[1:]]
        for a, b in zip(ours_cells, rows):
            assert [None if x == "" else decimal.Decimal(x) if x[0] in "-0123456789" and "-" not in x[1:] else x for x in a] == [
                decimal.Decimal(str(y)) if isinstance(y, (int, decimal.Decimal)) else y for y in b
            ], f"{q.name}: retention {a} vs DuckDB {b}"
    print(f"| {q.stem} | {statistics.median(ours):.2f} | {statistics.median(theirs):.2f} | {len(rows)} |")
