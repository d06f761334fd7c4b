#!/usr/bin/env bash
# The ml_features training set against DuckDB on the same files in the same run (bench.py): 100 000
# labels over 2 000 000 events (generate.py, seed 7), the example built with --release. Prints the
# wall times and their ratio; asserts nothing but that both wrote the same rows.
#
#   bash examples/oracle/ml_features/bench.sh [--events N] [--labels M]
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
events=2000000
labels=100000
while [ $# -gt 0 ]; do
    case "$1" in
    --events) events="$2"; shift 2 ;;
    --labels) labels="$2"; shift 2 ;;
    *) echo "usage: $0 [--events N] [--labels M]" >&2; exit 2 ;;
    esac
done

# shellcheck source=../lib.sh
source "$here/../lib.sh"
oracle_build ml_features --release
oracle_venv
"$py" -B "$here/generate.py" --out "$tmp/data" --events "$events" --labels "$labels" \
    >"$tmp/generate.log" 2>&1 || die "generate.py" "$tmp/generate.log"
"$py" -B "$here/bench.py" --bin "$bin" --data "$tmp/data" --work "$tmp"
