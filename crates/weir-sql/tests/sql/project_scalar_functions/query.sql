SELECT id,
       upper(host) AS host_upper,
       concat(substr(path, 1, 4), '#', CAST(status AS VARCHAR), host) AS tag,
       CASE WHEN status >= 500 THEN 'server' WHEN status >= 400 THEN 'client' ELSE 'ok' END AS class,
       bytes * 2 + 1 AS bytes2,
       delta / 7 AS delta_div,
       delta % 7 AS delta_mod,
       latency * 1.5 - 0.25 AS latency_scaled,
       COALESCE(latency, -1.0) AS latency_or,
       COALESCE(host, 'none') AS host_or,
       character_length(path) AS path_len,
       host IS NULL AS no_host
FROM access
WHERE regexp_like(path, '^/api(/|$)') AND status <> 304 AND (bytes IS NULL OR bytes > 100)
