#!/usr/bin/env python3
"""The inputs of the ml_features oracle: a deterministic (seeded) recording of card transactions
and a label file of (user, t) rows.

    generate.py --out DIR [--events N] [--labels M] [--seed S]

Writes DIR/events.jsonl (JSON lines `{"user", "merchant", "amount_cents", "ts"}`, in the order
they arrived), DIR/labels.csv (`user,ts`, ts in epoch ms) and DIR/meta.json (the generator's own
count of malformed lines and of events it made late: the oracle checks that its SQL agrees,
a test of the oracle, not of Weir). Nothing here is an expected feature value.

What the data holds, on purpose:

- hot users: 4 users with half of the events (and many merchants each, so that their 24 h
  distinct counts are in the thousands); the other users Zipf-like;
- time: ~3 days from 2026-03-01T00:00:00Z, one clock that moves forward (the running maximum);
- out of order within lateness: ~10 % of the events are 1 ms to 30 min behind the running
  maximum of the lines before them; beyond lateness: ~0.5 % are 90 min to 26 h behind it (a
  30 min margin either side of the 1 h lateness, so that how the engine batches its input
  cannot change which side an event falls, as long as a batch spans less than 30 min of event
  time: at the default size a line is ~0.8 s, a thousand lines ~13 min; the first lines come
  before any watermark, and late events there are in the data too);
- duplicate timestamps: ~1 % of the events are followed by another of the same user at the
  same ms with a different amount;
- idle users: ~2 % of the users have no event for 25 to 30 hours in the middle of the data;
- both `ts` forms: ~30 % of the lines have RFC 3339 (with milliseconds, or without when they
  are 0), the rest epoch ms;
- ~1 % malformed lines of several kinds (bad JSON, not an object, a missing field, a wrongly
  typed field, a negative amount, a `ts` that is not a time).

Labels (shuffled, so that label order is not time order):

- 10 % exactly on window boundaries: t = ts or t = ts + w (w in 5 min, 1 h, 24 h) of an event
  (any valid event, late ones and out-of-order ones included);
- 5 % on append-time boundaries: t = the append time of an out-of-order event, or 1 ms before
  it (the event is in *as happened* but, at t - 1, not yet in *as served*);
- 4 % after the end of the data (t from the last event time to 48 h later: windows expire);
- 2 % idle users inside their idle gap; 1 % users that have no event at all;
- the rest: a user of a random event or a uniformly random user, t uniform over the data.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import os
import random
import time

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
WINDOWS = [5 * MIN, HOUR, DAY]
START = 1_772_323_200_000  # 2026-03-01T00:00:00Z
SPAN = 3 * DAY
LATENESS = HOUR


def rfc3339(ms: int, rng: random.Random) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    frac = ms % 1000
    if frac == 0 and rng.random() < 0.5:
        return base + "Z"
    return f"{base}.{frac:03d}Z"


def malformed(rng: random.Random, ts: int) -> tuple[str, str]:
    """A malformed line and its kind."""
    ok = {"user": "u1", "merchant": "m1", "amount_cents": 100, "ts": ts}
    kind = rng.choice(["truncated", "text", "array", "missing", "type", "negative", "bad_time", "float"])
    if kind == "truncated":
        s = json.dumps(ok)
        return s[: rng.randrange(1, len(s) - 1)], kind
    if kind == "text":
        return rng.choice(["garbage", "user=u1 amount=100", "null", "42", '"a string"']), kind
    if kind == "array":
        return json.dumps(list(ok.values())), kind
    if kind == "missing":
        del ok[rng.choice(list(ok))]
        return json.dumps(ok), kind
    if kind == "type":
        field, value = rng.choice([("user", 17), ("merchant", None), ("amount_cents", "100"),
                                   ("ts", True), ("ts", [ts]), ("user", {"id": "u1"}), ("amount_cents", None)])
        ok[field] = value
        return json.dumps(ok), kind
    if kind == "negative":
        ok["amount_cents"] = -rng.randrange(1, 10_000)
        return json.dumps(ok), kind
    if kind == "bad_time":
        ok["ts"] = rng.choice(["yesterday", "2026-03-01", "10:00:00Z", "2026-13-01T00:00:00Z", ""])
        return json.dumps(ok), kind
    ok["amount_cents"] = 12.5
    return json.dumps(ok), kind


def generate(out: str, n_events: int, n_labels: int, seed: int) -> dict:
    rng = random.Random(seed)
    n_users = max(20, n_events // 50)
    users = [f"u{i}" for i in range(n_users)]
    hot = users[:4]
    # Weights: the 4 hot users half of the events, the others ~1/rank.
    rest_w = [1.0 / (k + 1) for k in range(n_users - 4)]
    scale = sum(rest_w)
    weights = [0.125] * 4 + [0.5 * w / scale for w in rest_w]
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    # Idle users: no event in [gap, gap + 25..30 h).
    idle = {}
    for u in rng.sample(users[4:], max(1, n_users // 50)):
        g = START + rng.randrange(int(0.2 * SPAN), int(0.45 * SPAN))
        idle[u] = (g, g + rng.randrange(25 * HOUR, 30 * HOUR))
    n_merchants = max(50, min(5_000, n_events // 100))
    home = {}  # a user's few usual merchants

    def pick_user(ts: int) -> str:
        while True:
            u = users[min(bisect.bisect_left(cum, rng.random() * acc), n_users - 1)]
            g = idle.get(u)
            if g is None or not (g[0] <= ts < g[1]):
                return u

    def pick_merchant(u: str) -> str:
        if u in hot or rng.random() < 0.1:
            return f"m{rng.randrange(n_merchants)}"
        if u not in home:
            home[u] = [rng.randrange(n_merchants) for _ in range(rng.randrange(1, 12))]
        return f"m{rng.choice(home[u])}"

    def amount() -> int:
        r = rng.random()
        if r < 0.02:
            return 0
        return int(10 ** rng.uniform(1, 5.5))

    gap = SPAN / n_events
    clock = START
    events = []  # (user, merchant, amount, ts) of the valid lines, in file order
    appended = []  # the running max after each valid line
    lines = []
    n_bad = n_late = n_ooo = 0
    kinds: dict[str, int] = {}
    ooo = []  # indexes (into events) of out-of-order events
    i = 0
    while len(events) < n_events:
        if rng.random() < 0.01:
            line, kind = malformed(rng, clock)
            lines.append(line)
            kinds[kind] = kinds.get(kind, 0) + 1
            n_bad += 1
            continue
        r = rng.random()
        kind = "in_order"
        if r < 0.10 and events:
            ts = clock - rng.randrange(1, 30 * MIN + 1)
            kind = "out_of_order"
        elif r < 0.105 and events:
            ts = clock - rng.randrange(90 * MIN, 26 * HOUR)
            kind = "late"
        else:
            clock += max(1, int(rng.expovariate(1.0 / gap)))
            ts = clock
        u = pick_user(ts)
        reps = 2 if rng.random() < 0.01 else 1  # a duplicate timestamp: same user, same ms
        for _ in range(reps):
            if len(events) >= n_events:
                break
            m, a = pick_merchant(u), amount()
            t_field: object = rfc3339(ts, rng) if rng.random() < 0.3 else ts
            lines.append(json.dumps({"user": u, "merchant": m, "amount_cents": a, "ts": t_field},
                                    separators=(",", ":") if i % 2 else (", ", ": ")))
            if kind == "out_of_order":
                n_ooo += 1
                ooo.append(len(events))
            n_late += kind == "late"
            events.append((u, m, a, ts))
            appended.append(clock)
            i += 1
    end = clock

    labels: list[tuple[str, int]] = []

    def add(u: str, t: int) -> None:
        labels.append((u, t))

    n_boundary = n_labels // 10
    n_append = n_labels // 20
    n_after = n_labels // 25
    n_idle = n_labels // 50
    n_unknown = n_labels // 100
    for _ in range(n_boundary):
        u, _m, _a, ts = events[rng.randrange(len(events))]
        add(u, ts + rng.choice([0, 0, 0] + WINDOWS))
    for _ in range(n_append):
        k = rng.choice(ooo) if ooo else rng.randrange(len(events))
        add(events[k][0], appended[k] - rng.choice([0, 1]))
    for j in range(n_after):
        u = rng.choice(hot) if j % 5 == 0 else (rng.choice(list(idle)) if j % 5 == 1 else events[rng.randrange(len(events))][0])
        add(u, end + (0 if j % 50 == 0 else rng.randrange(0, 2 * DAY)))
    idle_users = list(idle)
    for _ in range(n_idle):
        u = rng.choice(idle_users)
        g0, g1 = idle[u]
        add(u, rng.randrange(g0, g1))
    for j in range(n_unknown):
        add(f"nobody{j % 7}", START + rng.randrange(-HOUR, SPAN + HOUR))
    while len(labels) < n_labels:
        if rng.random() < 0.5:
            u = events[rng.randrange(len(events))][0]
        else:
            u = rng.choice(users)
        add(u, START + rng.randrange(-HOUR, SPAN + HOUR))
    rng.shuffle(labels)

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "events.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "labels.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["user", "ts"])
        w.writerows(labels)
    meta = {"seed": seed, "lines": len(lines), "events": len(events), "malformed": n_bad,
            "malformed_kinds": kinds, "late": n_late, "out_of_order": n_ooo, "first_ts": START,
            "last_ts": end, "labels": len(labels), "hot_users": hot, "idle_users": len(idle)}
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the directory to write into")
    ap.add_argument("--events", type=int, default=300_000, help="valid events (default 300 000)")
    ap.add_argument("--labels", type=int, default=100_000, help="label rows (default 100 000)")
    ap.add_argument("--seed", type=int, default=7, help="the random seed (default 7)")
    a = ap.parse_args()
    if a.events < 10 or a.labels < 1:
        ap.error("--events must be at least 10 and --labels at least 1")
    meta = generate(a.out, a.events, a.labels, a.seed)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
