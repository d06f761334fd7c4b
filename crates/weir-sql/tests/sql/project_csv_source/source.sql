CREATE SOURCE readings (
    ts_ms BIGINT, sensor TEXT, value DOUBLE, ok BOOLEAN,
    ts AS to_timestamp_millis(ts_ms),
    WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = '{dir}/input.csv', format = 'csv', header = 'true');
