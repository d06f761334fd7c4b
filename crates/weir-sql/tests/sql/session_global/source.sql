CREATE SOURCE clicks (
    id BIGINT, user_id TEXT, ts_ms BIGINT, amount BIGINT,
    ts AS to_timestamp_millis(ts_ms),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = '{dir}/input.jsonl', format = 'json');
