-- Only the column types are used: the runner decodes input.jsonl with this source's schema into
-- one record batch per row and registers them with StreamContext::register_batches, event time
-- ts_ms (BIGINT epoch ms) with the bound of case.json.
CREATE SOURCE access (
    id BIGINT, ts_ms BIGINT, host TEXT, path TEXT, status INT, bytes BIGINT, latency DOUBLE, delta BIGINT
) WITH (connector = 'file', path = '{dir}/input.jsonl', format = 'json');
