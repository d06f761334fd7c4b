SELECT ts_ms // 10000 * 10000 AS window_start, ts_ms // 10000 * 10000 + 10000 AS window_end,
       count(*) AS n, count(bytes) AS n_bytes, sum(bytes) AS total_bytes,
       avg(latency) AS avg_latency, min(latency) AS min_latency, max(bytes) AS max_bytes
FROM access
GROUP BY ALL
