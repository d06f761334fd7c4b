SELECT w * 60000 AS window_start, w * 60000 + 120000 AS window_end, status, count(*) AS n
FROM (SELECT status, ts_ms // 60000 AS w FROM access
      UNION ALL SELECT status, ts_ms // 60000 - 1 AS w FROM access)
GROUP BY ALL
