-- Each click opens [t, t + 10 s); per user, sessions that overlap or touch merge: a click starts a
-- new session when it comes more than 10 s after every earlier click of the user.
WITH ordered AS (
    SELECT *, max(ts_ms) OVER (PARTITION BY user_id ORDER BY ts_ms, id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
    FROM clicks
),
numbered AS (
    SELECT *, sum(CASE WHEN prev_max IS NULL OR ts_ms > prev_max + 10000 THEN 1 ELSE 0 END)
                  OVER (PARTITION BY user_id ORDER BY ts_ms, id) AS session
    FROM ordered
)
SELECT min(ts_ms) AS window_start, max(ts_ms) + 10000 AS window_end, user_id,
       count(*) AS clicks, count(amount) AS n_amount, sum(amount) AS total, max(amount) AS biggest,
       min(ts_ms) AS first_ms, max(ts_ms) AS last_ms
FROM numbered
GROUP BY user_id, session
