#!/usr/bin/env python3
"""An independent oracle for examples/log_analytics/main.rs: DuckDB recomputes every result kind from
the raw access log, and the oracle compares them with what log_analytics wrote.

    oracle.py --bin PATH/TO/log_analytics --work DIR NAME=LOG ... [--reuse]

For each NAME=LOG (LOG "@edge" stands for the edge-case log of edge_cases.py, written to DIR),
runs `log_analytics --input LOG --dir DIR/NAME.data --out DIR/NAME.out --quiet
--metrics-addr 127.0.0.1:0` (with --reuse: uses DIR/NAME.out and DIR/NAME.stderr as they are),
then prints one line per check, `ok ...` or `FAIL ...`, and at the end `N passed, M failed`;
the exit status is 1 when anything failed.

No Weir code computes an expected value. DuckDB reads the raw file (read_text) and parses it
with SQL regular expressions written from the rules in examples/log_analytics/access_log.rs
(the common/combined text formats; JSON lines are not implemented, and a check says so if an
input has any). What is compared:

- the summary on stderr: lines, parsed, malformed (dead letters), late, records per kind;
- status, clients, sessions: the sorted row sets, exactly (timestamps as RFC 3339 strings);
- paths: window, path, requests, rank and which fields are present, exactly; each percentile
  against the exact value at the rank the sketch uses (see PERCENTILES below);
- alerts: window, requests, errors and threshold exactly, error_ratio to 1e-9 relative.

Late records. Weir's watermark per log partition is the largest timestamp seen minus 5 s minus
1 ms, and a window operator's watermark is the minimum over partitions; the ingest appends the
lines in file order. So when a record r reaches a window, the watermark is at most P(r) - 5001,
P(r) being the largest timestamp of the parseable lines *before r in the file*, whatever the
partitioning (which this oracle does not replicate). Hence:

- a record can only be late for a window ending at e if e - 1 <= P(r) - 5001;
- a session can only be cut short or lose r if r's own session would be late
  (r + 30 min - 1 <= P(r) - 5001) or a session of r's client that r touches could have closed
  (a record of that client within [r - 30 min, P(r) - 5000 - 30 min]).

Windows (and sessions' clients) for which that holds are "possibly late": both sides' rows for
them are left out of the comparison, and listed. Weir's `late` count must then be at most the
number of (record, window operator) pairs that can be late; when no record is possibly late
(both shipped inputs A and B), it must be 0 and everything is compared.
"""

from __future__ import annotations

import argparse
import calendar
import collections
import json
import math
import os
import re
import subprocess
import sys
import time

import duckdb

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import edge_cases  # noqa: E402
from checks import Checks  # noqa: E402

MINUTE = 60_000
GAP = 30 * MINUTE  # session gap
SLIDE_SIZE = 5 * MINUTE  # clients: 5-minute windows sliding by 1 minute
BOUND = 5_000  # --max-disorder-secs 5
THRESHOLD = 0.05  # --error-threshold
TOP = 10
KINDS = ["status", "paths", "clients", "alerts", "sessions"]

