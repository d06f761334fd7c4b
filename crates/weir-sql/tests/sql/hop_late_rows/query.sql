SELECT window_start, window_end, status / 100 AS class,
       count(*) AS n, sum(delta) AS total_delta, max(id) AS last_id
FROM access
GROUP BY hop(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND), status / 100
