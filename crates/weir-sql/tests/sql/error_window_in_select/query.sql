SELECT tumble(ts, INTERVAL '1' MINUTE) AS w, count(*) AS n FROM access
