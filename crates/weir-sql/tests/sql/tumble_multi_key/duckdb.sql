SELECT ts_ms // 60000 * 60000 AS window_start, ts_ms // 60000 * 60000 + 60000 AS window_end, host, status,
       count(*) AS n, sum(bytes) AS total_bytes, min(path) AS first_path, max(path) AS last_path,
       max(latency) AS max_latency
FROM access
WHERE status < 500 AND host IS NOT NULL
GROUP BY ALL
