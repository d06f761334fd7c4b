#!/usr/bin/env bash
# The side-by-side benchmark: Weir, DuckDB, Apache Flink and Bytewax on the same CSV events, the
# same 10-second tumbling count / avg(latency) / sum(bytes) by status. Not run in CI. See
# README.md beside this file.
#
#   benches/compare/run.sh                      # 10,000,000 events (Flink and Bytewax take minutes)
#   benches/compare/run.sh --events 200000      # a quick try
#
# Options:
#   --events N           events in the generated input (default 10000000)
#   --dir DIR            where inputs, outputs, logs and results go (default benches/compare/work)
#   --runs R             timed runs of each system (default 3); a system whose first run took
#                        over 60 s is run once
#   --only LIST          comma-separated subset of: weir,weir-2files,log_analytics,flink,bytewax
#                        (DuckDB, the reference, always runs)
#   --bytewax-workers W  space-separated worker counts, one Bytewax row each (default "1 2")
#
# Environment: CARGO_TARGET_DIR (cargo's, as usual), PYTHON (default python3) for the venvs,
# JAVA_HOME (default: from the `java` on PATH). The Python packages go to benches/compare/.venv/
# (one venv per system), installed on the first run.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EVENTS=10000000
WORK=$HERE/work
RUNS=3
ONLY=weir,weir-2files,log_analytics,flink,bytewax
BYTEWAX_WORKERS="1 2"
PYTHON=${PYTHON:-python3}
SLOW_S=60

while [ $# -gt 0 ]; do
    case "$1" in
        --events) EVENTS=${2//_/}; shift 2 ;;
        --dir) WORK=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --bytewax-workers) BYTEWAX_WORKERS=$2; shift 2 ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }
say() { printf '\n== %s\n' "$*"; }

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
RESULTS=$WORK/results-$EVENTS
OUT=$WORK/out-$EVENTS
LOGS=$WORK/logs-$EVENTS
rm -rf "$RESULTS" "$OUT" "$LOGS"
mkdir -p "$RESULTS" "$OUT" "$LOGS"
VENVS=$HERE/.venv
mkdir -p "$VENVS"
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# ---------------------------------------------------------------------------------------------
# Python environments: one per system, installed once (again when the requirement changes).

declare -A INSTALL_ERROR=()
ensure_venv() { # name requirement...
    local name=$1; shift
    local venv=$VENVS/$name want="$*"
    if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then
        return 0
    fi
    say "installing $want into $venv"
    rm -rf "$venv"
    if "$PYTHON" -m venv "$venv" >"$LOGS/pip-$name.log" 2>&1 &&
        "$venv/bin/pip" install --disable-pip-version-check "$@" >>"$LOGS/pip-$name.log" 2>&1; then
        echo "$want" >"$venv/.installed"
    else
        INSTALL_ERROR[$name]="pip install $want failed: $(grep -E 'ERROR|error:' "$LOGS/pip-$name.log" | head -n 2 | tr '\n' ' ')"
        echo "  ${INSTALL_ERROR[$name]} (log: $LOGS/pip-$name.log)"
        return 1
    fi
}

# The DuckDB venv also runs compare.py (psutil): it is required.
ensure_venv duckdb duckdb psutil || { echo "the duckdb venv is required" >&2; exit 1; }
PY=$VENVS/duckdb/bin/python
CMP=("$PY" "$HERE/compare.py")
if wants flink; then ensure_venv flink 'apache-flink>=2,<3' || true; fi
if wants bytewax; then ensure_venv bytewax 'bytewax>=0.21,<0.22' || true; fi

if wants flink && [ -z "${JAVA_HOME:-}" ]; then
    if command -v java >/dev/null; then
        JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
        export JAVA_HOME
    else
        INSTALL_ERROR[flink]="no java on PATH and no JAVA_HOME (Flink needs Java 11 or 17)"
    fi
fi

# ---------------------------------------------------------------------------------------------
# Weir's binaries (release).

