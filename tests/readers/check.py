"""Writes a fixture, runs a crmflow pipeline over it, and reads every output
directory with pyarrow, DuckDB, Polars and Spark by its bare path.

Each reader must see exactly the fixture's rows: the same customer ids,
each with its partition value decoded as the fixture has it (Hive's NULL for
NULL and ''), nested unsigned and nanosecond values converted, and nothing
else (no manifest, no staging). Usage: check.py CRMFLOW WORKDIR.
"""

import datetime as dt
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

CRMFLOW, WORK = sys.argv[1], sys.argv[2]
READERS = os.environ.get("READERS", "pyarrow,duckdb,polars,spark").split(",")

# The partition values of issue 11: non-ASCII, `/`, `%`, `=`, empty, NULL,
# and a plain one. Hive (and every reader) reads '' back as NULL.
REGIONS = ["München", "a/b", "50%", "a=b", "", None, "US"]
N = 2100
EPOCH = dt.datetime(2026, 1, 1)


def fixture():
    ids = list(range(N, 0, -1))  # written in reverse: sorting is crmflow's job
    region = [REGIONS[i % len(REGIONS)] for i in ids]
    big = pa.array([i * 1000 for i in ids], pa.uint64())
    ts = pa.array([EPOCH + dt.timedelta(seconds=i) for i in ids], pa.timestamp("ns"))
    nested = pa.StructArray.from_arrays([big, ts], names=["n", "ts"])
    lists = pa.array([[i, i + 1] for i in ids], pa.list_(pa.uint64()))
    t = pa.table({"customer_id": pa.array(ids, pa.int64()), "region": region, "nested": nested, "counts": lists,
                  "amount": [i / 4 for i in ids]})
    os.makedirs(f"{WORK}/data/customers")
    pq.write_table(t, f"{WORK}/data/customers/part-0.parquet")
    return {i: REGIONS[i % len(REGIONS)] for i in ids}


PIPELINE = """name: readers
vars:
  batch: one
sources:
  customers: {url: data/customers/}
steps:
  - name: by_region
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
  - name: flat
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
  - name: by_region_op
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
  - name: appended
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
  - name: delta_by_region
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
  - name: delta_appended
    sql: SELECT customer_id, region, nested, counts, amount FROM customers
sinks:
  - table: by_region
    url: out/by_region/
    partition_by: [region]
    sort_by: [customer_id]
    row_group_rows: 100
    bloom_filters: [customer_id]
    descriptions: {customer_id: "The customer's id", amount: "Spend, EUR"}
  - table: flat
    url: out/flat/
    sort_by: [customer_id]
  - table: by_region_op
    url: out/by_region_op/
    partition_by: [region]
    mode: overwrite_partitions
  - table: appended
    url: out/appended/
    mode: append
  - table: delta_by_region
    url: out/delta_by_region/
    format: delta
    partition_by: [region]
    descriptions: {customer_id: "The customer's id"}
  - table: delta_appended
    url: out/delta_appended/
    format: delta
    mode: append
"""

OUTPUTS = ["by_region", "flat", "by_region_op", "appended"]
PARTITIONED = {"by_region", "by_region_op", "delta_by_region"}
# Delta tables are read through their log, by Delta readers only: a plain
# Parquet reader of the directory also sees the files of replaced versions.
# Spark (delta-spark) and DuckDB's `delta` extension fetch their code at
# startup (Maven Central, extensions.duckdb.org), which this machine cannot
# reach: not run here.
DELTA_OUTPUTS = ["delta_by_region", "delta_appended"]
DELTA_READERS = ["deltalake", "polars"]


def run_pipeline():
    with open(f"{WORK}/p.yaml", "w") as f:
        f.write(PIPELINE)
    for _ in range(2):  # the second run replaces, it must not add
        r = subprocess.run([CRMFLOW, "run", "p.yaml"], cwd=WORK, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"crmflow run failed ({r.returncode}): {r.stderr}")


def rows_pyarrow(path):
    t = pq.read_table(path)
    return rows_of(t.to_pylist())


def rows_duckdb(path):
    import duckdb

    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_parquet('{path}')")
    cols = rel.columns
    return rows_of([dict(zip(cols, r)) for r in rel.fetchall()])


