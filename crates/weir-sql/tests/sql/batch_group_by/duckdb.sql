SELECT host, count(*) AS n, sum(bytes) AS total, avg(latency) AS mean FROM access GROUP BY host
