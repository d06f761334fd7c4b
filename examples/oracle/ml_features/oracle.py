#!/usr/bin/env python3
"""An independent oracle for examples/ml_features.rs: DuckDB computes both training sets (*as
happened* and *as served*) from the raw files with plain SQL, and the oracle compares them with
what ml_features wrote, served and summarised.

    oracle.py --bin PATH/TO/ml_features --work DIR --data DIR [--kills 3] [--seed S]
    oracle.py --self-test --work DIR

DIR of --data holds generate.py's events.jsonl, labels.csv and meta.json. The first form runs
ml_features (see `scenarios.py`), then prints one line per check, `ok ...` or `FAIL ...`, and
at the end `N passed, M failed`; the exit status is 1 when anything failed. `--self-test`
checks the SQL against the brute-force model of `model.py` on small generated inputs.

No Weir code computes an expected value. The rules, from the example's interface:

- a line is valid when it is a JSON object with `user` and `merchant` strings, a non-negative
  integer `amount_cents` and `ts` either a non-negative integer (epoch ms) or an RFC 3339 UTC
  time `YYYY-MM-DDTHH:MM:SS[.mmm]Z`; anything else is malformed;
- the append time of a valid line is the running maximum of the event times of the valid lines
  up to and including it; a valid line is late iff its ts <= (the maximum ts of the valid lines
  before it) - 1 h;
- a feature at t covers the user's events with t - w < ts <= t; `last_amount` is the amount of
  the newest event with ts <= t (a tie on ts: the later line); *as happened* uses every valid
  event, *as served* the events that are not late and whose append time is <= t.

How the SQL computes them (FEATURES_SQL), each step checked against the brute-force model by
`--self-test` (also run first by every check):

- windows *as happened*, and over the events that are not late: the labels are rows of the
  events' timeline per user, each window a RANGE frame (t - w, t] (a plain range join of labels
  and events is the same, but with hot users it makes labels x events rows: minutes here);
- *as served* = not late minus the events *in flight* at t (not late, ts <= t < append time),
  found by a range join; a merchant leaves the distinct count when all its not-late events in
  the window are in flight;
- `last_amount`: ASOF joins, for *as served* on the newest event so far per user in file
  order, as of the last line appended at or before t.

Counts, sums and `last_amount` must be equal; the distinct count within 2 % of the exact one
(so equal below 50). The summary's events, malformed, late and labels must be equal.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys

import duckdb

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import Checks  # noqa: E402
import generate  # noqa: E402
import model  # noqa: E402

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
WINDOWS = [("5m", 5 * MIN), ("1h", HOUR), ("24h", DAY)]
LATENESS = HOUR
COLUMNS = (["user", "ts"] + [f"txn_count_{n}" for n, _ in WINDOWS] + [f"amount_sum_{n}" for n, _ in WINDOWS]
           + ["distinct_merchants_24h", "last_amount"])
DISTINCT = COLUMNS.index("distinct_merchants_24h")
TOLERANCE = 0.02
FLAVOURS = ["happened", "served"]

LOAD_SQL = f"""
CREATE TEMP TABLE lines AS
WITH f AS (SELECT string_split(content, chr(10)) AS p FROM read_text($events)),
-- A final line end does not start another line.
g AS (SELECT CASE WHEN p[len(p)] = '' THEN p[1:len(p) - 1] ELSE p END AS p FROM f)
SELECT unnest(range(1, len(p) + 1)) AS line_no, unnest(p) AS line FROM g;

CREATE TEMP TABLE parsed AS
WITH a AS (SELECT line_no, CASE WHEN json_valid(line) AND json_type(line) = 'OBJECT' THEN line END AS j FROM lines),
b AS (
  SELECT line_no, j IS NOT NULL AS is_obj,
         json_type(j, '$.user') AS t_user, json_type(j, '$.merchant') AS t_merchant,
         json_type(j, '$.amount_cents') AS t_amount, json_type(j, '$.ts') AS t_ts,
         json_extract_string(j, '$.user') AS usr, json_extract_string(j, '$.merchant') AS merchant,
         json_extract_string(j, '$.amount_cents') AS amount_text, json_extract_string(j, '$.ts') AS ts_text
  FROM a),
