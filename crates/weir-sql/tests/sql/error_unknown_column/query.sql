SELECT id, hostname FROM access
