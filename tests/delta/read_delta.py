"""Reads a Delta table with the `deltalake` package (delta-rs's Python
binding, an independent reader of the Delta log) and prints what a reader
sees as one JSON object: the version, the schema, the column comments, the
partition columns, the rows (sorted, as lists) and the app transaction
versions asked for.

    read_delta.py TABLE_URI [--version N] [--txn APP_ID ...]

Installed by .ci/run into target/delta-venv: deltalake==1.6.6, pyarrow==26.0.1.
For s3:// tables the AWS_* variables of the environment are used
(AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...).
"""

import argparse
import datetime
import json
import os
import sys

from deltalake import DeltaTable


def plain(v):
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("--version", type=int)
    ap.add_argument("--txn", action="append", default=[])
    args = ap.parse_args()
    opts = {}
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP"):
        if k in os.environ:
            opts[k] = os.environ[k]
    dt = DeltaTable(args.uri, version=args.version, storage_options=opts or None)
    t = dt.to_pyarrow_table()
    names = t.schema.names
    rows = sorted(
        ([plain(r[n]) for n in names] for r in t.to_pylist()),
        key=lambda r: json.dumps(r, default=str),
    )
    fields = json.loads(dt.schema().to_json())["fields"]
    comments = {f["name"]: f["metadata"]["comment"] for f in fields if "comment" in f.get("metadata", {})}
    txns = {app: dt.transaction_version(app) for app in args.txn}
    print(
        json.dumps(
            {
                "version": dt.version(),
                "schema": [[f.name, str(f.type), f.nullable] for f in t.schema],
                "comments": comments,
                "partition_columns": dt.metadata().partition_columns,
                "rows": rows,
                "files": len(dt.file_uris()),
                "txn": txns,
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
    # Leave without the interpreter's teardown: under load, the reader's
    # native threads sometimes abort it ("terminate called without an
    # active exception") after everything was read and printed.
    sys.stdout.flush()
    os._exit(0)
