SELECT window_start, count(*) AS n FROM access GROUP BY tumble(ts_ms, INTERVAL '1' MINUTE)