# PERCENTILES: sketches-ddsketch 0.4.2 (Cargo.lock), `DDSketch::quantile(q)`: for 0 < q < 1 it
# takes rank = (q * (count - 1.0)) as u64, i.e. floor(q * (n - 1)), 0-based over the values in
# ascending order (`Store::key_at_rank`: the first bin whose cumulative count exceeds the rank),
# and returns that bin's representative gamma^k * 2*gamma/(1+gamma), which is within a relative
# 1 % (alpha = 0.01) of every value in the bin; values <= 1e-9 count as 0. So lo = hi = the exact
# value at rank floor(q * (n - 1)), and Weir's v must lie in [x*(1-alpha), x*(1+alpha)] (plus 1e-9
# absolute and 1e-9 relative slack for floating point at bin edges).
ALPHA = 0.01
QUANTILES = [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")]

# --- the grammar of access_log.rs, as RE2 patterns ------------------------------------------
# Rust's char::is_whitespace (Unicode White_Space): what `str::trim` strips.
WS = r"[\t\n\x0B\x0C\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
# Rust's f64::from_str, finite decimal forms ("inf"/"nan" parse but are rejected anyway).
FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
QUOTED = r'"(?:[^"\\]|\\.)*"'  # `\` escapes the next character
# `word()` skips spaces (only ' ') and takes up to the next space, so each word is followed by
# a space; `delimited()` skips spaces and wants its opening character right then.
LINE = (
    r"^ *([^ ]+) +([^ ]+) +([^ ]+) +\[([^\]]*)\] *"  # client ident user [time]
    r'"((?:[^"\\]|\\.)*)" *'  # "request"
    r"([^ ]+) +([^ ]+)"  # status bytes
    r"((?: .*)?)$"  # the rest: empty or after a space
)
# The rest after the bytes: optionally "referer" "user agent" (both, or neither is taken); then,
# if the next word (up to a space) is `digits.digits`, the request time; anything else is ignored.
SECS = r"[0-9]+\.[0-9]+"
TAIL = rf"^(?: *{QUOTED} *{QUOTED})?(?: *({SECS})(?: .*)?|.*)$"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
# `dd/Mon/yyyy:HH:MM:SS +zzzz`: the date splits on ':' or '/', the clock on ':'; the offset is
# what follows the first space: Z, or a sign and 4 digits with any ':' in between.
TIME = rf"^([0-9]+)[:/]({'|'.join(MONTHS)})[:/]([0-9]+)[:/]([0-9]+):([0-9]+):([0-9]+) (Z|[+-][0-9:]*)$"
# METHOD TARGET PROTOCOL, or METHOD TARGET (HTTP/0.9); the method an HTTP token (RFC 9110).
REQUEST = r"^ *([!#$%&'*+.^_`|~0-9A-Za-z-]+) +([^ ]+)(?: +(HTTP/[^ ]*))? *$"
# Apache's escapes \" and \\ are undone in the request before it is split.
UNESCAPE = r'\\(["\\])'

JSON_LINE = rf"^{WS}*\{{"


def q(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def rfc3339(col: str) -> str:
    return f"strftime(epoch_ms({col}), '%Y-%m-%dT%H:%M:%S.%gZ')"


PARSE_SQL = f"""
CREATE TEMP TABLE lines AS
WITH f AS (SELECT string_split(content, chr(10)) AS p FROM read_text($path)),
-- A final line end does not start another line; an empty file has no lines.
g AS (SELECT CASE WHEN p[len(p)] = '' THEN p[1:len(p) - 1] ELSE p END AS p FROM f)
-- FileSource drops the \\r before \\n; parse_access_log trims any further \\r.
SELECT line_no, regexp_replace(raw, '\\r+$', '') AS line
FROM (SELECT unnest(range(1, len(p) + 1)) AS line_no, unnest(p) AS raw FROM g);

CREATE TEMP TABLE fields AS
WITH a AS (
  SELECT line_no, line,
         regexp_matches(line, {q(JSON_LINE)}) AS is_json,
         regexp_matches(line, {q(LINE)}) AS m_line,
         regexp_extract(line, {q(LINE)},
                        ['client', 'ident', 'usr', 'tm', 'request', 'status', 'bytes', 'tail']) AS f
  FROM lines),
b AS (
  SELECT *,
         regexp_matches(f.tm, {q(TIME)}) AS m_time,
         regexp_extract(f.tm, {q(TIME)}, ['d', 'mon', 'y', 'h', 'mi', 's', 'off']) AS t,
         regexp_matches(regexp_replace(f.request, {q(UNESCAPE)}, '\\1', 'g'), {q(REQUEST)}) AS m_req,
         regexp_extract(regexp_replace(f.request, {q(UNESCAPE)}, '\\1', 'g'), {q(REQUEST)},
                        ['method', 'target', 'protocol']) AS r,
         regexp_extract(f.tail, {q(TAIL)}, ['t1']) AS tl
  FROM a),
c AS (
  SELECT *,
         TRY_CAST(t.d AS UINTEGER) AS d, list_position({MONTHS!r}, t.mon) AS mo,
         TRY_CAST(t.y AS UINTEGER) AS y, TRY_CAST(t.h AS UINTEGER) AS h,
         TRY_CAST(t.mi AS UINTEGER) AS mi, TRY_CAST(t.s AS UINTEGER) AS s,
         CASE WHEN t.off = 'Z' THEN '0000' ELSE replace(t.off[2:], ':', '') END AS off_digits,
         CASE WHEN t.off[1] = '-' THEN -1 ELSE 1 END AS off_sign,
         regexp_matches(f.status, '^[+]?[0-9]+$') AND TRY_CAST(ltrim(f.status, '+') AS USMALLINT) BETWEEN 100 AND 599 AS ok_status,
         TRY_CAST(ltrim(f.status, '+') AS USMALLINT) AS status,
         CASE WHEN f.bytes = '-' THEN 0::UBIGINT
              WHEN regexp_matches(f.bytes, '^[+]?[0-9]+$') THEN TRY_CAST(ltrim(f.bytes, '+') AS UBIGINT) END AS bytes,
         nullif(tl.t1, '') AS time_text
  FROM b),
d AS (
  SELECT *,
         TRY_CAST(time_text AS DOUBLE) AS time_s,
         -- Howard Hinnant's days_from_civil, in HUGEINT so that nothing overflows here.
         y::HUGEINT - CASE WHEN mo <= 2 THEN 1 ELSE 0 END AS yy,
         off_sign * (TRY_CAST(off_digits[1:2] AS INTEGER) * 60 + TRY_CAST(off_digits[3:4] AS INTEGER)) AS off_min
  FROM c),
e AS (
  SELECT *, (yy - ((yy % 400) + 400) % 400) // 400 AS era FROM d),
h AS (
  SELECT *,
         (era * 146097 + (yy - era * 400) * 365 + (yy - era * 400) // 4 - (yy - era * 400) // 100
          + (153 * ((mo + 9) % 12) + 2) // 5 + d - 1 - 719468) AS days
  FROM e)
SELECT line_no, line, is_json,
       coalesce(m_line AND NOT is_json
         AND m_time AND d BETWEEN 1 AND 31 AND mo IS NOT NULL AND y IS NOT NULL
         AND h <= 23 AND mi <= 59 AND s <= 60 AND length(off_digits) = 4 AND off_min IS NOT NULL
         AND m_req AND ok_status AND bytes IS NOT NULL, false) AS ok,
       ((days * 86400 + h * 3600 + mi * 60 + s) - off_min * 60) * 1000 AS ts_huge,
       f.client AS client, regexp_extract(r.target, '^[^?]*') AS path, status, bytes,
       CASE WHEN isfinite(time_s) THEN time_s * CAST(1000 AS DOUBLE) END AS time_ms
FROM h;

CREATE TEMP TABLE acc AS
SELECT line_no, ts_huge::BIGINT AS ts, ts_huge::BIGINT - (((ts_huge::BIGINT % {MINUTE}) + {MINUTE}) % {MINUTE}) AS m,
       client, path, status, bytes,
       ['1xx', '2xx', '3xx', '4xx', '5xx'][status // 100] AS cls, time_ms
FROM fields
WHERE ok AND ts_huge BETWEEN -9223372036854775808 AND 9223372036854775807;
"""

# Percentiles are of request times when the first parseable line of the first 1000 has one (or
# none parses), else of response bytes (log_analytics' has_request_time).
MODE_SQL = """
SELECT coalesce((SELECT time_ms IS NOT NULL FROM acc WHERE line_no <= 1000 ORDER BY line_no LIMIT 1), true)
"""

LATE_SQL = f"""
CREATE TEMP TABLE acc_p AS
SELECT *, max(ts) OVER (ORDER BY line_no ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p
FROM acc;

-- 1-minute windows (status, paths, alerts) that a record may have reached after they closed.
CREATE TEMP TABLE ex_minutes AS
SELECT DISTINCT m AS ws FROM acc_p WHERE m + {MINUTE} - 1 <= p - {BOUND} - 1;

-- 5-minute sliding windows likewise, one by one.
CREATE TEMP TABLE ex_slides AS
SELECT DISTINCT m - k * {MINUTE} AS ws
FROM acc_p, range(0, {SLIDE_SIZE // MINUTE}) w(k)
WHERE m - k * {MINUTE} + {SLIDE_SIZE} - 1 <= p - {BOUND} - 1;

-- Clients whose sessions a late record may change.
CREATE TEMP TABLE ex_clients AS
SELECT DISTINCT r.client FROM acc_p r
WHERE r.ts <= r.p - {BOUND}
  AND (r.ts + {GAP} - 1 <= r.p - {BOUND} - 1
       OR EXISTS (SELECT 1 FROM acc o WHERE o.client = r.client
                  AND o.ts BETWEEN r.ts - {GAP} AND r.p - {BOUND} - {GAP}));

-- Upper bound of Weir's `late` count: the three 1-minute window operators, the sliding one (a
-- record counts when all its windows are late) and the session one.
CREATE TEMP TABLE late_bound AS
SELECT 3 * count(*) FILTER (WHERE m + {MINUTE} - 1 <= p - {BOUND} - 1)
       + count(*) FILTER (WHERE m + {SLIDE_SIZE} - 1 <= p - {BOUND} - 1)
       + count(*) FILTER (WHERE ts + {GAP} - 1 <= p - {BOUND} - 1) AS n,
       count(*) FILTER (WHERE ts <= p - {BOUND}) AS behind
FROM acc_p;
"""

STATUS_SQL = f"""
SELECT {rfc3339('m')} AS window_start, {rfc3339(f'm + {MINUTE}')} AS window_end, cls AS status_class,
       count(*) AS requests, sum(bytes)::UBIGINT AS bytes
FROM acc WHERE m NOT IN (SELECT ws FROM ex_minutes) GROUP BY m, cls
"""

PATHS_SQL = f"""
WITH g AS (
  SELECT m, path, count(*) AS requests,
         list(v ORDER BY v) FILTER (WHERE v IS NOT NULL) AS vals
  FROM (SELECT *, CASE WHEN $ms THEN time_ms ELSE bytes::DOUBLE END AS v FROM acc)
  GROUP BY m, path),
r AS (SELECT *, row_number() OVER (PARTITION BY m ORDER BY requests DESC, path ASC) AS rank FROM g)
SELECT {rfc3339('m')}, {rfc3339(f'm + {MINUTE}')}, path, requests, rank, vals
FROM r WHERE rank <= {TOP} AND m NOT IN (SELECT ws FROM ex_minutes)
"""

CLIENTS_SQL = f"""
WITH w AS (SELECT m - k * {MINUTE} AS ws, client FROM acc, range(0, {SLIDE_SIZE // MINUTE}) t(k)),
g AS (SELECT ws, client, count(*) AS requests FROM w GROUP BY ws, client),
r AS (SELECT *, row_number() OVER (PARTITION BY ws ORDER BY requests DESC, client ASC) AS rank FROM g)
SELECT {rfc3339('ws')}, {rfc3339(f'ws + {SLIDE_SIZE}')}, client, requests, rank
FROM r WHERE rank <= {TOP} AND ws NOT IN (SELECT ws FROM ex_slides)
"""

ALERTS_SQL = f"""
SELECT {rfc3339('m')}, {rfc3339(f'm + {MINUTE}')}, count(*) AS requests,
       count(*) FILTER (WHERE status BETWEEN 500 AND 599) AS errors
FROM acc WHERE m NOT IN (SELECT ws FROM ex_minutes) GROUP BY m
"""

# A record opens [t, t + gap); sessions that overlap or touch merge: a new session starts when
# the next request is more than `gap` after the previous one.
SESSIONS_SQL = f"""
-- Ties in ts are ordered by line, the same way in both windows (else a tied row may start a
-- session in one order and be counted after it in the other).
WITH o AS (SELECT client, ts, line_no, lag(ts) OVER (PARTITION BY client ORDER BY ts, line_no) AS prev FROM acc),
s AS (SELECT client, ts,
             sum(CASE WHEN prev IS NULL OR ts - prev > {GAP} THEN 1 ELSE 0 END)
               OVER (PARTITION BY client ORDER BY ts, line_no ROWS UNBOUNDED PRECEDING) AS sid
      FROM o)
SELECT {rfc3339('min(ts)')}, {rfc3339(f'max(ts) + {GAP}')}, client, count(*) AS pages,
       (max(ts) - min(ts))::DOUBLE / CAST(1000 AS DOUBLE) AS duration_s
FROM s WHERE client NOT IN (SELECT client FROM ex_clients) GROUP BY client, sid
"""


def parse_summary(stderr: str) -> dict:
    s: dict = {"kinds": {}}
    for line in stderr.splitlines():
        if m := re.match(r"^(lines|parsed|malformed|late|not appended)\s+(\d+)", line):
            s[m.group(1)] = int(m.group(2))
        elif m := re.match(r"^(\w+)\s+(\d+) records -> ", line):
            s["kinds"][m.group(1)] = int(m.group(2))
    return s


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ms_of(rfc: str) -> int:
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", rfc)
    if not m:
        raise ValueError(f"not an RFC 3339 time with milliseconds: {rfc!r}")
    y, mo, d, h, mi, s, ms = map(int, m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) * 1000 + ms


def diff_rows(weir: list[tuple], oracle: list[tuple], limit: int = 5) -> str:
    w, o = collections.Counter(weir), collections.Counter(oracle)
    only_w, only_o = list((w - o).elements()), list((o - w).elements())
    if not only_w and not only_o:
        return ""
    out = [f"{len(only_w)} rows only in Weir's output, {len(only_o)} only in the oracle's"]
    out += [f"weir:   {r}" for r in sorted(only_w, key=repr)[:limit]]
    out += [f"oracle: {r}" for r in sorted(only_o, key=repr)[:limit]]
    return "\n".join(out)


def fmt_windows(ms_list: list[int]) -> str:
    names = [time.strftime("%Y-%m-%dT%H:%M", time.gmtime(v / 1000)) for v in sorted(ms_list)]
    return ", ".join(names[:6]) + (f" … ({len(names)})" if len(names) > 6 else "")


def run_input(c: Checks, name: str, log: str, args) -> None:
    work = args.work
    if log == "@edge":
        log = os.path.join(work, f"{name}.log")
        verdicts = edge_cases.write(log)
    else:
        verdicts = None
    if not log or not os.path.isfile(log):
        c.check(False, f"{name}: the input log is there",
                f"no file {log!r}" if log else "no file given (for B: `apt-get download logswan` failed, see stderr)")
        return
    out = os.path.join(work, f"{name}.out")
    err_path = os.path.join(work, f"{name}.stderr")

    # --- run log_analytics -----------------------------------------------------------------
    if args.reuse:
        rc, took = 0, 0.0
    else:
        started = time.monotonic()
        with open(err_path, "w") as err:
            rc = subprocess.run(
                [args.bin, "--input", log, "--dir", os.path.join(work, f"{name}.data"), "--out", out,
                 "--quiet", "--metrics-addr", "127.0.0.1:0"],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, check=False,
            ).returncode
        took = time.monotonic() - started
    stderr = open(err_path, encoding="utf-8", errors="replace").read()
    lines = stderr.splitlines()
    panics = [f"{a}\n  {b}" for a, b in zip(lines, lines[1:] + [""]) if "panicked at" in a]
    if not c.check(rc == 0, f"{name}: log_analytics --input {os.path.basename(log)} exits 0 ({took:.1f} s)",
                   f"exit status {rc}; stderr: " + "\n".join(panics[:3] or lines[-10:])):
        return
    summary = parse_summary(stderr)

    # --- the oracle's side -------------------------------------------------------------------
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    text_path = log
    raw = open(log, "rb").read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # FileSource replaces invalid UTF-8 by U+FFFD (as from_utf8_lossy and Python do); DuckDB
        # reads only UTF-8, so it gets a copy with the same replacement. Nothing else changes.
        text_path = os.path.join(work, f"{name}.utf8.log")
        with open(text_path, "wb") as f:
            f.write(raw.decode("utf-8", errors="replace").encode("utf-8"))
    for stmt in PARSE_SQL.split(";\n"):
        if stmt.strip():
            con.execute(stmt, {"path": text_path} if "$path" in stmt else None)
    n_lines, n_json, n_ok, n_in_range = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_json), count(*) FILTER (WHERE ok),"
        " count(*) FILTER (WHERE ok AND ts_huge BETWEEN 0 AND 253402300799999) FROM fields").fetchone()
    n_bad = n_lines - n_ok

    if verdicts is not None:
        got = [("ok" if ok else "bad") for (ok,) in con.execute("SELECT ok FROM fields ORDER BY line_no").fetchall()]
        wrong = [f"line {i + 1}: hand-written {v}, SQL {g}" for i, (v, g) in enumerate(zip(verdicts, got)) if v != g]
        c.check(len(got) == len(verdicts) and not wrong,
                f"{name}: the oracle's SQL grammar agrees with the hand-written verdicts of all {len(verdicts)} lines",
                f"{len(got)} lines read\n" + "\n".join(wrong[:10]))

    c.check(n_json == 0, f"{name}: no JSON lines (the oracle implements the text formats only)",
            f"{n_json} lines start with '{{'")
    c.check(n_in_range == n_ok, f"{name}: every parsed time is in 1970-01-01 .. 9999-12-31",
            f"{n_ok - n_in_range} are not: log_analytics panics formatting them (humantime), and a year "
            "past ~292 million overflows i64 in access_log.rs")

    c.check(summary.get("lines") == n_lines, f"{name}: lines = {n_lines}", f"summary says {summary.get('lines')}")
    c.check(summary.get("parsed") == n_ok, f"{name}: parsed = {n_ok}", f"summary says {summary.get('parsed')}")
    c.check(summary.get("malformed") == n_bad, f"{name}: malformed (dead letters) = {n_bad}",
            f"summary says {summary.get('malformed')}")
    c.check("not appended" not in summary, f"{name}: every line was appended to the topic",
            f"summary says not appended {summary.get('not appended')}")

    ms_mode = con.execute(MODE_SQL).fetchone()[0]
    for stmt in LATE_SQL.split(";\n"):
        if stmt.strip():
            con.execute(stmt)
    bound, behind = con.execute("SELECT n, behind FROM late_bound").fetchone()
    ex_min = [r[0] for r in con.execute("SELECT ws FROM ex_minutes").fetchall()]
    ex_slide = [r[0] for r in con.execute("SELECT ws FROM ex_slides").fetchall()]
    ex_cli = sorted(r[0] for r in con.execute("SELECT client FROM ex_clients").fetchall())
    late = summary.get("late")
    if bound == 0:
        c.check(late == 0, f"{name}: late = 0 ({behind} records >= 5 s behind an earlier line, none can be late)",
                f"summary says late {late}")
    else:
        c.check(late is not None and late <= bound,
                f"{name}: late = {late} <= {bound}, what the {behind} records >= 5 s behind an earlier line allow",
                f"summary says late {late}")
    excluded_min = {r[0] for r in con.execute(f"SELECT {rfc3339('ws')} FROM ex_minutes").fetchall()}
    excluded_slide = {r[0] for r in con.execute(f"SELECT {rfc3339('ws')} FROM ex_slides").fetchall()}
    if ex_min or ex_slide or ex_cli:
        print(f"     {name}: left out as possibly late: minutes {fmt_windows(ex_min) or '-'}; 5-minute windows "
              f"from {fmt_windows(ex_slide) or '-'}; sessions of {', '.join(ex_cli) or '-'}")

    # --- Weir's side ---------------------------------------------------------------------------
    weir = {}
    for kind in KINDS:
        path = os.path.join(out, f"{kind}.jsonl")
        try:
            weir[kind] = read_jsonl(path)
        except (OSError, ValueError) as e:
            c.check(False, f"{name}: {kind}.jsonl is readable JSON lines", str(e))
            weir[kind] = None
    counts = {k: len(v) for k, v in weir.items() if v is not None}
    c.check(summary["kinds"] == counts, f"{name}: records per kind in the summary match the files",
            f"summary {summary['kinds']}, files {counts}")

    def rows(kind: str, fields: list[str], excluded: set | None = None, key: str = "window_start"):
        """Weir's rows as tuples of `fields`, plus the field names each row has; None if unreadable."""
        out = []
        for r in weir[kind] or []:
            if excluded is not None and r.get(key) in excluded:
                continue
            out.append(tuple(r.get(f) for f in fields) + (tuple(sorted(r)),))
        return out

    def exact(kind: str, sql: str, fields: list[str], excluded: set | None, key: str = "window_start",
              params: dict | None = None) -> None:
        if weir[kind] is None:
            return
        names = tuple(sorted(fields))
        expect = [tuple(r) + (names,) for r in con.execute(sql, params).fetchall()]
        got = rows(kind, fields, excluded, key)
        left_out = len(weir[kind]) - len(got)
        note = f" ({left_out} of Weir's left out)" if left_out else ""
        c.check(not diff_rows(got, expect), f"{name}: {kind}: {len(expect)} rows equal{note}",
                diff_rows(got, expect))

    exact("status", STATUS_SQL, ["window_start", "window_end", "status_class", "requests", "bytes"], excluded_min)
    exact("clients", CLIENTS_SQL, ["window_start", "window_end", "client", "requests", "rank"], excluded_slide)
    exact("sessions", SESSIONS_SQL, ["window_start", "window_end", "client", "pages", "duration_s"], set(ex_cli),
          key="client")

    # paths: everything but the percentiles exactly, the percentiles within the sketch's error.
    if weir["paths"] is not None:
        unit = "ms" if ms_mode else "bytes"
        pfields = [f"{p}_{unit}" for _, p in QUANTILES]
        base = ["window_start", "window_end", "path", "requests", "rank"]
        expect, exp_vals = [], {}
        for ws, we, path, requests, rank, vals in con.execute(PATHS_SQL, {"ms": ms_mode}).fetchall():
            present = pfields if vals else []
            expect.append((ws, we, path, requests, rank, tuple(sorted(base + present))))
            exp_vals[(ws, path)] = vals or []
        got_rows = [r for r in weir["paths"] if r.get("window_start") not in excluded_min]
        got = [tuple(r.get(f) for f in base) + (tuple(sorted(r)),) for r in got_rows]
        left_out = len(weir["paths"]) - len(got)
        note = f" ({left_out} of Weir's left out)" if left_out else ""
        c.check(not diff_rows(got, expect),
                f"{name}: paths: {len(expect)} rows equal in window, path, requests, rank and fields "
                f"(percentiles of {'request time, ms' if ms_mode else 'response bytes'}){note}",
                diff_rows(got, expect))
        bad, checked = [], 0
        for r in got_rows:
            vals = exp_vals.get((r.get("window_start"), r.get("path")))
            if not vals:
                continue
            n = len(vals)
            for qv, p in QUANTILES:
                v = r.get(f"{p}_{unit}")
                if v is None:
                    continue  # a missing field is the row comparison's business
                x = vals[int(qv * (n - 1.0))]  # as the crate: (q * (n - 1.0)) as u64
                lo, hi = sorted((x * (1 - ALPHA), x * (1 + ALPHA)))
                slack = 1e-9 + 1e-9 * abs(x)
                checked += 1
                if not (lo - slack <= v <= hi + slack):
                    bad.append(f"{r['window_start']} {r['path']!r} {p}: weir {v}, exact {x} "
                               f"(rank {int(qv * (n - 1.0))} of {n}), allowed [{lo - slack}, {hi + slack}]")
        c.check(not bad and (checked > 0 or not expect),
                f"{name}: paths: {checked} percentiles within {ALPHA:.0%} of the exact value at rank floor(q*(n-1))",
                f"{len(bad)} out of bounds\n" + "\n".join(bad[:8]) if bad else "no percentile compared")

    # alerts: integers and threshold exactly, the ratio to 1e-9.
    if weir["alerts"] is not None:
        expect = []
        for ws, we, requests, errors in con.execute(ALERTS_SQL).fetchall():
            if errors > THRESHOLD * requests:  # as Weir: r.value.1 as f64 > threshold * r.value.0 as f64
                expect.append((ws, we, requests, errors, THRESHOLD, ("error_ratio", "errors", "requests",
                                                                     "threshold", "window_end", "window_start")))
        got_rows = [r for r in weir["alerts"] if r.get("window_start") not in excluded_min]
        got = [(r.get("window_start"), r.get("window_end"), r.get("requests"), r.get("errors"), r.get("threshold"),
                tuple(sorted(r))) for r in got_rows]
        ratio_bad = []
        for r in got_rows:
            try:
                want = r["errors"] / r["requests"]
                if not math.isclose(r["error_ratio"], want, rel_tol=1e-9, abs_tol=0.0):
                    ratio_bad.append(f"{r['window_start']}: error_ratio {r['error_ratio']}, errors/requests {want}")
            except (KeyError, TypeError, ZeroDivisionError) as e:
                ratio_bad.append(f"{r}: {e!r}")
        detail = diff_rows(got, expect) + ("\n" if ratio_bad else "") + "\n".join(ratio_bad[:5])
        c.check(not diff_rows(got, expect) and not ratio_bad,
                f"{name}: alerts: {len(expect)} rows equal (error_ratio to 1e-9)", detail.strip())

    # Timestamps Weir wrote are well-formed (the comparisons above use them as strings).
    malformed_ts = []
    for kind in KINDS:
        for r in weir[kind] or []:
            for f in ("window_start", "window_end"):
                try:
                    ms_of(r.get(f) or "")
                except ValueError as e:
                    malformed_ts.append(f"{kind}: {e}")
    c.check(not malformed_ts, f"{name}: every window_start/window_end is RFC 3339 UTC with milliseconds",
            "\n".join(malformed_ts[:5]))
    con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the log_analytics binary")
    ap.add_argument("--work", required=True, help="a scratch directory")
    ap.add_argument("--reuse", action="store_true", help="compare the outputs already in --work")
    ap.add_argument("inputs", nargs="+", metavar="NAME=LOG")
    args = ap.parse_args()
    c = Checks()
    for spec in args.inputs:
        name, _, log = spec.partition("=")
        try:
            run_input(c, name, log, args)
        except Exception as e:  # an error of the oracle itself is a failure too
            c.check(False, f"{name}: the oracle ran", f"{type(e).__name__}: {e}")
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
