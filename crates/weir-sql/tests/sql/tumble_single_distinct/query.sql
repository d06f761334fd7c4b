SELECT window_start, count(DISTINCT host) AS hosts
FROM access
GROUP BY tumble(ts, INTERVAL '30' SECOND)
