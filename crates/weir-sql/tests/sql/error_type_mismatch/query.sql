SELECT id, host - 1 AS x FROM access
