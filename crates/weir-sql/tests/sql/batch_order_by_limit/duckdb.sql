SELECT id, host, bytes FROM access ORDER BY bytes DESC NULLS LAST, id LIMIT 10
