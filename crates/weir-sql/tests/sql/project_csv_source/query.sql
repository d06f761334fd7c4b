SELECT ts_ms, sensor, value * 2 AS doubled, NOT ok AS bad, value IS NULL AS missing
FROM readings
WHERE value IS NULL OR value > 50.5 OR ok = false
