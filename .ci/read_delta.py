"""Independent reader: prints a Delta table as a header line plus sorted `a|b|c` rows.

Used by the integration tests to check that the Python `deltalake` package reads what
`retention` publishes exactly as `retention` itself does. Usage: read_delta.py TABLE_URI
"""
import os
import sys

from deltalake import DeltaTable


def cell(value):
    if value is None:
        return ""
    return str(value)


def main():
    table = DeltaTable(sys.argv[1]).to_pyarrow_table()
    rows = sorted("|".join(cell(v) for v in row.values()) for row in table.to_pylist())
    print("|".join(table.column_names))
    print("\n".join(rows), end="")
    print(f"\n# version={DeltaTable(sys.argv[1]).version()}", file=sys.stderr)


if __name__ == "__main__":
    main()
    # The deltalake and pyarrow extensions can abort while the interpreter tears down their
    # thread pools ("terminate called without an active exception", delta-io/delta-rs#2184),
    # after every row was printed. Leave without that teardown: flush, then exit at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
