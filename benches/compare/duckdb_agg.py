"""DuckDB: the 10-second tumbling aggregation as one batch SQL query over the CSV.

usage: python duckdb_agg.py INPUT.csv OUTPUT.csv

Epoch-aligned windows: window_start = floor(ts / 10000) * 10000. Writes
status,window_start,window_end,count,avg_latency,sum_bytes (the reference every other
system's output is checked against). Uses DuckDB's default thread count (one per core).
"""

import sys
import time

import duckdb

started = time.monotonic()
src, dst = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(
    f"""
    COPY (
        SELECT status,
               (ts // 10000) * 10000 AS window_start,
               (ts // 10000) * 10000 + 10000 AS window_end,
               count(*) AS count,
               avg(latency_ms)::DOUBLE AS avg_latency,
               sum(bytes)::BIGINT AS sum_bytes
        FROM read_csv('{src}', header = true, delim = ',', quote = '',
                      columns = {{'ts': 'BIGINT', 'ip': 'VARCHAR', 'method': 'VARCHAR',
                                 'path': 'VARCHAR', 'status': 'INTEGER', 'bytes': 'BIGINT',
                                 'latency_ms': 'INTEGER'}})
        GROUP BY ALL
        ORDER BY window_start, status
    ) TO '{dst}' (HEADER, DELIMITER ',')
    """
)
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(f"duckdb {duckdb.__version__}: {src} -> {dst} ({threads} threads) in {time.monotonic() - started:.3f} s "
      "(import excluded)")
