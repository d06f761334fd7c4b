SELECT id, row_number() OVER (PARTITION BY host ORDER BY ts) AS rn FROM access
