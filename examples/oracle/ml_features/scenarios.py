"""The runs of ml_features that oracle.py compares with DuckDB's results, one check per line:

1. `--training-set happened.csv` and `--as-served --training-set served.csv`: the rows, and the
   summary's events, malformed, late and labels;
2. `--training-set happened.parquet`: read by DuckDB, equal to happened.csv; `--online-lookups
   online.csv`: the running pipeline's lookups as the append clock reaches each label's t,
   equal to the oracle's as served;
3. the flavours differ exactly on the rows where the oracle's differ (late events in a window,
   or events appended after t), and there are rows of both causes;
4. per flavour, with `--data-dir`: `kills` runs killed (SIGKILL) after a random delay (within
   the time a whole run took; a run that ends first does not count), each restarted with the
   same arguments; after each kill the training set is absent or whole;
   the last run finishes and its training set is the oracle's; one more run on the finished
   directory writes it again;
5. online: `--follow --serve 127.0.0.1:<free port>`; after `caught up`, `GET
   /features/user_txn/<user>?at=<t>` for up to 200 labels with t at or after the append time of
   the last line (there the live state is *as served*): values, statuses, newest_event; then
   SIGINT, and the run exits 0.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import duckdb

from oracle import COLUMNS, DISTINCT, FLAVOURS, WINDOWS, Checks, Expected, compare_csv, distinct_ok, read_csv

RUN_TIMEOUT = 1800  # seconds for one run of the example
ONLINE_LABELS = 200


def summary_of(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("summary "):
        return None
    try:
        s = json.loads(lines[-1][len("summary "):])
    except ValueError:
        return None
    return s if isinstance(s, dict) else None


def tail(path: str, n: int = 12) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError as e:
        return str(e)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(binary: str, argv: list[str]) -> list[str]:
    """Every run serves lookups (default 127.0.0.1:9899): on a free port instead."""
    return [binary, *argv, "--serve", f"127.0.0.1:{free_port()}"]


def run(binary: str, argv: list[str], log: str) -> tuple[int, str, float]:
    """Runs the example to its end (in the directory of `log`): exit status, stdout, seconds."""
    started = time.monotonic()
    with open(log, "w") as err:
        try:
            p = subprocess.run(command(binary, argv), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                               text=True, timeout=RUN_TIMEOUT, check=False, cwd=os.path.dirname(log))
        except subprocess.TimeoutExpired:
            return -1, "", time.monotonic() - started
    return p.returncode, p.stdout, time.monotonic() - started


def check_run(c: Checks, what: str, rc: int, stdout: str, took: float, log: str, exp: Expected,
              labels: bool = True) -> bool:
    if not c.check(rc == 0, f"{what}: exits 0 ({took:.1f} s)", f"exit status {rc}; stderr:\n{tail(log)}"):
        return False
    s = summary_of(stdout)
    if not c.check(s is not None, f"{what}: the last line of stdout is `summary {{json}}`",
                   "stdout ends with:\n" + "\n".join(stdout.splitlines()[-3:])):
        return True
    want = {"events": exp.events, "malformed": exp.malformed, "late": exp.late}
    if labels:
        want["labels"] = len(exp.rows["happened"])
    got = {k: s.get(k) for k in want}
    first = ", ".join(f"{n} ({u}, {b / 3.6e6:.1f} h behind)" for n, u, b in exp.first_late)
    c.check(got == want, f"{what}: summary {got} (users: weir {s.get('users')}; oracle {exp.users} with valid "
            f"events, {exp.users_not_late} with events that are not late)",
            f"oracle: {want}\nthe first late lines (behind the largest ts of the lines before): {first}")
    return True


def training_runs(c: Checks, exp: Expected, args, ev: str, lb: str) -> tuple[dict, dict]:
    rows, took_by = {}, {}
    for flavour in FLAVOURS:
        out = os.path.join(args.work, f"{flavour}.csv")
        log = os.path.join(args.work, f"{flavour}.stderr")
        argv = ["--input", ev, "--labels", lb, "--training-set", out] + (["--as-served"] if flavour == "served" else [])
        rc, stdout, took = run(args.bin, argv, log)
        took_by[flavour] = max(took, 1.0)
        if check_run(c, f"training set as {flavour} (csv)", rc, stdout, took, log, exp):
            rows[flavour] = compare_csv(c, f"training set as {flavour} (csv)", out, exp, flavour)

    # Parquet: the same rows as the CSV (and so as the oracle's).
    out = os.path.join(args.work, "happened.parquet")
    log = os.path.join(args.work, "parquet.stderr")
    rc, stdout, took = run(args.bin, ["--input", ev, "--labels", lb, "--training-set", out], log)
    if check_run(c, "training set as happened (parquet)", rc, stdout, took, log, exp) and rows.get("happened"):
        try:
            con = duckdb.connect()
            cur = con.execute("SELECT * FROM read_parquet(?)", [out])
            names = [d[0] for d in cur.description]
            types = [str(d[1]) for d in cur.description]
            got = [["" if v is None else str(v) for v in r] for r in cur.fetchall()]
            con.close()
        except duckdb.Error as e:
            c.check(False, "parquet: DuckDB reads it", str(e))
        else:
            bad = [i for i, (a, b) in enumerate(zip(got, rows["happened"])) if a != b]
            c.check(names == COLUMNS and len(got) == len(rows["happened"]) and not bad,
                    f"parquet: {len(got)} rows equal to the CSV's (columns {', '.join(sorted(set(types)))})",
                    f"columns {names}\n{len(got)} rows vs {len(rows['happened'])}; {len(bad)} differ"
                    + "".join(f"\nrow {i + 1}: parquet {got[i]}, csv {rows['happened'][i]}" for i in bad[:5]))

    # Online: each label's features taken from the running pipeline as the append clock
    # reaches its t, which are the oracle's as served.
    out = os.path.join(args.work, "online.csv")
    log = os.path.join(args.work, "online-lookups.stderr")
    argv = ["--input", ev, "--labels", lb, "--online-lookups", out, "--as-served",
            "--training-set", os.path.join(args.work, "served-online.csv")]
    rc, stdout, took = run(args.bin, argv, log)
    if check_run(c, "online lookups (--online-lookups)", rc, stdout, took, log, exp):
        compare_csv(c, "online lookups as the append clock reached each label", out, exp, "served")
    return rows, took_by


def flavours_differ(c: Checks, exp: Expected, rows: dict) -> None:
    exact = [k for k in range(2, len(COLUMNS)) if k != DISTINCT]
    h, s = exp.rows["happened"], exp.rows["served"]
    oracle_diff = {i for i in range(len(h)) if any(h[i][k] != s[i][k] for k in exact)}
    by_late = {i for i in oracle_diff if exp.why[i][0] > 0 or exp.why[i][2]}
    by_append = oracle_diff - by_late
    c.check(bool(by_late) and bool(by_append),
            f"the oracle's flavours differ on {len(oracle_diff)} rows: {len(by_late)} with late events, "
            f"{len(by_append)} only with events appended after t (both kinds present)")
    if rows.get("happened") is None or rows.get("served") is None:
        c.check(False, "as served and as happened differ where the oracle's do", "a training set is missing")
        return
    wh, ws = rows["happened"], rows["served"]
    weir_diff = {i for i in range(min(len(wh), len(ws))) if any(wh[i][k:k + 1] != ws[i][k:k + 1] for k in exact)}
    only_w, only_o = sorted(weir_diff - oracle_diff), sorted(oracle_diff - weir_diff)
    c.check(not only_w and not only_o and bool(weir_diff),
            f"as served and as happened differ on exactly the oracle's {len(oracle_diff)} rows",
            f"{len(only_w)} rows differ only in Weir's ({[i + 1 for i in only_w[:10]]}), "
            f"{len(only_o)} only in the oracle's ({[i + 1 for i in only_o[:10]]})")


def resumed_runs(c: Checks, exp: Expected, args, ev: str, lb: str, full: dict) -> None:
    rng = random.Random(args.seed)
    for flavour in FLAVOURS:
        data = os.path.join(args.work, f"resume-{flavour}.data")
        out = os.path.join(args.work, f"resume-{flavour}.csv")
        argv = ["--input", ev, "--labels", lb, "--training-set", out, "--data-dir", data]
        argv += ["--as-served"] if flavour == "served" else []
        what = f"as {flavour} with --data-dir"
        moments, torn = [], []
        # The kill comes within the time a whole run took: first the plain run's; after a run
        # that ended before its kill, that run's (a resumed run can be quicker).
        span = full[flavour]
        # Up to `kills` kills: a run that ends before its kill is followed by another attempt.
        for k in range(3 * args.kills):
            if sum(m.startswith("killed") for m in moments) == args.kills:
                break
            delay = rng.uniform(0.05, 0.8) * span
            log = os.path.join(args.work, f"resume-{flavour}-{k}.stderr")
            with open(log, "w") as err:
                started = time.monotonic()
                p = subprocess.Popen(command(args.bin, argv), stdout=subprocess.DEVNULL, stderr=err,
                                     stdin=subprocess.DEVNULL, cwd=args.work)
                try:
                    p.wait(timeout=delay)
                    span = time.monotonic() - started
                    moments.append(f"ended after {span:.1f} s, before its kill at {delay:.1f} s (exit {p.returncode})")
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    moments.append(f"killed at {delay:.1f} s")
            if os.path.exists(out):  # a killed run leaves none or the whole file
                header, got = read_csv(out)
                if header != COLUMNS or len(got) != len(exp.rows[flavour]):
                    torn.append(f"after run {k + 1}: {len(got)} rows, header {header[:3]}...")
        killed = sum(m.startswith("killed") for m in moments)
        c.check(not torn and killed == args.kills, f"{what}: {killed} runs killed, {len(moments) - killed} ended first "
                f"({'; '.join(moments)}); the training set is absent or whole after each",
                "\n".join(torn) or f"{killed} kills, not {args.kills}")
        for attempt in ("finishing run", "one more run"):
            log = os.path.join(args.work, f"resume-{flavour}-{attempt.split()[0]}.stderr")
            rc, stdout, took = run(args.bin, argv, log)
            ok = c.check(rc == 0, f"{what}: the {attempt} exits 0 ({took:.1f} s; summary "
                         f"{json.dumps(summary_of(stdout))})", f"exit status {rc}; stderr:\n{tail(log)}")
            if ok:
                compare_csv(c, f"{what}, {attempt}", out, exp, flavour)


def expected_json(row: tuple) -> dict:
    """The served row's features as the endpoint should answer them: (value, status)."""
    u, t, *f = row
    counts, sums, distinct, last, newest = f[0:3], f[3:6], f[6], f[7], f[8]
    out = {}

    def status(n: int) -> str:
        return "present" if n > 0 else ("expired" if newest is not None else "empty")

    for i, (name, _) in enumerate(WINDOWS):
        out[f"txn_count_{name}"] = (counts[i], status(counts[i]))
        out[f"amount_sum_{name}"] = (sums[i], status(counts[i]))
    out["distinct_merchants_24h"] = (distinct, status(counts[-1]))
    out["last_amount"] = (last, "present" if newest is not None else "empty")
    return out


