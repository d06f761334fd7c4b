SELECT window_start, count(*) AS n FROM access GROUP BY tumble(ts, INTERVAL '1' MINUTE)
