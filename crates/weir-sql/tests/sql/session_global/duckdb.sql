-- One session sequence over all clicks (no key): a click starts a new session when it comes more
-- than 10 s after every earlier click.
WITH ordered AS (
    SELECT *, max(ts_ms) OVER (ORDER BY ts_ms, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
    FROM clicks
),
numbered AS (
    SELECT *, sum(CASE WHEN prev_max IS NULL OR ts_ms > prev_max + 10000 THEN 1 ELSE 0 END)
                  OVER (ORDER BY ts_ms, id) AS session
    FROM ordered
)
SELECT min(ts_ms) AS window_start, max(ts_ms) + 10000 AS window_end,
       count(*) AS clicks, sum(amount) AS total, min(id) AS first_id
FROM numbered
GROUP BY session
