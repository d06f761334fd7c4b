SELECT window_start, window_end, a.status, count(*) AS n
FROM access a
GROUP BY hop(a.ts, INTERVAL 1 MINUTE, '2 minutes'), a.status
