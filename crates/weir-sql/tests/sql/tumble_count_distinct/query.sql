SELECT window_start, status, count(DISTINCT host) AS hosts, count(DISTINCT path) AS paths, count(*) AS n
FROM access
GROUP BY tumble(ts, INTERVAL '30' SECOND), status
