SELECT window_start, host, count(*) AS n FROM access
GROUP BY tumble(ts, INTERVAL '1' MINUTE), host
ORDER BY n DESC, window_start, host NULLS FIRST LIMIT 7
