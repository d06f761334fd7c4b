SELECT count(*) AS n, count(host) AS hosts, min(ts_ms) AS first, max(bytes) AS top FROM access
