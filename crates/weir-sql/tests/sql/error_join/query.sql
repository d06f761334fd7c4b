SELECT a.id, h.owner FROM access a JOIN hosts h ON a.host = h.host
