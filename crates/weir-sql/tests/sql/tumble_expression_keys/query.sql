SELECT window_start, status / 100 AS class, COALESCE(host, '?') AS h,
       count(*) AS n, sum(latency) AS total_latency
FROM access
GROUP BY tumble(ts, INTERVAL '20' SECOND), status / 100, COALESCE(host, '?')
