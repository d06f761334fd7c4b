SELECT window_start, sum(host) AS s FROM access GROUP BY tumble(ts, INTERVAL '1' MINUTE), status
