SELECT window_start, host, status
FROM access
GROUP BY tumble(ts, INTERVAL '1' MINUTE), host, status
