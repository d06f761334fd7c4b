#!/usr/bin/env bash
# An independent oracle for examples/log_analytics/main.rs: DuckDB recomputes every result kind from
# the raw access logs with plain SQL, and oracle.py compares them with log_analytics' output
# (what is compared, and how late records are handled: see oracle.py's docstring).
#
#   bash examples/oracle/check.sh
#
# Inputs: A, the synthetic log (200 000 lines, request times, nothing late); B, the real
# combined-format log that Debian's logswan package ships as an example (response bytes, no
# request time); C, edge cases of the parser and of lateness (edge_cases.py). Builds the
# example with the dev profile (in CARGO_TARGET_DIR if set, so CI reuses `cargo test`'s build),
# installs duckdb from PyPI into a venv in a temporary directory, removed on exit. Prints one
# line per check and `N passed, M failed`; exits non-zero if anything failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
oracle_build log_analytics
oracle_venv

# A: the synthetic log.
"$bin" --generate "$tmp/A.log" --events 200000 >"$tmp/generate.log" 2>&1 ||
    die "log_analytics --generate A.log --events 200000" "$tmp/generate.log"

# B: logswan's example log (a real combined-format log, 34 lines), from Debian's package.
blog=""
mkdir -p "$tmp/deb"
if (cd "$tmp/deb" && { apt-get download logswan || { apt-get update && apt-get download logswan; }; }) \
    >"$tmp/apt.log" 2>&1 && dpkg -x "$tmp"/deb/logswan_*.deb "$tmp/deb/x" >>"$tmp/apt.log" 2>&1; then
    blog="$(find "$tmp/deb/x" -type f -name '*.log' | sort | head -n 1)"
fi
if [ -z "$blog" ]; then
    echo "note: could not get logswan's example log:" >&2
    tail -n 5 "$tmp/apt.log" >&2
fi

# The oracle: runs log_analytics on each input (C is written by edge_cases.py) and compares.
"$py" "$here/oracle.py" --bin "$bin" --work "$tmp" A="$tmp/A.log" B="$blog" C=@edge
exit $?
