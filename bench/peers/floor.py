#!/usr/bin/env python3
"""The read floor: what just reading every column of the three input tables costs in DuckDB.

Usage: python3 floor.py DATA_DIR

Per table, one SELECT count(*), sum(<every column>) (strings: sum of length;
timestamps: sum of epoch microseconds; dates: sum of days since 1970).
"""
import time

T_START = time.perf_counter()
import sys  # noqa: E402

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

TABLES = ("customers", "transactions", "interactions")


def agg_exprs(schema):
    out = ["count(*)"]
    for f in schema:
        c = f.name
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            out.append(f"sum(length({c}))")
        elif pa.types.is_timestamp(f.type):
            out.append(f"sum(epoch_us({c}))")
        elif pa.types.is_date(f.type):
            out.append(f"sum({c} - DATE '1970-01-01')")
        else:
            out.append(f"sum({c})")
    return ", ".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    data_dir = sys.argv[1]
    t = time.perf_counter()
    con = duckdb.connect()
    report = []
    for name in TABLES:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{data_dir}/{name}/*.parquet')")
        schema = pq.read_schema(f"{data_dir}/{name}/part-0.parquet")
        res = con.sql(f"SELECT {agg_exprs(schema)} FROM {name}").to_arrow_table()
        report.append(f"{name}: rows={res.column(0)[0].as_py()}")
    print(f"floor duckdb: read {time.perf_counter() - t:.3f}s (total in-process {time.perf_counter() - T_START:.3f}s); "
          + "; ".join(report), file=sys.stderr)


if __name__ == "__main__":
    main()
