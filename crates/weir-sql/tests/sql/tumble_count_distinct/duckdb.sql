SELECT ts_ms // 30000 * 30000 AS window_start, status,
       count(DISTINCT host) AS hosts, count(DISTINCT path) AS paths, count(*) AS n
FROM access
GROUP BY ALL
