-- GROUP BY without aggregate functions: the distinct keys of each window.
SELECT DISTINCT ts_ms // 60000 * 60000 AS window_start, host, status
FROM access