def compare_lookup(body: dict, row: tuple) -> list[str]:
    u, t = row[0], row[1]
    newest = row[-1]
    bad = []
    for key, want in (("view", "user_txn"), ("entity", u), ("at", t), ("newest_event", newest)):
        if body.get(key) != want:
            bad.append(f"{key} {body.get(key)!r}, oracle {want!r}")
    feats = body.get("features") or {}
    for name, (value, status) in expected_json(row).items():
        got = feats.get(name)
        if not isinstance(got, dict):
            bad.append(f"{name} missing")
            continue
        gv, gs = got.get("value"), got.get("status")
        if name == "distinct_merchants_24h":
            same = isinstance(gv, (int, float)) and distinct_ok(gv, value)
        elif value is None:
            same = gv is None
        else:
            same = isinstance(gv, (int, float)) and not isinstance(gv, bool) and gv == value
        if not same or gs != status:
            bad.append(f"{name} {gv!r}/{gs}, oracle {value!r}/{status}")
    return bad


def online(c: Checks, exp: Expected, args, ev: str) -> None:
    port = free_port()
    log = os.path.join(args.work, "online.stderr")
    err = open(log, "w")
    # (At its end the example also writes a training set, of no labels: into the work dir.)
    p = subprocess.Popen([args.bin, "--input", ev, "--follow", "--serve", f"127.0.0.1:{port}"],
                         stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True, cwd=args.work)
    out: list[str] = []
    caught_up = threading.Event()

    def reader() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            out.append(line)
            if line.startswith("caught up"):
                caught_up.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    started = time.monotonic()
    try:
        while not caught_up.wait(0.2):
            if p.poll() is not None or time.monotonic() - started > RUN_TIMEOUT:
                break
        took = time.monotonic() - started
        if not c.check(caught_up.is_set(), f"online: `caught up` printed ({took:.1f} s)",
                       f"exit status {p.poll()}; stdout:\n{''.join(out[-5:])}stderr:\n{tail(log)}"):
            return
        picks = [i for i, r in enumerate(exp.rows["served"]) if r[1] >= exp.last_append][:ONLINE_LABELS]
        bad, statuses = [], {}
        for i in picks:
            row = exp.rows["served"][i]
            url = f"http://127.0.0.1:{port}/features/user_txn/{urllib.parse.quote(row[0], safe='')}?at={row[1]}"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    body = json.loads(resp.read())
            except (urllib.error.URLError, OSError, ValueError) as e:
                bad.append(f"label row {i + 1} ({row[0]}, t={row[1]}): {e}")
                continue
            for s in (v.get("status") for v in (body.get("features") or {}).values() if isinstance(v, dict)):
                statuses[s] = statuses.get(s, 0) + 1
            problems = compare_lookup(body, row)
            if problems:
                bad.append(f"label row {i + 1} ({row[0]}, t={row[1]}): " + "; ".join(problems))
        c.check(len(picks) >= min(ONLINE_LABELS, 20) and not bad,
                f"online: {len(picks)} lookups at t >= {exp.last_append} equal the oracle's as served rows "
                f"(statuses {statuses})", f"{len(bad)} differ\n" + "\n".join(bad[:8]))
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
            rc = f"{rc} (killed: no exit 60 s after SIGINT)"
        th.join(timeout=10)
        err.close()
    c.check(rc == 0, f"online: exits 0 after SIGINT (summary {json.dumps(summary_of(''.join(out)))})",
            f"exit status {rc}; stderr:\n{tail(log)}")


def run_all(c: Checks, exp: Expected, args) -> None:
    ev = os.path.join(args.data, "events.jsonl")
    lb = os.path.join(args.data, "labels.csv")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    print(f"     (kill delays drawn with --seed {args.seed})")
    rows, full = training_runs(c, exp, args, ev, lb)
    flavours_differ(c, exp, rows)
    resumed_runs(c, exp, args, ev, lb, full)
    online(c, exp, args, ev)
