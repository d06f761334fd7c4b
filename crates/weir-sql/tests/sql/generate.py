"""Inputs and expected outputs of Weir's data-driven SQL tests, computed with DuckDB.

Run through regenerate.sh (it provides DuckDB). Every directory next to this file is a case:

    source.sql     CREATE SOURCE statement(s); `{dir}` stands for the case's directory
    query.sql      the Weir query
    case.json      optional: {"parallelism": [1, 2], "source": "file" | "memory",
                              "event_time": ["ts_ms", bound_ms],   (memory sources only)
                              "ordered": true}   (expected.csv keeps DuckDB's row order, and
                              Weir's rows must come in that order: queries with ORDER BY)
    input.jsonl    rows (JSON lines) or input.csv (header line, then rows), written here
    duckdb.sql     the same query in plain SQL for DuckDB, over a table named like the source
    expected.csv   what duckdb.sql returns, written here
    dead_letters.sql  optional: a DuckDB query over the same table returning one number, the rows
                   Weir must send to the dead letters (e.g. rows without an event time)
    expected_dead_letters.txt  what dead_letters.sql returns, written here (no file: 0)
    error.txt      instead of duckdb.sql/expected.csv: substrings the planning error must contain,
                   one a line (a line `!text`: must not contain)

The DuckDB table has the source's read columns (types from source.sql) plus:

    _line   the row's index in the input, from 0
    _batch  the input batch the row arrives in. A file source reads lines in batches of
            LINES_PER_BATCH (a CSV header line counts); the watermark rises after each batch, so
            a row of batch b sees the watermark max(ts of batches < b) - bound - 1 ms. A memory
            source (case.json) sends one row per batch: _batch = _line.

Inputs are generated from fixed seeds, so a run rewrites the same bytes.
"""

import csv
import io
import json
import random
import re
import sys
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
# weir_connectors::DEFAULT_BATCH_SIZE: lines per batch of a file source.
LINES_PER_BATCH = 1024
# 2023-11-14T22:13:20Z, in epoch ms.
BASE = 1_700_000_000_000

HOSTS = ["alpha", "beta", "gamma", "delta"]
PATHS = [
    "/api/users",
    "/api/orders",
    "/api/items/42",
    "/api",
    "/apix/legacy",
    "/static/app.js",
    "/index.html",
    "/health",
]
STATUSES = [200] * 8 + [201, 204, 301, 304, 400, 404, 404, 500, 503]


def maybe(rng, p, value):
    return None if rng.random() < p else value


def access_row(rng, i, ts, p_null_host=0.08, p_null_bytes=0.1, p_null_latency=0.1):
    return {
        "id": i,
        "ts_ms": ts,
        "host": maybe(rng, p_null_host, rng.choice(HOSTS)),
        "path": rng.choice(PATHS),
        "status": rng.choice(STATUSES),
        "bytes": maybe(rng, p_null_bytes, rng.randint(0, 5000)),
        "latency": maybe(rng, p_null_latency, round(rng.uniform(0.5, 250.0), 3)),
        "delta": rng.randint(-50, 50),
    }


def access(seed, n, span_ms, jitter_ms=0, **nulls):
    """`n` rows over `span_ms`, in time order up to `jitter_ms`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = BASE + i * span_ms // n + rng.randint(0, jitter_ms)
        rows.append(access_row(rng, i, ts, **nulls))
    return rows


def access_with_late_rows(seed, n, step_ms, p_behind, behind_ms):
    """In time order (a little jitter) but some rows `behind_ms` (a range) behind the rest."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = BASE + i * step_ms + rng.randint(0, step_ms // 2)
        if i > 20 and rng.random() < p_behind:
            ts -= rng.randint(*behind_ms)
        rows.append(access_row(rng, i, ts))
    return rows


def null_heavy(seed):
    """Many NULL keys and values; a whole host whose bytes are all NULL; rows without time."""
    rng = random.Random(seed)
    rows = []
    for i in range(300):
        ts = BASE + i * 400 + rng.randint(0, 300)
        r = access_row(rng, i, ts, p_null_host=0.3, p_null_bytes=0.3, p_null_latency=0.3)
        if r["host"] == "delta":
            r["bytes"] = None
        if i % 37 == 5:
            r["ts_ms"] = None
        rows.append(r)
    return rows