say "building Weir (release): the compare_weir bench binary and the log_analytics example"
WEIR_BIN=$(cd "$ROOT" && cargo build --release -p weir-benches --bench compare_weir --message-format=json \
    2>"$LOGS/cargo-bench.log" | "$PY" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "compare_weir":
        print(m["executable"])')
[ -x "$WEIR_BIN" ] || { cat "$LOGS/cargo-bench.log" >&2; echo "building compare_weir failed" >&2; exit 1; }
LOG_ANALYTICS=
if wants log_analytics; then
    (cd "$ROOT" && cargo build --release -p weir-examples --example log_analytics) >"$LOGS/cargo-example.log" 2>&1 ||
        { cat "$LOGS/cargo-example.log" >&2; echo "building log_analytics failed" >&2; exit 1; }
    LOG_ANALYTICS=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/log_analytics
fi
echo "  $WEIR_BIN"
if [ -n "$LOG_ANALYTICS" ]; then echo "  $LOG_ANALYTICS"; fi

# ---------------------------------------------------------------------------------------------
# The input: generated once per event count, reused by every system (and by later runs).

CSV=$WORK/events-$EVENTS.csv
if [ ! -s "$CSV" ]; then
    say "generating $CSV"
    "$WEIR_BIN" --generate "$CSV.tmp" --events "$EVENTS" && mv "$CSV.tmp" "$CSV"
fi
SPLIT=$WORK/events-$EVENTS-split
if wants weir-2files && [ ! -s "$SPLIT/access-1.csv" ]; then
    # The same lines in two files (header + first half, header + second half), for the extra
    # Weir row: FileSource reads one file per subtask.
    rm -rf "$SPLIT" && mkdir -p "$SPLIT"
    awk -v half=$(((EVENTS + 1) / 2)) -v a="$SPLIT/access-0.csv" -v b="$SPLIT/access-1.csv" '
        NR == 1 { print > a; print > b; next }
        NR - 1 <= half { print > a; next }
        { print > b }' "$CSV"
    touch "$SPLIT/access-1.csv" # read second: FileSource orders files by modification time
fi
ACCESS_LOG=$WORK/access-$EVENTS.log
if wants log_analytics && [ ! -s "$ACCESS_LOG" ]; then
    say "generating $ACCESS_LOG (log_analytics' own synthetic combined log)"
    "$LOG_ANALYTICS" --generate "$ACCESS_LOG.tmp" --events "$EVENTS" && mv "$ACCESS_LOG.tmp" "$ACCESS_LOG"
fi
echo "  input: $CSV ($(du -h "$CSV" | cut -f1), $EVENTS events + header)"

# ---------------------------------------------------------------------------------------------
# Runs.

# run_system ID SYSTEM INPUT_TO_WARM CMD... : up to $RUNS timed runs into $RESULTS/ID/.
run_system() {
    local id=$1 system=$2 warm=$3; shift 3
    local dir=$RESULTS/$id
    mkdir -p "$dir"
    say "$system"
    local i
    for ((i = 1; i <= RUNS; i++)); do
        # Every system reads its input from the page cache.
        cat $warm >/dev/null
        if ! "${CMP[@]}" measure "$dir/run-$i.json" "$LOGS/$id-$i.log" -- "$@"; then
            echo "  failed: see $LOGS/$id-$i.log"; tail -n 5 "$LOGS/$id-$i.log" | sed 's/^/    /'
            break
        fi
        local wall
        wall=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["wall_s"])' "$dir/run-$i.json")
        if "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$wall" "$SLOW_S"; then
            [ "$i" -lt "$RUNS" ] && echo "  (over ${SLOW_S} s: one run only)"
            break
        fi
    done
}

skipped_row() { # ID SYSTEM NOTE REASON
    mkdir -p "$RESULTS/$1"
    "${CMP[@]}" row "$RESULTS/$1" --system "$2" --note "$3" --events "$EVENTS" --check "not run: $4"
}

