SELECT ts_ms // 60000 * 60000 AS window_start, host, count(*) AS n FROM access
GROUP BY ALL
ORDER BY n DESC, window_start, host NULLS FIRST LIMIT 7
