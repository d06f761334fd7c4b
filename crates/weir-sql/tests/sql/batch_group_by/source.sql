CREATE SOURCE access (
    id BIGINT, ts_ms BIGINT, host TEXT, path TEXT, status INT, bytes BIGINT, latency DOUBLE, delta BIGINT,
    ts AS to_timestamp_millis(ts_ms),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = '{dir}/input.jsonl', format = 'json');
