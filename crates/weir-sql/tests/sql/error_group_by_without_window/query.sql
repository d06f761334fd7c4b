SELECT host, count(*) AS n FROM access GROUP BY host
