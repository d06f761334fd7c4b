SELECT ts_ms // 20000 * 20000 AS window_start, status // 100 AS class, COALESCE(host, '?') AS h,
       count(*) AS n, sum(latency) AS total_latency
FROM access
GROUP BY ALL
