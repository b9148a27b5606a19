"""BI clients against `retention serve-sql`, each compared with the Delta tables that Python
`deltalake` reads: psycopg 3, SQLAlchemy with pandas `read_sql`, and ADBC Flight SQL
(`adbc_get_objects`, and a query whose Arrow table matches the PostgreSQL path).

Usage: bi_clients.py PG_PORT FLIGHT_PORT USER PASSWORD CURATED_DIR TABLE [TABLE ...]
Prints one line per check; exits non-zero at the first difference, saying where.
"""

import datetime
import decimal
import math
import os
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pandas as pd
import psycopg
import pyarrow as pa
import sqlalchemy
from deltalake import DeltaTable

pg_port, flight_port, user, password, curated = sys.argv[1:6]
tables = sys.argv[6:]


def fail(message):
    print(f"FAIL {message}")
    sys.exit(1)


def norm(value):
    """One value as every client should agree on it: NULL (and pandas' NaN/NaT for NULL) is
    None, numpy and pandas scalars are plain Python, decimals keep their text (every digit)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (decimal.Decimal, datetime.date)):
        value = value.item()
    if isinstance(value, decimal.Decimal):
        return ("decimal", str(value))
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc)
    return value


def rows(records):
    return sorted((tuple(norm(v) for v in r) for r in records), key=repr)


def delta_rows(table):
    arrow = DeltaTable(f"{curated}/{table}").to_pyarrow_table()
    return arrow, rows(tuple(r.values()) for r in arrow.to_pylist())


login = dict(host="127.0.0.1", port=int(pg_port), dbname="retention", user=user, password=password)
engine = sqlalchemy.create_engine(
    sqlalchemy.engine.URL.create(
        "postgresql+psycopg",
        username=user,
        password=password,
        host="127.0.0.1",
        port=int(pg_port),
        database="retention",
        query={"sslmode": "disable"},
    )
)

with psycopg.connect(sslmode="disable", **login) as conn:
    for table in tables:
        arrow, expected = delta_rows(table)
        columns = ", ".join(f'"{c}"' for c in arrow.column_names)
        got = rows(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
        if got != expected:
            diff = next((g, e) for g, e in zip(got + [None] * len(expected), expected) if g != e)
            fail(f"psycopg {table}: {len(got)} rows vs {len(expected)} in Delta; first difference {diff}")
        money = [f.name for f in arrow.schema if pa.types.is_decimal(f.type)]
        print(f"ok psycopg {table}: {len(got)} rows equal to Delta (decimal columns: {len(money)})")

        # coerce_float=False keeps numeric as Decimal (pandas turns Decimal into float by default).
        frame = pd.read_sql(sqlalchemy.text(f"SELECT {columns} FROM {table}"), engine, coerce_float=False)
        got = rows(frame.itertuples(index=False, name=None))
        if got != expected:
            diff = next((g, e) for g, e in zip(got, expected) if g != e)
            fail(f"pandas read_sql {table}: first difference {diff}")
        print(f"ok pandas.read_sql {table}: {len(frame)} rows equal to Delta")

flight = flight_sql.connect(
    f"grpc://127.0.0.1:{flight_port}", db_kwargs={"username": user, "password": password}
)
objects = flight.adbc_get_objects(depth="tables").read_all().to_pylist()
listed = {
    (catalog["catalog_name"], schema["db_schema_name"], t["table_name"])
    for catalog in objects
    for schema in catalog["catalog_db_schemas"] or []
    for t in schema["db_schema_tables"] or []
}
missing = [t for t in tables if ("retention", "public", t) not in listed]
if missing:
    fail(f"adbc_get_objects does not list {missing}; it lists {sorted(listed)}")
print(f"ok adbc_get_objects lists {len(listed)} tables, all {len(tables)} curated ones among them")

with psycopg.connect(sslmode="disable", **login) as conn:
    for table in tables:
        arrow, expected = delta_rows(table)
        columns = ", ".join(f'"{c}"' for c in arrow.column_names)
        cursor = flight.cursor()
        cursor.execute(f"SELECT {columns} FROM {table}")
        served = cursor.fetch_arrow_table()
        cursor.close()
        for field in arrow.schema:
            got_type = served.schema.field(field.name).type
            if pa.types.is_decimal(field.type) and got_type != field.type:
                fail(f"flight {table}.{field.name}: {got_type}, Delta has {field.type}")
        got = rows(tuple(r.values()) for r in served.to_pylist())
        over_pg = rows(conn.execute(f"SELECT {columns} FROM {table}").fetchall())
        if got != over_pg or got != expected:
            fail(f"flight {table}: the Arrow rows differ from the PostgreSQL path or Delta")
        print(f"ok flight {table}: {served.num_rows} rows, same as the PostgreSQL path and Delta")
    # A statement with parameters: ADBC prepares, binds the row (DoPut) and runs the bound handle.
    sql = ("SELECT months_since_first, sum(active_customers) AS active FROM cohort_retention "
           "WHERE acquisition_channel = {} AND months_since_first <= {} GROUP BY 1 ORDER BY 1")
    cursor = flight.cursor()
    cursor.execute(sql.format("$1", "$2"), parameters=("search", 2))
    got = cursor.fetchall()
    cursor.close()
    expected = conn.execute(sql.format("'search'", "2")).fetchall()
    if [tuple(r) for r in got] != [tuple(r) for r in expected] or not expected:
        fail(f"flight with parameters: {got}, the PostgreSQL path has {expected}")
    print(f"ok flight with bound parameters: {len(got)} rows, same as the literal query")
flight.close()
print("all clients agree")
# Skip the interpreter's teardown of the deltalake and pyarrow thread pools, which can abort
# after the checks passed (delta-io/delta-rs#2184): flush, then exit at once.
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
