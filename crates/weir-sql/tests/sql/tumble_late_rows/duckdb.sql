-- Watermark seen by a row of batch b: max(ts_ms of batches < b) - 5 s - 1 ms. A row is late (dropped)
-- when its window's end - 1 <= that watermark.
WITH batch_max AS (SELECT _batch, max(ts_ms) AS m FROM access GROUP BY _batch),
watermark AS (
    SELECT _batch, max(m) OVER (ORDER BY _batch ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                   - 5000 - 1 AS wm
    FROM batch_max
),
windowed AS (
    SELECT a.*, ts_ms // 10000 * 10000 AS window_start, ts_ms // 10000 * 10000 + 10000 AS window_end, w.wm
    FROM access a JOIN watermark w USING (_batch)
)
SELECT window_start, window_end, status // 100 AS class,
       count(*) AS n, sum(bytes) AS total_bytes, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms
FROM windowed
WHERE wm IS NULL OR window_end - 1 > wm
GROUP BY ALL
