-- A row is in 3 windows; each (row, window) is late on its own when the window's end - 1 <= the
-- watermark the row's batch sees (max(ts_ms of earlier batches) - 5 s - 1 ms).
WITH batch_max AS (SELECT _batch, max(ts_ms) AS m FROM access GROUP BY _batch),
watermark AS (
    SELECT _batch, max(m) OVER (ORDER BY _batch ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   - 5000 - 1 AS wm
    FROM batch_max
),
windowed AS (
    SELECT a.*, (ts_ms // 5000 - k) * 5000 AS window_start, w.wm
    FROM access a JOIN watermark w USING (_batch), range(0, 3) AS r(k)
)
SELECT window_start, window_start + 15000 AS window_end, status // 100 AS class,
       count(*) AS n, sum(delta) AS total_delta, max(id) AS last_id
FROM windowed
WHERE wm IS NULL OR window_start + 15000 - 1 > wm
GROUP BY ALL
