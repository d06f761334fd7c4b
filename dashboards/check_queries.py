#!/usr/bin/env python3
"""Runs every query of Weir's Grafana dashboards against a Prometheus server.

Called by test.sh once Prometheus has scraped the demo for a while; standard library only.

Each panel target's expression, with the dashboard variables replaced ($job by the scrape job,
the other variables by ".*", $__rate_interval by a few scrape intervals), goes through
/api/v1/query. It passes when Prometheus accepts it and returns at least one series; a panel in
the allow-list (a file of "panel title<TAB>reason" lines) may return none, but never an error.
Each template variable's label_values(selector, label) goes through /api/v1/label/<label>/values
and passes when it lists a value.

Prints one line per check, then "N passed, M failed"; exits 1 if anything failed.
"""

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


class Checks:
    def __init__(self, passed, failed):
        self.passed = passed
        self.failed = failed

    def ok(self, what, note=""):
        self.passed += 1
        print(f"ok    {what}{': ' + note if note else ''}")

    def fail(self, what, why):
        self.failed += 1
        print(f"FAIL  {what}: {why}")


def get(base, path, params):
    url = f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        # Prometheus answers a bad query with 400 and a JSON error body.
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": str(e)}


def substitute(expr, values, rate_interval):
    """The expression with the dashboard's variables replaced; unknown variables are an error."""
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": "5m"}
    unknown = []

    def one(m):
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name in values:
            return values[name]
        unknown.append(name)
        return m.group(0)

    out = VARIABLE.sub(one, expr)
    return out, unknown


def panels(dashboard):
    """Every panel, rows' nested panels included."""
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def read_allow_list(path):
    allowed = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            title, sep, reason = line.partition("\t")
            if not sep or not reason.strip():
                sys.exit(f"{path}:{n}: expected 'panel title<TAB>reason'")
            allowed[title] = reason.strip()
    return allowed


def check_dashboard(checks, base, path, job, rate_interval, allowed, seen_titles):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    name = d.get("uid", path)
    variables = [v for v in d.get("templating", {}).get("list", []) if v.get("type") == "query"]
    values = {v["name"]: ".*" for v in variables}
    values["job"] = job

    for v in variables:
        what = f"{name} / variable {v['name']}"
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            checks.fail(what, f"not label_values(selector, label): {q}")
            continue
        selector, unknown = substitute(m.group(1), values, rate_interval)
        if unknown:
            checks.fail(what, f"unknown variables {unknown} in {q}")
            continue
        now = time.time()
        r = get(base, f"/api/v1/label/{m.group(2)}/values",
                {"match[]": selector, "start": now - 300, "end": now})
        if r.get("status") != "success":
            checks.fail(what, f"{r.get('error')} ({selector})")
        elif not r.get("data"):
            checks.fail(what, f"no values ({selector})")
        else:
            checks.ok(what, ", ".join(r["data"][:5]))

    for p in panels(d):
        if p.get("type") == "row":
            continue
        title = p.get("title", "")
        seen_titles.add(title)
        for t in p.get("targets", []):
            what = f"{name} / {title} / {t.get('refId', '?')}"
            expr, unknown = substitute(t.get("expr", ""), values, rate_interval)
            if unknown:
                checks.fail(what, f"unknown variables {unknown}")
                continue
            r = get(base, "/api/v1/query", {"query": expr})
            if r.get("status") != "success":
                checks.fail(what, f"{r.get('errorType', 'error')}: {r.get('error')} ({expr})")
                continue
            result = r.get("data", {}).get("result", [])
            if not result:
                if title in allowed:
                    checks.ok(what, f"empty, allowed: {allowed[title]}")
                else:
                    checks.fail(what, f"no series ({expr})")
                continue
            note = ""
            if title in allowed:
                note = "has data now: drop it from the allow-list"
            elif all(math.isnan(float(s.get("value", [0, "NaN"])[1])) for s in result):
                note = f"only NaN (no observations in the last {rate_interval})"
            checks.ok(what, f"{len(result)} series{'; ' + note if note else ''}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--job", default="weir", help="the scrape job the $job variable selects")
    ap.add_argument("--rate-interval", default="5s", help="what $__rate_interval becomes")
    ap.add_argument("--allow-empty", help="file of 'panel title<TAB>reason' lines")
    ap.add_argument("--passed", type=int, default=0, help="checks already passed (counted in the total)")
    ap.add_argument("--failed", type=int, default=0, help="checks already failed (counted in the total)")
    ap.add_argument("dashboards", nargs="+")
    args = ap.parse_args()

    allowed = read_allow_list(args.allow_empty) if args.allow_empty else {}
    checks = Checks(args.passed, args.failed)
    seen = set()
    for path in args.dashboards:
        check_dashboard(checks, args.prometheus.rstrip("/"), path, args.job, args.rate_interval, allowed, seen)
    for title in sorted(set(allowed) - seen):
        checks.fail(f"allow-list / {title}", "no panel has this title")
    print(f"{checks.passed} passed, {checks.failed} failed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
