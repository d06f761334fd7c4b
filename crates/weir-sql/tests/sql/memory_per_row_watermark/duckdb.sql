-- One row per batch: row i sees the watermark max(ts_ms of rows before i) - 2 s - 1 ms, and is late
-- when its window's end - 1 <= it.
WITH marked AS (
    SELECT *, max(ts_ms) OVER (ORDER BY _line ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
              - 2000 - 1 AS wm,
           ts_ms // 5000 * 5000 AS window_start
    FROM access
)
SELECT window_start, window_start + 5000 AS window_end, host, count(*) AS n, sum(bytes) AS total_bytes,
       min(id) AS first_id
FROM marked
WHERE wm IS NULL OR window_start + 5000 - 1 > wm
GROUP BY ALL
