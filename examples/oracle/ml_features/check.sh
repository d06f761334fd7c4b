#!/usr/bin/env bash
# An independent oracle for examples/ml_features: DuckDB computes both training sets (as happened,
# as served) from the raw files with plain SQL, and oracle.py compares them with what ml_features
# writes (CSV, Parquet), resumes after kill -9s, serves over HTTP and counts in its summary (the
# rules and the runs: oracle.py's and scenarios.py's docstrings).
#
#   bash examples/oracle/ml_features/check.sh [--events N] [--labels M] [--seed S]
#
# Input: generate.py's recording (default 300 000 events over ~3 days, 100 000 labels, seed 7).
# Builds the example with the dev profile (in CARGO_TARGET_DIR if set, so CI reuses `cargo
# test`'s build), installs duckdb from PyPI into a venv in a temporary directory, removed on
# exit. Prints one line per check and `N passed, M failed`; exits non-zero if anything failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

events=300000
labels=100000
seed=7
while [ $# -gt 0 ]; do
    case "$1" in
    --events) events="$2"; shift 2 ;;
    --labels) labels="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    *) echo "usage: $0 [--events N] [--labels M] [--seed S]" >&2; exit 2 ;;
    esac
done

# shellcheck source=../lib.sh
source "$here/../lib.sh"
oracle_build ml_features
oracle_venv

"$py" -B "$here/generate.py" --out "$tmp/data" --events "$events" --labels "$labels" \
    --seed "$seed" >"$tmp/generate.log" 2>&1 || die "generate.py --events $events --labels $labels" "$tmp/generate.log"
echo "(input: $(cat "$tmp/generate.log"))" >&2

mkdir -p "$tmp/work"
"$py" -B "$here/oracle.py" --bin "$bin" --work "$tmp/work" --data "$tmp/data"
exit $?
