SELECT id, host, row_number() OVER (PARTITION BY host ORDER BY ts_ms, id) AS rn FROM access
