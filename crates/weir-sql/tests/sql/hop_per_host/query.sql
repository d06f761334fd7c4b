SELECT window_start, window_end, host,
       count(*) AS n, sum(bytes) AS total_bytes, max(latency) AS max_latency, min(id) AS first_id
FROM access
GROUP BY hop(ts, INTERVAL '10' SECOND, INTERVAL '30' SECOND), host
