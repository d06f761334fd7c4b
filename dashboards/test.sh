#!/usr/bin/env bash
# The dashboards against a real Prometheus: builds and starts the monitoring demo
# (examples/monitoring) and the Kafka demo (examples/kafka_monitoring, against a Kafka broker
# started with tools/kafka-broker/broker.sh), checks their /metrics with promtool, lets
# Prometheus (Debian's package, extracted into a temporary directory, not installed) scrape both
# every second, then runs every panel query and template variable query of dashboards/*.json
# through Prometheus' HTTP API (check_queries.py). Prints "N passed, M failed"; exits non-zero if
# anything failed.
#
# Needs: cargo, curl, python3, apt-get and dpkg (Debian; root if the package lists need an
# `apt-get update`), and Java 17+ and Maven for the broker. Everything listens on 127.0.0.1 and
# is stopped on exit (the broker by its pid).
#
# Optional environment:
#   CARGO_TARGET_DIR      honoured (the demo is built with the dev profile, like the tests)
#   WEIR_DEMO_SECS        how long the demos run at most (default 600: longer than every wait
#                         below added up, so a slow machine never queries an exited demo;
#                         the demos are stopped on exit anyway)
#   WEIR_MONITORING_BIN   run this program (same arguments) instead of building the demo
#   WEIR_KAFKA_MONITORING_BIN  the same for the Kafka demo
#   WEIR_KAFKA_BOOTSTRAP  use this Kafka broker instead of starting one (its jars are kept in
#                         the target directory's kafka-dashboards/lib)
#   WEIR_PROMETHEUS_ROOT  a directory holding an extracted prometheus package (usr/bin/...)
set -euo pipefail

cd "$(dirname "$0")/.."
readonly DASHBOARDS=dashboards
readonly DEMO_SECS=${WEIR_DEMO_SECS:-600}
readonly SAMPLES=10 # seconds of samples (one scrape a second) before querying

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weir-dashboards.XXXXXX")
PIDS=()
BROKER_DIR=

log() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Stops what this script started (SIGTERM, then SIGKILL after 5 s) and removes $TMP.
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $BROKER_DIR ]]; then
        tools/kafka-broker/broker.sh stop "$BROKER_DIR" || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.5 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
    log "$what"
}

# Sets PROMETHEUS and PROMTOOL: Debian's prometheus package, downloaded and unpacked into $TMP.
fetch_prometheus() {
    local root=${WEIR_PROMETHEUS_ROOT:-}
    if [[ -z $root ]]; then
        root=$TMP/prometheus
        mkdir -p "$TMP/deb"
        log "downloading Debian's prometheus package"
        if ! (cd "$TMP/deb" && apt-get download prometheus) >"$TMP/apt.log" 2>&1; then
            apt-get update -qq >>"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
            (cd "$TMP/deb" && apt-get download prometheus) >>"$TMP/apt.log" 2>&1 ||
                { cat "$TMP/apt.log" >&2; die "apt-get download prometheus failed"; }
        fi
        dpkg -x "$TMP"/deb/prometheus_*.deb "$root"
    fi
    PROMETHEUS=$root/usr/bin/prometheus
    PROMTOOL=$root/usr/bin/promtool
    [[ -x $PROMETHEUS && -x $PROMTOOL ]] || die "no prometheus and promtool in $root/usr/bin"
    log "$("$PROMETHEUS" --version 2>&1 | head -n1)"
}

