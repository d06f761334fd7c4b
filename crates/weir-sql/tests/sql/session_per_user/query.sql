SELECT window_start, window_end, user_id,
       count(*) AS clicks, count(amount) AS n_amount, sum(amount) AS total, max(amount) AS biggest,
       min(ts_ms) AS first_ms, max(ts_ms) AS last_ms
FROM clicks
GROUP BY session(ts, INTERVAL '10' SECOND), user_id
