-- Rows without an event time are in no window (dead letters: dead_letters.sql).
SELECT ts_ms // 20000 * 20000 AS window_start, host,
       count(*) AS n, count(bytes) AS n_bytes, sum(bytes) AS total_bytes, avg(bytes) AS avg_bytes,
       min(latency) AS min_latency, max(latency) AS max_latency
FROM access
WHERE ts_ms IS NOT NULL
GROUP BY ALL
