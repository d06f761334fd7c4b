"""Bytewax 0.21: the 10-second tumbling aggregation as a dataflow.

usage: BW_INPUT=INPUT.csv BW_OUTPUT=OUTPUT.csv python -m bytewax.run bytewax_flow:flow [-w 2]

FileSource (lines; the header dropped) -> map(parse) -> key_on(status) -> fold_window with an
EventClock and a TumblingWindower of 10 s aligned to the epoch -> (count, sum of latency, sum of
bytes) -> one CSV line per window and status, status,window_start,window_end,count,avg_latency,
sum_bytes (FileSink; OUTPUT is created empty first). Late items go to BW_OUTPUT + ".late".

The clock: in Bytewax 0.21 an EventClock's watermark is the largest timestamp seen minus
`wait_for_system_duration`, plus the system time elapsed since that item was seen; there is no
separate out-of-orderness bound, so the 2-s bound the other systems use is
`wait_for_system_duration = 2 s`, and `now_getter` is frozen so that system time never moves the
watermark (a replay runs at thousands of event-seconds per second: the watermark is the event-time
bound alone, as Weir's and Flink's are). `to_system_utc` returns None (no wake-ups); EOF closes
every window. `ordered=False`: the fold is commutative, so items need no sorting.
"""

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
from bytewax.connectors.files import FileSink, FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WINDOW = timedelta(seconds=10)
WINDOW_MS = 10_000
DISORDER = timedelta(seconds=2)
METHODS = frozenset(["GET", "POST", "PUT", "DELETE", "HEAD"])

src = os.environ["BW_INPUT"]
dst = Path(os.environ["BW_OUTPUT"])
late = Path(str(dst) + ".late")
for path in (dst, late):
    path.write_text("")


def parse(line):
    """(timestamp, status, bytes, latency_ms), or None for the header."""
    ts, ip, method, path, status, nbytes, latency = line.split(",")
    if ts == "ts":
        return None
    if method not in METHODS or not path.startswith("/") or ip.count(".") != 3:
        raise ValueError(f"bad line {line!r}")
    return (EPOCH + timedelta(milliseconds=int(ts)), int(status), int(nbytes), int(latency))


def fold(acc, e):
    acc[0] += 1
    acc[1] += e[3]
    acc[2] += e[2]
    return acc


def merge(a, b):
    return [a[0] + b[0], a[1] + b[1], a[2] + b[2]]


def line_out(key_window_acc):
    status, (window_id, (count, latency, nbytes)) = key_window_acc
    start = window_id * WINDOW_MS
    return (status, f"{status},{start},{start + WINDOW_MS},{count},{latency / count!r},{nbytes}")


FROZEN_NOW = datetime.now(timezone.utc)

flow = Dataflow("compare_window")
lines = op.input("read", flow, FileSource(src))
events = op.filter_map("parse", lines, parse)
keyed = op.key_on("key", events, lambda e: str(e[1]))
clock = EventClock(
    ts_getter=lambda e: e[0],
    wait_for_system_duration=DISORDER,
    now_getter=lambda: FROZEN_NOW,
    to_system_utc=lambda _ts: None,
)
windower = TumblingWindower(length=WINDOW, align_to=EPOCH)
out = fold_window("window", keyed, clock, windower, lambda: [0, 0, 0], fold, merge, ordered=False)
op.output("write", op.map("format", out.down, line_out), FileSink(dst))
late_lines = op.map("format_late", out.late, lambda kv: (kv[0], f"{kv[0]},{kv[1][0]},{kv[1][1]}"))
op.output("write_late", late_lines, FileSink(late))
