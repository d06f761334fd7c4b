SELECT ts_ms // 60000 * 60000 AS window_start, ts_ms // 60000 * 60000 + 60000 AS window_end, sensor,
       count(*) AS n, count(value) AS n_value, avg(value) AS avg_value,
       min(value) AS min_value, max(value) AS max_value,
       sum(CASE WHEN ok THEN 1 ELSE 0 END) AS n_ok
FROM readings
GROUP BY ALL