def rows_polars(path):
    import polars as pl

    return rows_of(pl.read_parquet(path).to_dicts())


SPARK = None


def rows_spark(path):
    global SPARK
    if SPARK is None:
        from pyspark.sql import SparkSession

        SPARK = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
                 .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    df = SPARK.read.parquet(path)
    return rows_of([r.asDict(recursive=True) for r in df.collect()])


def rows_deltalake(path):
    from deltalake import DeltaTable

    t = DeltaTable(path)
    comments = {f.name: f.metadata.get("comment") for f in t.schema().fields if f.metadata.get("comment")}
    if "by_region" in path and comments != {"customer_id": "The customer's id"}:
        raise ValueError(f"column comments {comments}")
    return rows_of(t.to_pyarrow_table().to_pylist())


def rows_polars_delta(path):
    import polars as pl

    return rows_of(pl.read_delta(path).to_dicts())


def rows_of(records):
    """(customer_id -> (region, nested n, nested ts, counts)) of what a reader returned."""
    out = {}
    for r in records:
        region = r.get("region")
        region = None if region is None else str(region)
        nested = r["nested"]
        ts = nested["ts"]
        if isinstance(ts, dt.datetime) and ts.tzinfo is not None:
            ts = ts.astimezone(dt.timezone.utc).replace(tzinfo=None)
        cid = int(r["customer_id"])
        if cid in out:
            out[cid] = "duplicate"
        else:
            out[cid] = (region, int(nested["n"]), ts, [int(x) for x in r["counts"]])
    return out


def check(got, expected, partitioned):
    # A partition value '' reads back as NULL (Hive's rule); in a data
    # column it stays ''.
    want = {i: ((reg or None) if partitioned else reg, i * 1000, EPOCH + dt.timedelta(seconds=i), [i, i + 1]) for i, reg in expected.items()}
    if got == want:
        return None
    dup = [k for k, v in got.items() if v == "duplicate"]
    if dup:
        return f"duplicate ids, e.g. {dup[:3]}"
    missing = sorted(set(want) - set(got))
    if missing:
        return f"{len(missing)} ids missing, e.g. {missing[:3]}"
    extra = sorted(set(got) - set(want))
    if extra:
        return f"{len(extra)} unexpected ids"
    bad = [(k, got[k], want[k]) for k in sorted(want) if got[k] != want[k]]
    k, g, w = bad[0]
    return f"{len(bad)} rows differ, e.g. id {k}: got {g!r}, want {w!r}"


def main():
    expected = fixture()
    t0 = time.time()
    run_pipeline()
    print(f"crmflow: 2 runs in {time.time() - t0:.1f}s")
    readers = {"pyarrow": rows_pyarrow, "duckdb": rows_duckdb, "polars": rows_polars, "spark": rows_spark}
    delta_readers = {"deltalake": rows_deltalake, "polars": rows_polars_delta}
    results = {}
    passed = failed = 0
    runs = [(name, readers[name], OUTPUTS) for name in READERS]
    runs += [(f"{name} (Delta)", delta_readers[name], DELTA_OUTPUTS) for name in DELTA_READERS]
    for name, read, outputs in runs:
        t0 = time.time()
        for out in outputs:
            path = f"{WORK}/out/{out}"
            try:
                why = check(read(path), expected, out in PARTITIONED)
            except Exception as e:  # noqa: BLE001 - the reader's own error is the result
                why = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            results[(name, out)] = "ok" if why is None else f"FAIL {why}"
            passed += why is None
            failed += why is not None
        print(f"{name}: {time.time() - t0:.1f}s for {len(outputs)} outputs")
    print()
    columns = OUTPUTS + DELTA_OUTPUTS
    print("| reader | " + " | ".join(columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for name, _, _ in runs:
        print(f"| {name} | " + " | ".join(results.get((name, o), "-") for o in columns) + " |")
    print()
    for (name, out), r in results.items():
        if r != "ok":
            print(f"{name} x {out}: {r}")
    print(f"readers: {passed} passed, {failed} failed")
    if SPARK is not None:
        SPARK.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
