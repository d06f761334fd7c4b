SELECT window_start, status,
       count(*) AS n,
       sum(bytes) / count(*) AS bytes_per_row,
       sum(latency) / count(latency) AS mean_latency,
       max(latency) - min(latency) AS spread,
       CASE WHEN count(*) > 10 THEN 'busy' ELSE 'quiet' END AS load
FROM access
GROUP BY tumble(ts, INTERVAL '30' SECOND), status
HAVING count(*) >= 3 AND avg(latency) > 60