target_dir() {
    cargo metadata --locked --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# Prints the path of example $2, built with `cargo build --locked ARGS... --example $2` (dev
# profile), or the program the environment variable $1 names instead.
build_example() {
    local override=$1 name=$2
    shift 2
    if [[ -n ${!override:-} ]]; then
        log "using ${!override} instead of the $name example"
        echo "${!override}"
        return
    fi
    log "cargo build $* --example $name"
    cargo build --locked "$@" --example "$name" >&2
    echo "$(target_dir)/debug/examples/$name"
}

# Sets BOOTSTRAP: WEIR_KAFKA_BOOTSTRAP, or a broker started here (stopped on exit).
start_broker() {
    if [[ -n ${WEIR_KAFKA_BOOTSTRAP:-} ]]; then
        BOOTSTRAP=$WEIR_KAFKA_BOOTSTRAP
        log "using the Kafka broker at $BOOTSTRAP"
        return
    fi
    BROKER_DIR=$(target_dir)/kafka-dashboards
    log "starting a Kafka broker in $BROKER_DIR"
    BOOTSTRAP=$(tools/kafka-broker/broker.sh start "$BROKER_DIR") ||
        { tail -n 30 "$BROKER_DIR/broker.log" >&2 || true; die "the Kafka broker did not start"; }
    log "Kafka broker at $BOOTSTRAP"
}

start_demo() {
    DEMO_URL=http://127.0.0.1:$(free_port)
    "$DEMO" --metrics-addr "${DEMO_URL#http://}" --features-addr "127.0.0.1:$(free_port)" --dir "$TMP/data" \
        --duration-secs "$DEMO_SECS" >"$TMP/demo.log" 2>&1 &
    DEMO_PID=$!
    PIDS+=("$DEMO_PID")
    wait_for 60 "demo serving metrics at $DEMO_URL" curl -sf "$DEMO_URL/healthz" ||
        { tail -n 30 "$TMP/demo.log" >&2; die "the demo did not answer $DEMO_URL/healthz"; }
}

start_kafka_demo() {
    KAFKA_URL=http://127.0.0.1:$(free_port)
    "$KAFKA_DEMO" --bootstrap "$BOOTSTRAP" --metrics-addr "${KAFKA_URL#http://}" --dir "$TMP/kafka-data" \
        --prefix "weir-dashboards-$$" --duration-secs "$DEMO_SECS" >"$TMP/kafka-demo.log" 2>&1 &
    KAFKA_PID=$!
    PIDS+=("$KAFKA_PID")
    wait_for 60 "Kafka demo serving metrics at $KAFKA_URL" curl -sf "$KAFKA_URL/healthz" ||
        { tail -n 30 "$TMP/kafka-demo.log" >&2; die "the Kafka demo did not answer $KAFKA_URL/healthz"; }
}

start_prometheus() {
    PROM_URL=http://127.0.0.1:$(free_port)
    cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: weir
    static_configs:
      - targets: ["${DEMO_URL#http://}", "${KAFKA_URL#http://}"]
EOF
    "$PROMTOOL" check config "$TMP/prometheus.yml" >/dev/null
    "$PROMETHEUS" --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
        --web.listen-address="${PROM_URL#http://}" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
    PIDS+=($!)
    wait_for 30 "prometheus ready at $PROM_URL" curl -sf "$PROM_URL/-/ready" ||
        { tail -n 30 "$TMP/prometheus.log" >&2; die "prometheus did not start"; }
}

# Succeeds when the instant query $1 returns a sample whose value is at least $2.
query_at_least() {
    curl -sf "$PROM_URL/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) >= float(sys.argv[1]) else 1)' "$2"
}

demo_running() { kill -0 "$DEMO_PID" 2>/dev/null && kill -0 "$KAFKA_PID" 2>/dev/null; }

# Succeeds once Prometheus holds $SAMPLES successful scrapes, or when the demo is gone.
enough_samples_or_demo_gone() {
    ! demo_running || query_at_least 'sum_over_time(up{job="weir"}[1m])' "$SAMPLES"
}

wait_for_samples() {
    wait_for 30 "target up" query_at_least 'up{job="weir"}' 1 ||
        { tail -n 30 "$TMP/prometheus.log" >&2; die "prometheus cannot scrape $DEMO_URL"; }
    wait_for $((SAMPLES + 20)) "$SAMPLES s of samples" enough_samples_or_demo_gone ||
        die "fewer than $SAMPLES successful scrapes"
    # The Kafka tasks export their lag once they own partitions and committed a checkpoint.
    wait_for 60 "Kafka tasks committing" query_at_least 'count(weir_kafka_consumer_lag{job="weir"})' 1 ||
        { tail -n 30 "$TMP/kafka-demo.log" >&2; die "the Kafka demo exports no lag"; }
    demo_running || {
        tail -n 30 "$TMP/demo.log" "$TMP/kafka-demo.log" >&2
        die "a demo exited before the queries"
    }
}

main() {
    fetch_prometheus
    # `--workspace`: the features of `cargo test --workspace`, so CI reuses its build.
    DEMO=$(build_example WEIR_MONITORING_BIN monitoring --workspace)
    # The examples' `kafka` feature builds librdkafka.
    KAFKA_DEMO=$(build_example WEIR_KAFKA_MONITORING_BIN kafka_monitoring -p weir-examples --features kafka)
    start_broker
    start_demo
    start_kafka_demo

    local passed=0 failed=0 url
    for url in "$DEMO_URL" "$KAFKA_URL"; do
        if curl -sf "$url/metrics" >"$TMP/metrics.txt" && "$PROMTOOL" check metrics <"$TMP/metrics.txt"; then
            echo "ok    promtool check metrics $url ($(grep -c '^# TYPE' "$TMP/metrics.txt") metric families)"
            passed=$((passed + 1))
        else
            echo "FAIL  promtool check metrics $url"
            failed=$((failed + 1))
        fi
    done

    start_prometheus
    wait_for_samples
    python3 "$DASHBOARDS/check_queries.py" --prometheus "$PROM_URL" --job weir --rate-interval 5s \
        --allow-empty "$DASHBOARDS/test-allow-empty.txt" --passed "$passed" --failed "$failed" \
        "$DASHBOARDS"/*.json
}

main "$@"
