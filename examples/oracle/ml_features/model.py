"""A brute-force model of the ml_features training sets, written from the interface's rules in
plain Python loops: the oracle's self-check of its SQL on small inputs (`oracle.py
--self-test`). It looks at every event for every label, so it is only for a few thousand of
each; nothing of Weir's is compared with it directly.
"""

from __future__ import annotations

import calendar
import csv
import json
import re

MIN = 60_000
HOUR = 60 * MIN
WINDOWS = [5 * MIN, HOUR, 24 * HOUR]
LATENESS = HOUR
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{3}))?Z")


def parse_ts(v: object) -> int | None:
    """Epoch ms from an integer or an RFC 3339 UTC string; None if it is neither."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v >= 0 else None
    if not isinstance(v, str):
        return None
    m = RFC3339.fullmatch(v)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y, mo)[1] and h <= 23 and mi <= 59 and s <= 59):
        return None
    return calendar.timegm((y, mo, d, h, mi, s)) * 1000 + int(m.group(7) or 0)


def parse_line(line: str) -> tuple | None:
    """(user, merchant, amount, ts) of a valid line, None for a malformed one."""
    try:
        o = json.loads(line)
    except ValueError:
        return None
    if not isinstance(o, dict):
        return None
    u, m, a = o.get("user"), o.get("merchant"), o.get("amount_cents")
    if not isinstance(u, str) or not isinstance(m, str):
        return None
    if not isinstance(a, int) or isinstance(a, bool) or a < 0:
        return None
    ts = parse_ts(o.get("ts"))
    return None if ts is None else (u, m, a, ts)


def read_events(path: str) -> tuple[list[bool], list[dict]]:
    """Per line whether it is valid, and the valid events in file order with their append
    time and late flag."""
    verdicts, events = [], []
    running = None
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n")[:-1]:
            p = parse_line(line)
            verdicts.append(p is not None)
            if p is None:
                continue
            u, m, a, ts = p
            late = running is not None and ts <= running - LATENESS
            running = ts if running is None else max(running, ts)
            events.append({"user": u, "merchant": m, "amount": a, "ts": ts, "append": running, "late": late,
                           "line": len(verdicts)})
    return verdicts, events


def read_labels(path: str) -> list[tuple[str, int]]:
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r)
        return [(u, int(t)) for u, t in r]


def features(events: list[dict], user: str, t: int) -> list:
    """count x3, sum x3, distinct 24 h, last amount (None if none), newest event time."""
    mine = [e for e in events if e["user"] == user and e["ts"] <= t]
    row: list = []
    for w in WINDOWS:
        row.append(sum(1 for e in mine if e["ts"] > t - w))
    for w in WINDOWS:
        row.append(sum(e["amount"] for e in mine if e["ts"] > t - w))
    row.append(len({e["merchant"] for e in mine if e["ts"] > t - WINDOWS[-1]}))
    newest = None
    for e in mine:  # file order: a later line wins a tie on ts
        if newest is None or e["ts"] >= newest["ts"]:
            newest = e
    row.append(newest["amount"] if newest else None)
    row.append(newest["ts"] if newest else None)
    return row


def training_sets(events_path: str, labels_path: str) -> tuple[list[bool], dict[str, list[tuple]]]:
    """Line verdicts, and per flavour ("happened", "served") one row per label:
    (user, t, features..., newest event time)."""
    verdicts, events = read_events(events_path)
    labels = read_labels(labels_path)
    out: dict[str, list[tuple]] = {"happened": [], "served": []}
    for u, t in labels:
        out["happened"].append((u, t, *features(events, u, t)))
        served = [e for e in events if not e["late"] and e["append"] <= t]
        out["served"].append((u, t, *features(served, u, t)))
    return verdicts, out
