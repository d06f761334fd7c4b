SELECT id FROM access WHERE host
