SELECT count(*) AS n FROM access
