#!/usr/bin/env bash
# The ml_features training set against DuckDB on the same files in the same run (bench.py): 100 000
# labels over 2 000 000 events (generate.py, seed 7), the example built with --release. Prints the
# wall times and their ratio; asserts nothing but that both wrote the same rows.
#
#   bash examples/oracle/ml_features/bench.sh [--events N] [--labels M]
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
DUCKDB_VERSION="$(tr -d '[:space:]' <"$root/.ci/duckdb-version")"
events=2000000
labels=100000
while [ $# -gt 0 ]; do
    case "$1" in
    --events) events="$2"; shift 2 ;;
    --labels) labels="$2"; shift 2 ;;
    *) echo "usage: $0 [--events N] [--labels M]" >&2; exit 2 ;;
    esac
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/weir-ml-bench.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "bench: $1" >&2
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" >&2
    exit 1
}

cd "$root" || fail "cd $root"
cargo build --locked --quiet --release --example ml_features >"$tmp/build.log" 2>&1 ||
    fail "cargo build --release --example ml_features" "$tmp/build.log"
target="$(cargo metadata --locked --format-version 1 --no-deps 2>"$tmp/metadata.log" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')" ||
    fail "cargo metadata (the target directory)" "$tmp/metadata.log"
bin="$target/release/examples/ml_features"
[ -x "$bin" ] || fail "no $bin after the build"

{ python3 -m venv "$tmp/venv" &&
    "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION"; } \
    >"$tmp/pip.log" 2>&1 || fail "python3 -m venv + pip install duckdb==$DUCKDB_VERSION" "$tmp/pip.log"
"$tmp/venv/bin/python" -B "$here/generate.py" --out "$tmp/data" --events "$events" --labels "$labels" \
    >"$tmp/generate.log" 2>&1 || fail "generate.py" "$tmp/generate.log"
"$tmp/venv/bin/python" -B "$here/bench.py" --bin "$bin" --data "$tmp/data" --work "$tmp"
