-- A row at t is in the windows [s, s + 30 s) with s a multiple of 10 s and t - 30 s < s <= t.
WITH windowed AS (
    SELECT *, (ts_ms // 10000 - k) * 10000 AS window_start
    FROM access, range(0, 3) AS r(k)
)
SELECT window_start, window_start + 30000 AS window_end, host,
       count(*) AS n, sum(bytes) AS total_bytes, max(latency) AS max_latency, min(id) AS first_id
FROM windowed
GROUP BY ALL
