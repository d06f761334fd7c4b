SELECT window_start, host,
       count(*) AS n, count(bytes) AS n_bytes, sum(bytes) AS total_bytes, avg(bytes) AS avg_bytes,
       min(latency) AS min_latency, max(latency) AS max_latency
FROM access
GROUP BY tumble(ts, INTERVAL '20' SECOND), host
