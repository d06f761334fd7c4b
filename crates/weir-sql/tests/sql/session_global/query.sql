SELECT window_start, window_end, count(*) AS clicks, sum(amount) AS total, min(id) AS first_id
FROM clicks
GROUP BY session(ts, INTERVAL '10' SECOND)
