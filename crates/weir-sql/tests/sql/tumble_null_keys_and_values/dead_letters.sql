-- Rows without an event time are in no window: each is a dead letter.
SELECT count(*) FROM access WHERE ts_ms IS NULL
