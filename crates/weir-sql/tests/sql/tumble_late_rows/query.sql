SELECT window_start, window_end, status / 100 AS class,
       count(*) AS n, sum(bytes) AS total_bytes, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms
FROM access
GROUP BY tumble(ts, INTERVAL '10' SECOND), status / 100
