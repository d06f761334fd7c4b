SELECT window_start, window_end, host, count(*) AS n, sum(bytes) AS total_bytes, min(id) AS first_id
FROM access
GROUP BY tumble(ts_ms, INTERVAL '5' SECOND), host