REF=$OUT/duckdb.csv
# DuckDB is the reference: always run.
{
    run_system 1-duckdb duckdb "$CSV" "$VENVS/duckdb/bin/python" "$HERE/duckdb_agg.py" "$CSV" "$REF"
    total=$("$PY" -c '
import csv, sys
print(sum(int(r["count"]) for r in csv.DictReader(open(sys.argv[1]))))' "$REF" 2>/dev/null || echo 0)
    rows=$(($(wc -l <"$REF") - 1))
    if [ "$total" = "$EVENTS" ]; then
        check="OK (reference; $rows rows, counts sum to $EVENTS)"
    else
        check="FAIL: reference counts sum to $total, not $EVENTS"
    fi
    "${CMP[@]}" row "$RESULTS/1-duckdb" --system duckdb --note "batch SQL, $(nproc) threads" \
        --events "$EVENTS" --check "$check"
}

if wants weir; then
    run_system 0a-weir weir "$CSV" "$WEIR_BIN" --input "$CSV" --out "$OUT/weir.csv" --parallelism 2
    "${CMP[@]}" row "$RESULTS/0a-weir" --system weir --note "1 file, p2" --events "$EVENTS" \
        --reference "$REF" --output "$OUT/weir.csv"
fi

if wants weir-2files; then
    run_system 0b-weir-2files weir-2files "$SPLIT/*.csv" \
        "$WEIR_BIN" --input "$SPLIT/access-*.csv" --out "$OUT/weir-2files.csv" --parallelism 2
    "${CMP[@]}" row "$RESULTS/0b-weir-2files" --system weir-2files \
        --note "same lines split in 2 files, p2; extra row" --events "$EVENTS" \
        --reference "$REF" --output "$OUT/weir-2files.csv"
fi

if wants flink; then
    if [ -n "${INSTALL_ERROR[flink]:-}" ]; then
        skipped_row 2-flink flink "" "${INSTALL_ERROR[flink]}"
    else
        run_system 2-flink flink "$CSV" env JAVA_HOME="$JAVA_HOME" \
            "$VENVS/flink/bin/python" "$HERE/flink_agg.py" "$CSV" "$OUT/flink.csv" 2
        "${CMP[@]}" row "$RESULTS/2-flink" --system flink --note "Flink SQL, mini-cluster, p2" \
            --events "$EVENTS" --reference "$REF" --output "$OUT/flink.csv"
    fi
fi

if wants bytewax; then
    for w in $BYTEWAX_WORKERS; do
        if [ -n "${INSTALL_ERROR[bytewax]:-}" ]; then
            skipped_row "3-bytewax-w$w" bytewax "-w $w" "${INSTALL_ERROR[bytewax]}"
            continue
        fi
        run_system "3-bytewax-w$w" "bytewax -w $w" "$CSV" env BW_INPUT="$CSV" BW_OUTPUT="$OUT/bytewax-w$w.csv" \
            PYTHONPATH="$HERE" "$VENVS/bytewax/bin/python" -m bytewax.run bytewax_flow:flow -w "$w"
        late=$(wc -l <"$OUT/bytewax-w$w.csv.late" 2>/dev/null || echo '?')
        "${CMP[@]}" row "$RESULTS/3-bytewax-w$w" --system bytewax --note "fold_window, -w $w, $late late" \
            --events "$EVENTS" --reference "$REF" --output "$OUT/bytewax-w$w.csv"
    done
fi

if wants log_analytics; then
    run_system 4-log_analytics log_analytics "$ACCESS_LOG" "$LOG_ANALYTICS" --input "$ACCESS_LOG" \
        --dir "$WORK/log_analytics-data" --out "$OUT/log_analytics" --quiet --metrics-addr 127.0.0.1:0
    last=$(ls "$LOGS"/4-log_analytics-*.log | tail -n 1)
    parsed=$(awk '$1 == "parsed" { print $2 }' "$last")
    malformed=$(awk '$1 == "malformed" { print $2 }' "$last")
    late=$(awk '$1 == "late" { print $2 }' "$last")
    if [ "$parsed" = "$EVENTS" ] && [ "$malformed" = 0 ] && [ "$late" = 0 ]; then
        check="n/a: a different job on its own log (ran: $parsed lines parsed, 0 malformed, 0 late)"
    else
        check="FAIL: parsed ${parsed:-?} of $EVENTS, malformed ${malformed:-?}, late ${late:-?}"
    fi
    "${CMP[@]}" row "$RESULTS/4-log_analytics" --system log_analytics \
        --note "example: own combined log of $EVENTS lines, append to the log + 5 window jobs" \
        --events "$EVENTS" --not-comparable --check "$check"
    rm -rf "$WORK/log_analytics-data"
fi

# ---------------------------------------------------------------------------------------------
# The report.

say "versions"
{
    echo "date (UTC): $STARTED"
    echo "machine: $(nproc) cores ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, $(uname -sr)"
    echo "weir: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') (working tree), $(rustc --version)"
    echo "python: $("$PY" --version 2>&1)"
    "$VENVS/duckdb/bin/python" -c 'import duckdb, psutil; print("duckdb", duckdb.__version__, "/ psutil", psutil.__version__)'
    if [ -x "$VENVS/flink/bin/pip" ]; then
        echo "apache-flink $("$VENVS/flink/bin/pip" show apache-flink 2>/dev/null | awk '/^Version/ { print $2 }'), java: $("${JAVA_HOME:-/usr}/bin/java" -version 2>&1 | head -n 1)"
    fi
    if [ -x "$VENVS/bytewax/bin/pip" ]; then
        echo "bytewax $("$VENVS/bytewax/bin/pip" show bytewax 2>/dev/null | awk '/^Version/ { print $2 }')"
    fi
    echo "events: $EVENTS ($(du -h "$CSV" | cut -f1) CSV)"
} | tee "$RESULTS/versions.txt"

say "results ($EVENTS events)"
"${CMP[@]}" report "$RESULTS" | tee "$RESULTS/table.md"
echo
echo "results, outputs and logs: $RESULTS, $OUT, $LOGS"
