#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, broker and controller in one JVM) on
# loopback, for tests: its jars come from Maven Central (pom.xml beside this script), its data
# and logs live under one directory, and it is stopped by its pid.
#
#   broker.sh start DIR   installs the jars into DIR/lib (once), formats DIR/data, starts the
#                         broker on two free loopback ports, waits until it accepts connections
#                         (60 s at most), and prints its bootstrap address (also in DIR/bootstrap)
#   broker.sh stop DIR    stops the broker started in DIR (SIGTERM, then SIGKILL after 30 s) and
#                         deletes its data
#
# Needs Java 17+ and Maven. Exit status: 0 on success; 1 with a message on stderr otherwise (the
# broker's own log is DIR/broker.log).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}
dir=${2:-}
if [[ -z $cmd || -z $dir ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    if [[ -f $dir/broker.pid ]]; then
        local pid
        pid=$(cat "$dir/broker.pid")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 300); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/broker.pid" "$dir/bootstrap"
    fi
    rm -rf "$dir/data"
}

start() {
    if [[ -f $dir/broker.pid ]] && kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
        echo "error: a broker started in $dir is still running (pid $(cat "$dir/broker.pid"))" >&2
        exit 1
    fi
    if [[ ! -f $dir/lib/.complete ]]; then
        rm -rf "$dir/lib"
        mvn -B -Dstyle.color=never -f "$here/pom.xml" -DoutputDirectory="$dir/lib" \
            org.apache.maven.plugins:maven-dependency-plugin:3.10.0:copy-dependencies > "$dir/install.log" 2>&1 ||
            { echo "error: installing the broker's jars failed; see $dir/install.log" >&2; exit 1; }
        touch "$dir/lib/.complete"
    fi
    local port controller
    port=$(free_port)
    controller=$(free_port)
    cat > "$dir/log4j2.properties" <<'LOG'
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
LOG
    # One node, one replica of everything; groups rebalance and lingering transactions are
    # aborted quickly, as tests need; no topic is created by a client's mere mention.
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
PROPS
    rm -rf "$dir/data"
    local java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1
        -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties")
    java "${java_opts[@]}" -cp "$dir/lib/*" kafka.tools.StorageTool format --standalone \
        -t "$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')" \
        -c "$dir/server.properties" > "$dir/format.log" 2>&1 ||
        { echo "error: formatting the broker's storage failed; see $dir/format.log" >&2; exit 1; }
    java "${java_opts[@]}" -cp "$dir/lib/*" kafka.Kafka "$dir/server.properties" > "$dir/broker.log" 2>&1 &
    echo $! > "$dir/broker.pid"
    local pid
    pid=$(cat "$dir/broker.pid")
    for _ in $(seq 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/broker.pid"
            echo "error: the broker exited while starting; see $dir/broker.log" >&2
            exit 1
        fi
        if grep -q "Kafka Server started" "$dir/broker.log" &&
            python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1).close()" 2>/dev/null; then
            echo "127.0.0.1:$port" | tee "$dir/bootstrap"
            return 0
        fi
        sleep 0.1
    done
    stop
    echo "error: the broker did not start within 60 s; see $dir/broker.log" >&2
    exit 1
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop DIR" >&2
        exit 2
        ;;
esac
