CREATE SOURCE access (
    id BIGINT, ts_ms BIGINT, host TEXT,
    ts AS to_timestamp_millis(ts_ms)
) WITH (connector = 'file', path = '{dir}/input.jsonl', format = 'json');
