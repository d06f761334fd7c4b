"""Helpers of run.sh: measure a command, check an output against DuckDB's, print the table.

python compare.py measure JSON LOG -- CMD ARGS...
    Runs CMD (stdout and stderr to LOG), sampling every 20 ms the summed RSS of the process and
    all its descendants (psutil); writes {wall_s, peak_rss_bytes, rc, load_before, load_after} to
    JSON. The wall time runs from just before the process is started to its exit, so it includes
    interpreter, JVM and cluster start-up. The peak RSS is the larger of the sampled peak of the
    whole tree and the kernel's ru_maxrss of the largest single descendant.

python compare.py check REFERENCE.csv OUTPUT.csv
    Compares an output (status,window_start,window_end,count,avg_latency,sum_bytes; a header line
    is optional, row order free) with the reference: the same (status, window_start) rows, equal
    window_end, count and sum_bytes, avg_latency within 1e-6 relative. Prints one line, exits 1
    on a difference.

python compare.py row DIR --system S [--note N] --events E [--not-comparable]
                      [--reference REF.csv --output OUT.csv | --check TEXT]
    Writes DIR/row.json: one row of the table, whose runs are DIR/run-*.json (from `measure`);
    the output check is `check` of OUTPUT against REFERENCE, or TEXT as given.

python compare.py report RESULTS_DIR
    Prints the Markdown table of the rows RESULTS_DIR/*/row.json (in the order of the
    directories' names) and whether the goals are met.
"""

import csv
import glob
import json
import math
import os
import resource
import subprocess
import sys
import time


def measure(json_path, log_path, cmd):
    import psutil

    def load():
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])

    load_before = load()
    peak = 0
    cpu_seen = {}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    cpu_seen[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            peak = max(peak, total)
            time.sleep(0.02)
        wall = time.monotonic() - started
    # ru_maxrss is in KiB on Linux: the largest single process this one waited for.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    single = after.ru_maxrss * 1024
    # CPU seconds of the tree: the kernel's count for the processes waited for, or the sum of
    # the last samples of every process seen (descendants nobody waited for), whichever is larger.
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(waited, sum(cpu_seen.values()))
    result = {
        "cmd": cmd,
        "wall_s": wall,
        "peak_rss_bytes": max(peak, single),
        "cpu_s": cpu,
        "rc": proc.returncode,
        "load_before": load_before,
        "load_after": load(),
    }
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"  {os.path.basename(cmd[0])}: exit {proc.returncode}, {wall:.2f} s wall, "
          f"{cpu:.2f} s CPU, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB (load {load_before} -> {result['load_after']})")
    return proc.returncode


def read_rows(path):
    rows = {}
    dups = 0
    with open(path, newline="") as f:
        for rec in csv.reader(f):
            if not rec or rec[0] == "status":
                continue
            status, start, end, count, avg, nbytes = rec
            key = (int(status), int(start))
            if key in rows:
                dups += 1
            rows[key] = (int(end), int(count), float(avg), int(nbytes))
    return rows, dups