c AS (
  SELECT *,
         CASE WHEN t_amount = 'UBIGINT' THEN TRY_CAST(amount_text AS BIGINT) END AS amount,
         CASE WHEN t_ts = 'UBIGINT' THEN TRY_CAST(ts_text AS BIGINT)
              -- strptime alone would take '.25' for 250 ms: the pattern wants 3 digits.
              WHEN t_ts = 'VARCHAR' AND regexp_full_match(ts_text, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}([.][0-9]{{3}})?Z')
                THEN epoch_ms(TRY_STRPTIME(ts_text, ['%Y-%m-%dT%H:%M:%S.%gZ', '%Y-%m-%dT%H:%M:%SZ']))
         END AS ts
  FROM b)
SELECT line_no, usr, merchant, amount, ts,
       coalesce(is_obj AND t_user = 'VARCHAR' AND t_merchant = 'VARCHAR' AND amount IS NOT NULL
                AND ts IS NOT NULL, false) AS ok
FROM c;

CREATE TEMP TABLE ev AS
SELECT line_no, usr, merchant, amount, ts,
       max(ts) OVER (ORDER BY line_no ROWS UNBOUNDED PRECEDING) AS append_ts,
       coalesce(ts <= max(ts) OVER (ORDER BY line_no ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) - {LATENESS},
                false) AS late
FROM parsed WHERE ok;

CREATE TEMP TABLE labels AS
WITH f AS (SELECT string_split(content, chr(10)) AS p FROM read_text($labels)),
g AS (SELECT unnest(range(1, len(p) + 1)) AS n, unnest(p) AS line FROM f)
SELECT n - 1 AS label_no, split_part(line, ',', 1) AS usr, CAST(split_part(line, ',', 2) AS BIGINT) AS t
FROM g WHERE n > 1 AND line <> '';
"""


def _frames() -> str:
    return ", ".join(f"w{i} AS (PARTITION BY usr ORDER BY ts RANGE BETWEEN {w - 1} PRECEDING AND CURRENT ROW)"
                     for i, (_, w) in enumerate(WINDOWS))


def _aggs(prefix: str, flt: str, distinct: bool = True) -> str:
    out = [f"count(amount) {flt} OVER w{i} AS {prefix}_count{i}" for i in range(len(WINDOWS))]
    out += [f"coalesce(sum(amount) {flt} OVER w{i}, 0) AS {prefix}_sum{i}" for i in range(len(WINDOWS))]
    if distinct:
        out.append(f"count(DISTINCT merchant) {flt} OVER w{len(WINDOWS) - 1} AS {prefix}_distinct")
    return ",\n         ".join(out)


def _inflight_aggs() -> str:
    out = [f"count(*) FILTER (WHERE ts > t - {w}) AS f_count{i}" for i, (_, w) in enumerate(WINDOWS)]
    out += [f"coalesce(sum(amount) FILTER (WHERE ts > t - {w}), 0) AS f_sum{i}" for i, (_, w) in enumerate(WINDOWS)]
    return ", ".join(out)


BUCKET = 30 * MIN  # any length gives the same result; it only bounds the join's candidates

FEATURES_SQL = f"""
-- As happened, and over the events that are not late: the labels join the events' timeline (a
-- label is a row without amount or merchant, which the aggregates skip) and each window is a
-- RANGE frame: the rows with ts in [t - w + 1, t] = (t - w, t] (ties with t included).
CREATE TEMP TABLE win AS
WITH u AS (
  SELECT usr, ts, merchant, amount, late, NULL::BIGINT AS label_no FROM ev
  UNION ALL
  SELECT usr, t, NULL, NULL, NULL, label_no FROM labels),
w AS (
  SELECT label_no,
         {_aggs("h", "")},
         {_aggs("n", "FILTER (WHERE NOT late)")},
         count(amount) FILTER (WHERE late) OVER w{len(WINDOWS) - 1} AS late_in_window
  FROM u
  WINDOW {_frames()})
SELECT * FROM w WHERE label_no IS NOT NULL;