def sessions(seed):
    """Clicks of users in bursts. Inside a burst the gaps are below 10 s or exactly 10 s (touching
    sessions merge); between bursts 10.001 s or more. Shuffled: sessions merge out of order."""
    rng = random.Random(seed)
    rows = []
    users = ["ann", "bob", "cyd", "dee", None]
    for u in users:
        t = BASE + rng.randint(0, 5_000)
        for _burst in range(rng.randint(4, 8)):
            for _click in range(rng.randint(1, 9)):
                rows.append({"user_id": u, "ts_ms": t, "amount": maybe(rng, 0.15, rng.randint(1, 100))})
                t += rng.choice([rng.randint(0, 9_999), rng.randint(0, 9_999), 10_000])
            t += rng.choice([10_001, 10_001, rng.randint(10_001, 60_000)])
    rng.shuffle(rows)
    for i, r in enumerate(rows):
        r["id"] = i
    return rows


def readings(seed):
    rng = random.Random(seed)
    rows = []
    for i in range(240):
        rows.append({
            "ts_ms": BASE + i * 1_000 + rng.randint(0, 900),
            "sensor": rng.choice(["s-1", "s-2", "s-3"]),
            "value": maybe(rng, 0.1, round(rng.uniform(-20.0, 120.0), 2)),
            "ok": maybe(rng, 0.1, rng.random() < 0.8),
        })
    return rows


# Case name -> rows. Every case with a generated input is listed here.
INPUTS = {
    "project_scalar_functions": lambda: access(1, 300, 120_000),
    "project_csv_source": lambda: readings(2),
    "tumble_csv_source": lambda: readings(2),
    "tumble_global_aggregates": lambda: access(3, 400, 180_000, jitter_ms=2_000),
    "tumble_count_distinct": lambda: access(4, 400, 180_000, jitter_ms=2_000),
    "tumble_single_distinct": lambda: access(4, 400, 180_000, jitter_ms=2_000),
    "tumble_multi_key": lambda: access(5, 500, 300_000, jitter_ms=5_000),
    "tumble_null_keys_and_values": lambda: null_heavy(6),
    "tumble_expression_keys": lambda: access(7, 400, 120_000),
    "tumble_group_by_without_aggregates": lambda: access(14, 300, 300_000, jitter_ms=3_000),
    "hop_per_host": lambda: access(8, 400, 120_000, jitter_ms=1_000),
    "session_per_user": lambda: sessions(9),
    "session_global": lambda: sessions(9),
    "having_and_aggregate_expressions": lambda: access(10, 500, 300_000),
    "tumble_late_rows": lambda: access_with_late_rows(11, 3_000, 100, 0.05, (5_000, 150_000)),
    "hop_late_rows": lambda: access_with_late_rows(12, 2_500, 100, 0.05, (5_000, 120_000)),
    "memory_per_row_watermark": lambda: access_with_late_rows(13, 400, 250, 0.08, (1_000, 20_000)),
    "batch_group_by": lambda: access(15, 600, 300_000, jitter_ms=3_000),
    "batch_global_aggregate": lambda: access(16, 500, 300_000, jitter_ms=3_000),
    "batch_order_by_limit": lambda: access(17, 3_000, 300_000, jitter_ms=3_000),
    "batch_order_by_windowed": lambda: access(18, 2_000, 600_000, jitter_ms=5_000),
    "batch_over_window": lambda: access(19, 300, 120_000, jitter_ms=2_000),
    "tumble_qualified_column_and_interval_forms": lambda: access(20, 400, 300_000),
}


def split_top_level(text):
    out, cur, depth, quote = [], "", 0, None
    for c in text:
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += c
    if cur.strip():
        out.append(cur.strip())
    return out


def source_columns(source_sql):
    """(table name, [(column, SQL type)], options) of the first CREATE SOURCE: read columns only."""
    m = re.search(r"CREATE\s+SOURCE\s+(\w+)\s*\(", source_sql, re.IGNORECASE)
    if not m:
        raise ValueError("no CREATE SOURCE")
    depth, start = 0, m.end() - 1
    for i in range(start, len(source_sql)):
        depth += {"(": 1, ")": -1}.get(source_sql[i], 0)
        if depth == 0:
            break
    columns = []
    for item in split_top_level(source_sql[start + 1 : i]):
        name, rest = item.split(None, 1)
        if name.upper() == "WATERMARK" or re.match(r"AS\s", rest, re.IGNORECASE):
            continue
        columns.append((name.lower(), rest.strip()))
    options = dict(re.findall(r"(\w+)\s*=\s*'([^']*)'", source_sql[i:]))
    return m.group(1).lower(), columns, {k.lower(): v for k, v in options.items()}


def csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def render_input(rows, fmt, columns):
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([c for c, _ in columns])
        for r in rows:
            w.writerow([csv_cell(r.get(c)) for c, _ in columns])
        return buf.getvalue()
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)


def read_input(text, fmt, columns):
    """The rows of an input file, as the test reads it (values by column; NULLs as None)."""
    if fmt == "csv":
        lines = list(csv.reader(io.StringIO(text)))
        header = lines[0]
        return [{h: (v if v != "" else None) for h, v in zip(header, line)} for line in lines[1:]]
    return [json.loads(line) for line in text.splitlines()]


def expected_cell(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def sort_key(row):
    return [(c is None, str(c)) for c in row]


def case_table(input_text, fmt, table, columns, memory):
    """A DuckDB connection with the case's input as `table` (plus _line and _batch)."""
    rows = read_input(input_text, fmt, columns)
    con = duckdb.connect()
    cols = ", ".join(f'"{c}" {t}' for c, t in columns)
    con.execute(f"CREATE TABLE {table} ({cols}, _line BIGINT, _batch BIGINT)")
    header_lines = 1 if fmt == "csv" else 0
    values = []
    for i, r in enumerate(rows):
        batch = i if memory else (i + header_lines) // LINES_PER_BATCH
        values.append([r.get(c) for c, _ in columns] + [i, batch])
    placeholders = ", ".join("?" for _ in range(len(columns) + 2))
    con.executemany(f"INSERT INTO {table} VALUES ({placeholders})", values)
    return con


def expected_dead_letters(case_dir, input_text, fmt, table, columns, memory):
    con = case_table(input_text, fmt, table, columns, memory)
    [(n,)] = con.execute((case_dir / "dead_letters.sql").read_text()).fetchall()
    return f"{n}\n"


def expected_csv(case_dir, input_text, fmt, table, columns, memory, ordered):
    con = case_table(input_text, fmt, table, columns, memory)
    query = (case_dir / "duckdb.sql").read_text()
    result = con.execute(query)
    header = [d[0] for d in result.description]
    out_rows = result.fetchall() if ordered else sorted(result.fetchall(), key=sort_key)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in out_rows:
        w.writerow([expected_cell(v) for v in r])
    return buf.getvalue()


def main(argv):
    check = "--check" in argv
    only = [a for a in argv if not a.startswith("--")]
    cases = sorted(d for d in HERE.iterdir() if (d / "query.sql").is_file())
    if only:
        cases = [d for d in cases if d.name in only]
    unknown = set(INPUTS) - {d.name for d in HERE.iterdir() if d.is_dir()}
    if unknown:
        sys.exit(f"INPUTS names cases without a directory: {sorted(unknown)}")
    stale = []

    def put(path, text):
        old = path.read_text() if path.exists() else None
        if old == text:
            return
        if check:
            stale.append(str(path.relative_to(HERE)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE)}")

    for d in cases:
        config = json.loads((d / "case.json").read_text()) if (d / "case.json").exists() else {}
        memory = config.get("source") == "memory"
        source_sql = (d / "source.sql").read_text()
        table, columns, options = source_columns(source_sql)
        fmt = options.get("format", "json")
        input_path = d / ("input.csv" if fmt == "csv" else "input.jsonl")
        if d.name in INPUTS:
            text = render_input(INPUTS[d.name](), fmt, columns)
            put(input_path, text)
        elif input_path.exists():
            text = input_path.read_text()
        else:
            text = None
        if (d / "duckdb.sql").exists():
            if text is None:
                sys.exit(f"{d.name}: duckdb.sql but no input")
            ordered = config.get("ordered", False)
            put(d / "expected.csv", expected_csv(d, text, fmt, table, columns, memory, ordered))
            if (d / "dead_letters.sql").exists():
                dead = expected_dead_letters(d, text, fmt, table, columns, memory)
                put(d / "expected_dead_letters.txt", dead)
        elif not (d / "error.txt").exists():
            sys.exit(f"{d.name}: neither duckdb.sql nor error.txt")
    if stale:
        print("out of date (run regenerate.sh):\n  " + "\n  ".join(stale))
        sys.exit(1)
    print(f"{len(cases)} cases {'checked' if check else 'up to date'}")


if __name__ == "__main__":
    main(sys.argv[1:])
