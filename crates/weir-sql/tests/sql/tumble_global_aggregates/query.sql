SELECT window_start, window_end,
       count(*) AS n, count(bytes) AS n_bytes, sum(bytes) AS total_bytes,
       avg(latency) AS avg_latency, min(latency) AS min_latency, max(bytes) AS max_bytes
FROM access
GROUP BY tumble(ts, INTERVAL '10' SECOND)
