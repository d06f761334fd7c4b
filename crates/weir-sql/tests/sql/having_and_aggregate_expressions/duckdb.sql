SELECT ts_ms // 30000 * 30000 AS window_start, status,
       count(*) AS n,
       sum(bytes) // count(*) AS bytes_per_row,  -- integer division, as in SQL
       sum(latency) / count(latency) AS mean_latency,
       max(latency) - min(latency) AS spread,
       CASE WHEN count(*) > 10 THEN 'busy' ELSE 'quiet' END AS load
FROM access
GROUP BY ALL
HAVING count(*) >= 3 AND avg(latency) > 60