def check(ref_path, out_path):
    try:
        ref, _ = read_rows(ref_path)
        out, dups = read_rows(out_path)
    except (OSError, ValueError) as e:
        print(f"FAIL: cannot read: {e}")
        return 1
    missing = sorted(set(ref) - set(out))
    extra = sorted(set(out) - set(ref))
    differ = []
    for key in sorted(set(ref) & set(out)):
        (re_, rc, ra, rb), (oe, oc, oa, ob) = ref[key], out[key]
        if re_ != oe or rc != oc or rb != ob or not math.isclose(ra, oa, rel_tol=1e-6, abs_tol=0.0):
            differ.append((key, ref[key], out[key]))
    if not (missing or extra or differ or dups):
        print(f"OK ({len(out)} rows)")
        return 0
    print(f"FAIL: {len(missing)} missing, {len(extra)} extra, {len(differ)} differing, {dups} duplicate rows "
          f"(of {len(ref)})")
    for key, r, o in differ[:5]:
        print(f"  status {key[0]} window {key[1]}: reference {r}, got {o}", file=sys.stderr)
    for key in missing[:5]:
        print(f"  missing status {key[0]} window {key[1]}: reference {ref[key]}", file=sys.stderr)
    for key in extra[:5]:
        print(f"  extra status {key[0]} window {key[1]}: got {out[key]}", file=sys.stderr)
    return 1


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def row(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="compare.py row")
    ap.add_argument("dir")
    ap.add_argument("--system", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--not-comparable", action="store_true")
    ap.add_argument("--reference")
    ap.add_argument("--output")
    ap.add_argument("--check")
    a = ap.parse_args(argv)
    runs = sorted(glob.glob(os.path.join(a.dir, "run-*.json")))
    measured = []
    for path in runs:
        with open(path) as f:
            measured.append(json.load(f))
    if a.check is not None:
        text, ok = a.check, a.check.startswith("OK")
    elif any(m["rc"] != 0 for m in measured) or not measured:
        text, ok = "FAIL: exit " + ",".join(str(m["rc"]) for m in measured), False
    else:
        out = subprocess.run([sys.executable, __file__, "check", a.reference, a.output],
                             capture_output=True, text=True)
        sys.stderr.write(out.stderr)
        text, ok = out.stdout.strip(), out.returncode == 0
    meta = {
        "system": a.system,
        "note": a.note,
        "events": a.events,
        "comparable": not a.not_comparable,
        "check": text,
        "check_ok": ok,
        "runs": measured,
    }
    with open(os.path.join(a.dir, "row.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"  {a.system}: output check: {text}")


def report(results_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*", "row.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    for r in rows:
        ok_runs = [m for m in r.get("runs", []) if m["rc"] == 0]
        r["wall"] = median([m["wall_s"] for m in ok_runs])
        r["cpu"] = median([m["cpu_s"] for m in ok_runs if "cpu_s" in m])
        r["rss"] = max([m["peak_rss_bytes"] for m in ok_runs], default=None)
        r["load"] = max([float(m["load_before"].split()[0]) for m in r.get("runs", [])], default=None)
    weir = next((r for r in rows if r["system"] == "weir" and r["wall"]), None)
    base = weir["wall"] if weir else None

    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    print("| system | wall s | events/s | peak RSS MiB | ratio to Weir (wall / Weir's) | CPU s | runs | load "
          "| output check |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        name = r["system"] + (f" ({r['note']})" if r.get("note") else "")
        wall = r["wall"]
        eps = r["events"] / wall if wall else None
        ratio = wall / base if wall and base else None
        ratio_s = fmt(ratio, ".2f") + ("" if r.get("comparable", True) else " (not comparable)")
        runs = len(r.get("runs", []))
        print(f"| {name} | {fmt(wall, '.2f')} | {fmt(eps, ',.0f')} | "
              f"{fmt(r['rss'] / 2**20 if r['rss'] else None, '.0f')} | {ratio_s} | {fmt(r['cpu'], '.1f')} | {runs} | {fmt(r['load'], '.1f')} | "
              f"{r.get('check', '—')} |")
    print()
    print("wall s: median over the runs, from process start to exit (start-up included); peak RSS: the")
    print("largest over the runs, of the process tree; CPU s: user + system CPU time of the process tree")
    print("(median over the runs); load: the highest 1-minute load average seen")
    print("just before a run (the machine is shared; above the core count, other work competed).")
    print()

    def best(prefix):
        cands = [r for r in rows if r["system"].startswith(prefix) and r["wall"] and r.get("check_ok")]
        return min(cands, key=lambda r: r["wall"]) if cands else None

    goals = []
    if base is None or not weir.get("check_ok"):
        print("Goals: cannot be judged: Weir's row has no valid result.")
        return
    for system in ("flink", "bytewax"):
        b = best(system)
        if b is None:
            goals.append((f"Weir ≥ 10× faster than {system}", None, f"no valid {system} result"))
        else:
            x = b["wall"] / base
            goals.append((f"Weir ≥ 10× faster than {system}", x >= 10, f"{x:.1f}× ({b['system']})"))
    d = best("duckdb")
    if d is None:
        goals.append(("Weir within 2× of DuckDB's batch time", None, "no valid DuckDB result"))
    else:
        x = base / d["wall"]
        goals.append(("Weir within 2× of DuckDB's batch time", x <= 2, f"Weir's wall = {x:.2f}× DuckDB's"))
    print("Goals (the issue's; Weir = the `weir` row, one CSV file):")
    for what, met, measured in goals:
        verdict = "n/a " if met is None else ("MET " if met else "MISS")
        print(f"- {verdict} {what}: {measured}")


def main():
    cmd = sys.argv[1]
    if cmd == "measure":
        sep = sys.argv.index("--")
        sys.exit(measure(sys.argv[2], sys.argv[3], sys.argv[sep + 1:]))
    elif cmd == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    elif cmd == "row":
        row(sys.argv[2:])
    elif cmd == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
