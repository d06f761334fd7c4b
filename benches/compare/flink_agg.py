"""Apache Flink (PyFlink, Flink SQL on a local mini-cluster): the 10-second tumbling aggregation.

usage: python flink_agg.py INPUT.csv OUTPUT.csv [PARALLELISM]

Streaming mode, parallelism 2 by default. The source is a filesystem CSV table with an event-time
column t = TO_TIMESTAMP_LTZ(ts, 3) and WATERMARK FOR t AS t - INTERVAL '2' SECOND; the query is
the TUMBLE window TVF grouped by window_start, window_end, status. A bounded filesystem source
emits a final watermark at its end, so every window fires. Flink's CSV format cannot skip a
header line: with 'csv.ignore-parse-errors' the header becomes a row of NULLs (its `ts` is no
BIGINT), which a view drops before the window (counts are checked against DuckDB's by run.sh). Results go to a filesystem CSV sink (a directory of part files), which this script
concatenates into OUTPUT.csv with a header.
"""

import glob
import os
import shutil
import sys
import time

started = time.monotonic()

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402

src, dst = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
parallelism = int(sys.argv[3]) if len(sys.argv) > 3 else 2
parts = dst + ".parts"
shutil.rmtree(parts, ignore_errors=True)

t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
config = t_env.get_config()
config.set("parallelism.default", str(parallelism))
config.set("table.local-time-zone", "UTC")

t_env.execute_sql(
    f"""
    CREATE TABLE access (
        `ts` BIGINT,
        `ip` STRING,
        `method` STRING,
        `path` STRING,
        `status` INT,
        `bytes` BIGINT,
        `latency_ms` INT,
        `t` AS TO_TIMESTAMP_LTZ(COALESCE(`ts`, 0), 3),
        WATERMARK FOR `t` AS `t` - INTERVAL '2' SECOND
    ) WITH (
        'connector' = 'filesystem',
        'path' = 'file://{src}',
        'format' = 'csv',
        'csv.ignore-parse-errors' = 'true'
    )
    """
)
t_env.execute_sql(
    f"""
    CREATE TABLE results (
        `status` INT,
        `window_start` BIGINT,
        `window_end` BIGINT,
        `count` BIGINT,
        `avg_latency` DOUBLE,
        `sum_bytes` BIGINT
    ) WITH (
        'connector' = 'filesystem',
        'path' = 'file://{parts}',
        'format' = 'csv'
    )
    """
)
# The header line arrives as a row of NULLs (see above): the event-time column must not be
# NULL where the watermark is assigned (hence the COALESCE), and the row is dropped here.
t_env.execute_sql("CREATE TEMPORARY VIEW access_rows AS SELECT * FROM access WHERE `ts` IS NOT NULL")
result = t_env.execute_sql(
    """
    INSERT INTO results
    SELECT `status`,
           CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000,
           CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_end) AS BIGINT) * 1000,
           COUNT(*),
           AVG(CAST(`latency_ms` AS DOUBLE)),
           SUM(`bytes`)
    FROM TABLE(TUMBLE(TABLE access_rows, DESCRIPTOR(`t`), INTERVAL '10' SECOND))
    GROUP BY window_start, window_end, `status`
    """
)
result.wait()
ran = time.monotonic() - started

files = sorted(f for f in glob.glob(os.path.join(parts, "**", "*"), recursive=True) if os.path.isfile(f))
hidden = [f for f in files if os.path.basename(f).startswith(".")]
if hidden:
    print(f"flink: warning: {len(hidden)} hidden (in-progress?) part files: {hidden[:3]}", file=sys.stderr)
with open(dst, "w") as out:
    out.write("status,window_start,window_end,count,avg_latency,sum_bytes\n")
    for f in files:
        if os.path.basename(f).startswith("."):
            continue
        with open(f) as part:
            shutil.copyfileobj(part, out)
print(f"flink (pyflink): {src} -> {dst} (parallelism {parallelism}, {len(files)} part files): "
      f"{ran:.3f} s since the script started")
