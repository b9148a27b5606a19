"""The whole DAG on retention and on DuckDB, side by side: per-job times, the ratio, and a row check.

Usage: python3 benches/dag_duckdb.py RAW_DIR PROJECT_DIR RETENTION_BINARY [--jobs N] [--threads N]
       [--runs N] [--as-of YYYY-MM-DD] [--out DIR]

retention runs `run --all` once per round (a fresh curated root each time, so every run is a
rebuild) as one process; its per-job times are `finished_at - started_at` from its run ledger
`_runs`. DuckDB (PyPI `duckdb`, in this process, `--threads` threads, default 2) runs each job's
own SQL from PROJECT_DIR/sql as `CREATE TABLE job AS ...` in the order of the DAG, over views of the
same raw Parquet: each job reads its inputs from files or from the tables the jobs before it made,
as retention does. Both sides get the same `$as_of` (the latest order day unless given) and the
same parameters (retention.toml's [params], then the job's), bound as parameters.

The translation to DuckDB's dialect is textual and listed in TRANSLATION below. Jobs whose SQL
calls retention's model UDFs (BG/NBD, Gamma-Gamma) cannot run on DuckDB: DuckDB reads retention's
table for them instead (marked "retention's table", not timed nor compared), and the engine's own
tables (the close log `_month_close`, `_closed_months`, `_closed_entries`) are empty, as no month is closed.

The row check: every table DuckDB made is compared with retention's, exported with
`retention export TABLE --format parquet`, as multisets of rows (EXCEPT ALL both ways), each
DuckDB column cast to retention's column type and DOUBLE columns rounded to 6 decimals (the engines sum floats in different orders). The script
exits non-zero when a table differs.
"""
import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib

import duckdb

# retention's dialect -> DuckDB's: (pattern, replacement, why).
TRANSLATION = [
    (r"\bfirst_value\(", "first(", "first_value(x ORDER BY y) as an aggregate is DuckDB's first(x ORDER BY y)"),
    (r"to_timestamp\(concat\((\w+), '-01T00:00:00Z'\)\)", r"CAST(concat(\1, '-01') AS TIMESTAMP)",
     "DuckDB's to_timestamp takes epoch seconds; a month's first instant is cast from text"),
    (r"\bat\b", '"at"', "the close log's column `at` is a keyword in DuckDB"),
    (r"CAST\((\([^()]*\)|[\w.]+) / NULLIF\(([^()]*), 0\) AS DECIMAL\(18,2\)\)", r"div_cents(\1, \2)",
     "DuckDB divides decimals in floating point: a decimal over a count, to cents, is done on integers"),
]
MACROS = [
    # retention's round_half_even(x): banker's rounding to cents on the exact decimal.
    "CREATE MACRO round_half_even(x) AS round_even(x, 2)",
    "CREATE MACRO to_char(x, f) AS strftime(x, f)",
    # a / b to cents, rounded half away from zero, exactly (as DataFusion's decimal division and cast).
    "CREATE MACRO div_cents(a, b) AS CASE WHEN b <> 0 THEN CAST(CAST(sign(a) * sign(b) * "
    "((2 * abs(CAST(a * 100 AS HUGEINT)) + abs(b)) // (2 * abs(b))) AS DECIMAL(38,0)) * 0.01 AS DECIMAL(18,2)) END",
]
MODEL_UDFS = re.compile(r"\b(bgnbd_\w+|gamma_gamma_\w+|clv)\(")


