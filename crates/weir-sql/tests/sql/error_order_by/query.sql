SELECT host, bytes FROM access ORDER BY bytes