-- In flight at t: events that are not late, with ts <= t < append time, in the 24 h window.
-- As served = not late minus these. A range join; the buckets (every bucket an event's
-- [ts, append time) touches) only narrow the candidates of the equality join.
CREATE TEMP TABLE inflight AS
WITH e AS (
  SELECT usr, merchant, amount, ts, append_ts, unnest(range(ts // {BUCKET}, (append_ts - 1) // {BUCKET} + 1)) AS b
  FROM ev WHERE NOT late AND append_ts > ts)
SELECT l.label_no, l.usr, l.t, e.merchant, e.amount, e.ts
FROM labels l JOIN e ON e.usr = l.usr AND e.b = l.t // {BUCKET}
WHERE e.ts <= l.t AND l.t < e.append_ts AND e.ts > l.t - {DAY};

CREATE TEMP TABLE inflight_agg AS
SELECT label_no, {_inflight_aggs()}, count(*) AS unappended_in_window FROM inflight GROUP BY label_no;

-- A merchant leaves the served distinct count when every not-late event of it in the window is
-- in flight: it has one in flight, and no event that is not late, appended by t, in the window.
CREATE TEMP TABLE lost AS
SELECT f.label_no, count(*) AS lost
FROM (SELECT DISTINCT label_no, usr, t, merchant FROM inflight) f
WHERE NOT EXISTS (SELECT 1 FROM ev e WHERE e.usr = f.usr AND e.merchant = f.merchant AND NOT e.late
                  AND e.append_ts <= f.t AND e.ts > f.t - {DAY} AND e.ts <= f.t)
GROUP BY f.label_no;

-- As happened: the newest event with ts <= t; a tie on ts goes to the later line.
CREATE TEMP TABLE last_h AS
WITH d AS (SELECT usr, ts, arg_max(amount, line_no) AS amount FROM ev GROUP BY usr, ts)
SELECT l.label_no, d.amount, d.ts FROM labels l ASOF LEFT JOIN d ON l.usr = d.usr AND l.t >= d.ts;

-- As served: the lines appended at or before t are a prefix of the file (append times never
-- decrease); among its events that are not late, the newest by (ts, line). Since append time
-- >= ts, every such event has ts <= t.
CREATE TEMP TABLE last_s AS
WITH s AS (
  SELECT usr, line_no, append_ts,
         arg_max({{'amount': amount, 'ts': ts}}, {{'ts': ts, 'line': line_no}})
           OVER (PARTITION BY usr ORDER BY line_no ROWS UNBOUNDED PRECEDING) AS best
  FROM ev WHERE NOT late),
d AS (SELECT usr, append_ts, arg_max(best, line_no) AS best FROM s GROUP BY usr, append_ts)
SELECT l.label_no, d.best.amount AS amount, d.best.ts AS ts
FROM labels l ASOF LEFT JOIN d ON l.usr = d.usr AND l.t >= d.append_ts;
"""

def _result_sql() -> str:
    k = range(len(WINDOWS))
    served = [f"w.n_count{i} - coalesce(f.f_count{i}, 0)" for i in k]
    served += [f"w.n_sum{i} - coalesce(f.f_sum{i}, 0)" for i in k]
    served.append("w.n_distinct - coalesce(x.lost, 0)")
    return f"""
SELECT l.label_no, l.usr, l.t,
       {", ".join(f"w.h_count{i}" for i in k)}, {", ".join(f"w.h_sum{i}" for i in k)}, w.h_distinct,
       lh.amount, lh.ts,
       {", ".join(served)},
       ls.amount, ls.ts,
       w.late_in_window, coalesce(f.unappended_in_window, 0),
       lh.ts IS NOT NULL AND ls.ts IS DISTINCT FROM lh.ts AS newest_differs
FROM labels l JOIN win w USING (label_no)
LEFT JOIN inflight_agg f USING (label_no) LEFT JOIN lost x USING (label_no)
LEFT JOIN last_h lh USING (label_no) LEFT JOIN last_s ls USING (label_no)
ORDER BY l.label_no
"""


RESULT_SQL = _result_sql()


def happened_sql() -> str:
    """One query for the *as happened* training set alone, columns named as the example's (after
    LOAD_SQL): what the benchmark times against the example."""
    k = range(len(WINDOWS))
    cols = [f"h_count{i} AS txn_count_{n}" for i, (n, _) in enumerate(WINDOWS)]
    cols += [f"h_sum{i} AS amount_sum_{n}" for i, (n, _) in enumerate(WINDOWS)]
    return f"""
WITH u AS (
  SELECT usr, ts, merchant, amount, NULL::BIGINT AS label_no FROM ev
  UNION ALL
  SELECT usr, t, NULL, NULL, label_no FROM labels),
w AS (SELECT label_no, {_aggs("h", "")} FROM u WINDOW {_frames()}),
d AS (SELECT usr, ts, arg_max(amount, line_no) AS amount FROM ev GROUP BY usr, ts),
lh AS (SELECT l.label_no, d.amount FROM labels l ASOF LEFT JOIN d ON l.usr = d.usr AND l.t >= d.ts)
SELECT l.usr AS "user", l.t AS ts, {", ".join(cols)}, h_distinct AS distinct_merchants_24h, lh.amount AS last_amount
FROM labels l JOIN w USING (label_no) LEFT JOIN lh USING (label_no)
ORDER BY l.label_no
"""


def load(con: duckdb.DuckDBPyConnection, events: str, labels: str) -> None:
    """Runs LOAD_SQL: the tables lines, parsed, ev (valid events) and labels."""
    for stmt in LOAD_SQL.split(";\n"):
        if stmt.strip():
            params = {k: v for k, v in (("events", events), ("labels", labels)) if f"${k}" in stmt}
            con.execute(stmt, params or None)


class Expected:
    """The oracle's results for one pair of input files."""

    def __init__(self, events: str, labels: str) -> None:
        con = duckdb.connect()
        con.execute("SET threads TO 2")
        con.execute("SET enable_progress_bar = false")
        load(con, events, labels)
        for stmt in FEATURES_SQL.split(";\n"):
            if stmt.strip():
                con.execute(stmt)
        self.lines, self.events, self.late, self.users, self.users_not_late, self.last_append = con.execute(
            "SELECT (SELECT count(*) FROM lines), count(*), count(*) FILTER (WHERE late),"
            " count(DISTINCT usr), count(DISTINCT usr) FILTER (WHERE NOT late), max(ts) FROM ev").fetchone()
        self.malformed = self.lines - self.events
        # The first late lines, for the report of a differing late count: (line, user, ms behind).
        self.first_late = con.execute(
            "SELECT line_no, usr, append_ts - ts FROM ev WHERE late ORDER BY line_no LIMIT 6").fetchall()
        self.verdicts = [ok for (ok,) in con.execute("SELECT ok FROM parsed ORDER BY line_no").fetchall()]
        # Per flavour, one row per label: (user, t, counts x3, sums x3, distinct, last or None,
        # newest event time or None); and per label why the flavours differ.
        self.rows: dict[str, list[tuple]] = {"happened": [], "served": []}
        self.why: list[tuple[int, int, bool]] = []
        for r in con.execute(RESULT_SQL).fetchall():
            _, u, t = r[:3]
            self.rows["happened"].append((u, t, *r[3:12]))
            self.rows["served"].append((u, t, *r[12:21]))
            self.why.append(r[21:24])
        con.close()


def csv_row(row: tuple) -> list[str]:
    """An expected row as the example's CSV writes it (without the newest event time)."""
    return [str(v) if v is not None else "" for v in row[:len(COLUMNS)]]


def distinct_ok(got: int, exact: int) -> bool:
    return abs(got - exact) <= TOLERANCE * exact


def diff_table(got: list[list[str]], expect: list[tuple], header: list[str] | None = None) -> str:
    """How Weir's rows differ from the oracle's: '' if they are equal (the distinct count within
    the tolerance), else the differing columns with counts and the first rows."""
    problems = []
    if header is not None and header != COLUMNS:
        problems.append(f"header {header}, expected {COLUMNS}")
    if len(got) != len(expect):
        problems.append(f"{len(got)} rows, expected {len(expect)} (one per label)")
    per_col: collections.Counter = collections.Counter()
    examples = []
    for i, (g, e) in enumerate(zip(got, expect)):
        want = csv_row(e)
        bad = []
        for k, name in enumerate(COLUMNS):
            gv = g[k] if k < len(g) else None
            if k == DISTINCT:
                try:
                    same = distinct_ok(int(gv), int(want[k]))
                except (TypeError, ValueError):
                    same = False
            else:
                same = gv == want[k]
            if not same:
                bad.append(f"{name} weir {gv!r} oracle {want[k]!r}")
                per_col[name] += 1
        if len(g) != len(COLUMNS):
            bad.append(f"{len(g)} fields")
            per_col["(fields)"] += 1
        if bad:
            if len(examples) < 8:
                examples.append(f"label row {i + 1} ({e[0]}, t={e[1]}): " + "; ".join(bad))
    if per_col:
        n = sum(1 for g, e in zip(got, expect) if g != csv_row(e))
        problems.append(f"differing columns (rows): {dict(per_col)}; up to {n} rows")
        problems += examples
    return "\n".join(problems)


def read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return (rows[0] if rows else []), rows[1:]


def compare_csv(c: Checks, what: str, path: str, exp: Expected, flavour: str) -> list[list[str]] | None:
    """Compares one training set with the oracle's; returns its rows if it could be read."""
    try:
        header, rows = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        c.check(False, f"{what}: the training set is readable CSV", f"{path}: {e}")
        return None
    expect = exp.rows[flavour]
    detail = diff_table(rows, expect, header)
    c.check(not detail, f"{what}: {len(expect)} rows equal to the oracle's ({flavour})", detail)
    return rows


def self_test(c: Checks, work: str) -> None:
    """The SQL against the brute-force model, on small generated inputs (exact distinct too)."""
    for n_events, n_labels, seed in ((400, 300, 1), (3000, 600, 2)):
        d = os.path.join(work, f"self-test-{seed}")
        generate.generate(d, n_events, n_labels, seed)
        ev, lb = os.path.join(d, "events.jsonl"), os.path.join(d, "labels.csv")
        exp = Expected(ev, lb)
        verdicts, rows = model.training_sets(ev, lb)
        c.check(verdicts == exp.verdicts,
                f"self-test {seed}: SQL and model agree which of the {len(verdicts)} lines are valid",
                f"{sum(a != b for a, b in zip(verdicts, exp.verdicts))} differ")
        for flavour in FLAVOURS:
            bad = [f"label row {i + 1}: model {m}, SQL {s}"
                   for i, (m, s) in enumerate(zip(rows[flavour], exp.rows[flavour])) if tuple(m) != tuple(s)]
            c.check(len(rows[flavour]) == len(exp.rows[flavour]) and not bad,
                    f"self-test {seed}: SQL equals the model on all {len(rows[flavour])} rows ({flavour})",
                    f"{len(bad)} differ\n" + "\n".join(bad[:5]))
        con = duckdb.connect()
        load(con, ev, lb)
        alone = con.execute(happened_sql()).fetchall()
        con.close()
        want = [tuple(r[:len(COLUMNS)]) for r in rows["happened"]]
        c.check(alone == want, f"self-test {seed}: the benchmark's query alone equals the model (happened)",
                f"{sum(a != b for a, b in zip(alone, want))} of {len(want)} rows differ")
        n_late = sum(1 for h, s in zip(rows["happened"], rows["served"]) if h != s)
        c.check(n_late > 0, f"self-test {seed}: {n_late} rows differ between the flavours (not vacuous)")


def check_meta(c: Checks, exp: Expected, data: str) -> None:
    """The SQL's reading of the input agrees with what the generator made (an oracle self-check)."""
    with open(os.path.join(data, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    got = {"lines": exp.lines, "events": exp.events, "malformed": exp.malformed, "late": exp.late}
    want = {k: meta[k] for k in got}
    c.check(got == want, f"the SQL reads the input as the generator wrote it: {got}", f"generator: {want}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="the ml_features binary")
    ap.add_argument("--work", required=True, help="a scratch directory")
    ap.add_argument("--data", help="generate.py's output directory")
    ap.add_argument("--kills", type=int, default=3, help="kill -9s per resumed run (default 3)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill delays (default: random)")
    ap.add_argument("--self-test", action="store_true", help="only check the SQL against model.py")
    args = ap.parse_args()
    # The runs happen in the work directory: every path absolute.
    args.work = os.path.abspath(args.work)
    args.data = args.data and os.path.abspath(args.data)
    args.bin = args.bin and os.path.abspath(args.bin)
    c = Checks()
    try:
        self_test(c, args.work)
        if not args.self_test:
            if not args.bin or not args.data:
                ap.error("--bin and --data are needed unless --self-test")
            import scenarios

            exp = Expected(os.path.join(args.data, "events.jsonl"), os.path.join(args.data, "labels.csv"))
            check_meta(c, exp, args.data)
            scenarios.run_all(c, exp, args)
    except Exception as e:  # an error of the oracle itself is a failure too
        import traceback

        c.check(False, "the oracle ran", "".join(traceback.format_exception(e))[-2000:])
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