def retention(binary, project, raw, curated, *args, capture=True):
    cmd = [binary, "-C", str(project), "--raw", str(raw), "--curated", str(curated), *args]
    env = {"RUST_LOG": "off", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run(cmd, capture_output=capture, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def load_jobs(project):
    """Each job's SQL, parameters and incremental settings, in the DAG's order."""
    config = tomllib.loads((project / "retention.toml").read_text())
    global_params = config.get("params", {})
    jobs = {}
    for spec_path in sorted((project / "jobs").glob("*.toml")):
        if spec_path.stem == "sources":
            continue
        spec = tomllib.loads(spec_path.read_text())
        sql = (project / "sql" / f"{spec_path.stem}.sql").read_text()
        jobs[spec_path.stem] = {"sql": sql, "spec": spec, "params": {**global_params, **spec.get("params", {})}}
    sources = [s["name"] for s in tomllib.loads((project / "jobs" / "sources.toml").read_text())["source"]]
    order, done = [], set()
    names = set(jobs)
    while len(order) < len(jobs):
        ready = [
            n for n in sorted(names - done)
            if all(d in done for d in names - {n} if re.search(rf"\b{d}\b", strip_comments(jobs[n]["sql"])))
        ]
        if not ready:
            sys.exit(f"no job is ready among {sorted(names - done)}: a cycle?")
        order += ready
        done |= set(ready)
    return [(n, jobs[n]) for n in order], sources


def strip_comments(sql):
    return "\n".join(line.split("--")[0] for line in sql.splitlines())


def month_after(day):
    return (day.replace(day=1) + datetime.timedelta(days=32)).replace(day=1)


def bindings(job, as_of):
    """The job's parameters its SQL names, as DuckDB named parameters."""
    values = dict(job["params"])
    values["as_of"] = as_of
    spec = job["spec"]
    if spec.get("kind") == "incremental":
        values["start"] = datetime.date.fromisoformat(spec["start"])
        values["end"] = as_of + datetime.timedelta(days=1) if spec["grain"] == "day" else month_after(as_of)
    used = set(re.findall(r"\$(\w+)", strip_comments(job["sql"])))
    return {k: v for k, v in values.items() if k in used}


def translate(sql):
    sql = strip_comments(sql)
    for pattern, replacement, _ in TRANSLATION:
        sql = re.sub(pattern, replacement, sql)
    return days_to_dates(sql)


def days_to_dates(sql):
    """`CAST(CAST(x AS INT) AS DATE)` (a day number to its date, which DataFusion casts and DuckDB
    does not) becomes `(DATE '1970-01-01' + CAST(x AS INT))`."""
    opening, at = "CAST(CAST(", 0
    while (at := sql.find(opening, at)) >= 0:
        depth, i = 1, at + len(opening)
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            i += 1
        inner = sql[at + len("CAST("):i]
        rest = re.match(r"\s+AS\s+DATE\s*\)", sql[i:])
        if rest and re.search(r"\sAS\s+INT\)$", inner):
            sql = f"{sql[:at]}(DATE '1970-01-01' + {inner}){sql[i + rest.end():]}"
        at += 1
    return sql


def run_retention(args, curated):
    if args.curated:
        return (None, *job_seconds(args, args.curated, ""))
    t = time.perf_counter()
    out = retention(args.binary, args.project, args.raw, curated, "run", "--all", "--as-of", str(args.as_of), "--jobs", str(args.jobs))
    return (time.perf_counter() - t, *job_seconds(args, curated, out))


def job_seconds(args, curated, out):
    """Each job's seconds and peak memory (bytes) in the latest run of the ledger `_runs`."""
    rows = json.loads(retention(
        args.binary, args.project, args.raw, curated, "query", "--format", "json",
        "SELECT job, CAST(extract(epoch FROM finished_at) - extract(epoch FROM started_at) AS DOUBLE) AS seconds, status, "
        "peak_memory_bytes AS peak "
        "FROM _runs WHERE run_id = (SELECT max(run_id) FROM _runs)",
    ))
    failed = [r["job"] for r in rows if r["status"] != "succeeded"]
    if failed:
        sys.exit(f"retention failed {failed}:\n{out}")
    return {r["job"]: r["seconds"] for r in rows}, {r["job"]: r.get("peak") or 0 for r in rows}


def export(args, curated, table, into):
    """retention's table as Parquet files in `into`."""
    into.mkdir(parents=True, exist_ok=True)
    retention(args.binary, args.project, args.raw, curated, "export", table, "--format", "parquet", "--out", str(into))
    return sorted(into.glob("*.parquet"))


def engine_tables(con):
    """The close log's views as a lake with no closed month has them (the bench closes none)."""
    con.execute("CREATE TABLE _closed_months (month VARCHAR, snapshot BIGINT, closed_at TIMESTAMPTZ, "
                "closed_by VARCHAR, frozen_tables VARCHAR, tables VARCHAR)")
    con.execute("CREATE TABLE _month_close (month VARCHAR, action VARCHAR, snapshot BIGINT, \"at\" TIMESTAMPTZ, "
                "actor VARCHAR, frozen_tables VARCHAR, tables VARCHAR)")
    con.execute("CREATE TABLE _closed_entries (closed_month VARCHAR, snapshot BIGINT, table_name VARCHAR, record_id BIGINT)")


def run_duckdb(args, jobs, sources, curated, scratch):
    con = duckdb.connect(config={"threads": args.threads, "integer_division": True,
                                 "error_on_division_by_zero": False})
    for macro in MACROS:
        con.execute(macro)
    for name in sources:
        folder = args.raw / name
        partitioned = any(p.is_dir() for p in folder.iterdir())
        pattern = f"{folder}/*/*.parquet" if partitioned else f"{folder}/*.parquet"
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = {str(partitioned).lower()})")
    engine_tables(con)
    seconds, borrowed = {}, []
    for name, job in jobs:
        if MODEL_UDFS.search(job["sql"]):
            files = export(args, curated, name, scratch / name)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet({[str(f) for f in files]})")
            borrowed.append(name)
            continue
        t = time.perf_counter()
        try:
            con.execute(f"CREATE TABLE {name} AS {translate(job['sql'])}", bindings(job, args.as_of))
        except duckdb.Error as e:
            sys.exit(f"DuckDB could not run {name}: {e}")
        seconds[name] = time.perf_counter() - t
    return con, seconds, borrowed


def compare(con, args, curated, name, scratch):
    """None when retention's table and DuckDB's hold the same rows, else what differs. Both sides
    are sorted on every column (DOUBLE columns last) and compared row by row: exactly, except that
    DOUBLE cells may differ by 1e-9 relative (the engines sum floats in different orders), or by
    one unit of the last decimal when a float rounded to d decimals sat on a tie (see tie())."""
    files = export(args, curated, name, scratch / f"ours_{name}")
    con.execute(f"CREATE OR REPLACE VIEW ours AS SELECT * FROM read_parquet({[str(f) for f in files]})")
    columns = con.execute("DESCRIBE ours").fetchall()
    theirs_cols = {c[0] for c in con.execute(f"DESCRIBE {name}").fetchall()}
    if {c[0] for c in columns} != theirs_cols:
        return f"columns differ: {sorted({c[0] for c in columns} ^ theirs_cols)}"
    floats = {c for c, t, *_ in columns if t in ("DOUBLE", "FLOAT")}
    order = ", ".join(f'"{c}"' for c, *_ in sorted(columns, key=lambda c: c[0] in floats))
    cast = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t, *_ in columns)
    rows = con.execute("SELECT count(*) FROM ours").fetchone()[0]
    theirs_rows = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    if rows != theirs_rows:
        return f"retention has {rows} rows, DuckDB {theirs_rows}"

    def differs(c):
        if c in floats:
            return f'NOT (a."{c}" IS NOT DISTINCT FROM b."{c}" OR abs(a."{c}" - b."{c}") <= 1e-9 * greatest(1, abs(a."{c}")) OR {tie(c)})'
        return f'a."{c}" IS DISTINCT FROM b."{c}"'

    def tie(c):
        # round(x, d) of a DOUBLE at a tie: DataFusion rounds x * 10^d half away from zero, DuckDB
        # rounds the exact binary value of x (round(3 / 160, 4): 0.0188 against 0.0187). The cells
        # then differ by exactly 10^-d, each a d-decimal value, and the midpoint is x itself.
        return " OR ".join(
            f'(abs(abs(a."{c}" - b."{c}") - 1e-{d}) <= 1e-12 AND round(a."{c}", {d}) = a."{c}"'
            f' AND round(b."{c}", {d}) = b."{c}")'
            for d in range(1, 7)
        )

    counts = ", ".join(f"count(*) FILTER (WHERE {differs(c)})" for c, *_ in columns)
    per_column = con.execute(
        f"WITH a AS (SELECT row_number() OVER (ORDER BY {order}) AS rn, * FROM ours), "
        f"b AS (SELECT row_number() OVER (ORDER BY {order}) AS rn, * FROM (SELECT {cast} FROM {name})) "
        f"SELECT {counts} FROM a JOIN b USING (rn)"
    ).fetchone()
    bad = {c: n for (c, *_), n in zip(columns, per_column) if n}
    return None if not bad else f"of {rows} rows, cells differ in " + ", ".join(f"{c} ({n})" for c, n in bad.items())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw", type=pathlib.Path)
    p.add_argument("project", type=pathlib.Path)
    p.add_argument("binary")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--as-of", type=datetime.date.fromisoformat)
    p.add_argument("--curated", type=pathlib.Path, help="compare with this finished run instead of running retention")
    args = p.parse_args()
    jobs, sources = load_jobs(args.project)
    if args.as_of is None:
        con = duckdb.connect()
        args.as_of = con.execute(f"SELECT max(CAST(order_ts AS DATE)) FROM read_parquet('{args.raw}/orders/*/*.parquet')").fetchone()[0]
    ours_runs, theirs_runs, ours_walls, theirs_walls = [], [], [], []
    work = pathlib.Path(tempfile.mkdtemp(prefix="dag_duckdb_"))
    try:
        for round_no in range(args.runs):
            curated = args.curated or work / f"curated_{round_no}"
            wall, per_job, peaks = run_retention(args, curated)
            ours_runs.append(per_job)
            ours_walls.append(wall)
            con, seconds, borrowed = run_duckdb(args, jobs, sources, curated, work / f"scratch_{round_no}")
            theirs_runs.append(seconds)
            theirs_walls.append(sum(seconds.values()))
            if round_no == 0:
                failures = {n: compare(con, args, curated, n, work / "compare") for n in seconds}
            con.close()
        report(jobs, ours_runs, theirs_runs, ours_walls, theirs_walls, borrowed, failures, args, peaks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if any(failures.values()):
        sys.exit(1)


def mib(peaks, name):
    return f"{peaks.get(name, 0) / 1048576:.0f}"


def report(jobs, ours_runs, theirs_runs, ours_walls, theirs_walls, borrowed, failures, args, peaks):
    med = statistics.median
    print(f"as of {args.as_of}; retention --jobs {args.jobs}; DuckDB {duckdb.__version__} with {args.threads} threads; "
          f"median of {len(ours_runs)} run(s)\n")
    print("| job | retention (s) | retention peak MiB (last run) | DuckDB (s) | ratio | same rows |")
    print("|---|---|---|---|---|---|")
    compared_ours = 0.0
    for name, _ in jobs:
        ours = med(r.get(name, 0.0) for r in ours_runs)
        if name in borrowed:
            print(f"| {name} | {ours:.2f} | {mib(peaks, name)} | retention's table (model UDFs) | | |")
            continue
        theirs = med(r[name] for r in theirs_runs)
        compared_ours += ours
        verdict = failures[name] or "yes"
        print(f"| {name} | {ours:.2f} | {mib(peaks, name)} | {theirs:.2f} | {ours / max(theirs, 1e-3):.2f}x | {verdict} |")
    theirs_total = med(theirs_walls)
    print(f"| **jobs DuckDB runs, summed** | **{compared_ours:.2f}** | | **{theirs_total:.2f}** | "
          f"**{compared_ours / theirs_total:.2f}x** | |")
    if ours_walls[0] is not None:
        print(f"\nretention `run --all`, whole process (every job, start-up, contracts, ledger): {med(ours_walls):.2f} s")


if __name__ == "__main__":
    main()
