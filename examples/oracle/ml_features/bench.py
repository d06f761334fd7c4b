#!/usr/bin/env python3
"""The ml_features training set against DuckDB, same files, same run: wall time of
`ml_features --input events.jsonl --labels labels.csv --training-set out.parquet` (as happened)
and of DuckDB computing the same rows from the same raw files (oracle.py's LOAD_SQL and
happened_sql(), written to Parquet too), printed with their ratio. Nothing is asserted but
that both wrote the same rows.

    bench.py --bin PATH/TO/ml_features --data DIR --work DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import duckdb

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import oracle  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the ml_features binary (a release build)")
    ap.add_argument("--data", required=True, help="generate.py's output directory")
    ap.add_argument("--work", required=True, help="a scratch directory")
    args = ap.parse_args()
    ev, lb = os.path.join(args.data, "events.jsonl"), os.path.join(args.data, "labels.csv")
    with open(os.path.join(args.data, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)

    weir_out = os.path.join(args.work, "weir.parquet")
    started = time.monotonic()
    p = subprocess.run([args.bin, "--input", ev, "--labels", lb, "--training-set", weir_out],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    weir_s = time.monotonic() - started
    if p.returncode != 0:
        print(f"ml_features failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
        return 1

    duck_out = os.path.join(args.work, "duckdb.parquet")
    started = time.monotonic()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    oracle.load(con, ev, lb)
    con.execute(f"COPY ({oracle.happened_sql()}) TO '{duck_out}' (FORMAT parquet)")
    duck_s = time.monotonic() - started
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]

    # Both wrote the same rows (the distinct count within the oracle's tolerance).
    differ = con.execute(f"""
        SELECT count(*) FROM (SELECT *, row_number() OVER () AS n FROM read_parquet('{weir_out}')) w
        FULL JOIN (SELECT *, row_number() OVER () AS n FROM read_parquet('{duck_out}')) d USING (n)
        WHERE w."user" IS DISTINCT FROM d."user" OR w.ts IS DISTINCT FROM d.ts
           OR w.txn_count_24h IS DISTINCT FROM d.txn_count_24h OR w.amount_sum_24h IS DISTINCT FROM d.amount_sum_24h
           OR w.txn_count_5m IS DISTINCT FROM d.txn_count_5m OR w.amount_sum_5m IS DISTINCT FROM d.amount_sum_5m
           OR w.txn_count_1h IS DISTINCT FROM d.txn_count_1h OR w.amount_sum_1h IS DISTINCT FROM d.amount_sum_1h
           OR w.last_amount IS DISTINCT FROM d.last_amount
           OR abs(w.distinct_merchants_24h - d.distinct_merchants_24h) > {oracle.TOLERANCE} * d.distinct_merchants_24h
        """).fetchone()[0]
    con.close()

    print(f"ml_features vs DuckDB {duckdb.__version__}: training set as happened, {meta['labels']} labels over "
          f"{meta['events']} events ({meta['lines']} lines), to Parquet")
    print(f"  ml_features (release)   {weir_s:8.2f} s")
    print(f"  DuckDB ({threads} threads)      {duck_s:8.2f} s")
    print(f"  ratio ml_features/DuckDB {weir_s / duck_s:7.2f}")
    print(f"  rows that differ: {differ}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
