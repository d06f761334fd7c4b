SELECT ts_ms // 30000 * 30000 AS window_start, count(DISTINCT host) AS hosts
FROM access
GROUP BY ALL
