#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, broker and controller in one JVM) on
# loopback, for tests: its jars come from Maven Central (pom.xml beside this script), its data
# and logs live under one directory, and it is stopped by its pid.
#
#   broker.sh install DIR   fetches the jars into the jar directory (below) unless they are there
#                           already for this pom.xml; nothing else. Safe to run concurrently.
#   broker.sh start DIR [--owner PID]
#                           installs the jars (if needed), formats DIR/data, starts the broker on
#                           free loopback ports, waits until it accepts connections (60 s at
#                           most), and prints its PLAINTEXT bootstrap address (also in
#                           DIR/bootstrap). With --owner, a detached watchdog kills the broker
#                           and deletes its data once process PID is gone (checked every second),
#                           so a test process that exits or is killed leaves no broker behind;
#                           the watchdog exits when the broker does.
#   broker.sh stop DIR      stops the broker started in DIR (SIGTERM, then SIGKILL after 30 s) and
#                           deletes its data
#
# Listeners: PLAINTEXT (also the inter-broker listener); SASL_PLAINTEXT with the mechanisms
# PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for the user `weir`, whose password is random per start;
# SSL (TLS) with client authentication required (mutual TLS); and SASL_SSL (TLS without client
# certificates, then SASL as on SASL_PLAINTEXT). Files in DIR are readable by their owner only;
# those a client needs, written afresh by every start:
#
#   DIR/sasl_bootstrap        the SASL_PLAINTEXT address, host:port
#   DIR/sasl_password         the SASL password of user `weir`
#   DIR/ssl_bootstrap         the SSL address, host:port
#   DIR/sasl_ssl_bootstrap    the SASL_SSL address, host:port
#   DIR/ca.pem                the CA (new per start) that signed the broker's and the client's
#                             certificates; the broker's names IP 127.0.0.1 and DNS localhost
#   DIR/client.pem            a client certificate the SSL listener accepts
#   DIR/client.key            its private key (PKCS#8 PEM), encrypted with the password in
#   DIR/client_key_password   (random per start)
#
# The broker's own key and certificate are in DIR/broker.pem (a PEM keystore); the CA's key is
# deleted once both certificates are signed.
#
# The jar directory is $WEIR_KAFKA_LIB if set, else DIR/lib: brokers started in several
# directories share one copy of the jars by setting WEIR_KAFKA_LIB to the same directory.
#
# Needs Java 17+, Python 3, OpenSSL (for the certificates) and, to install the jars, Maven. Exit
# status: 0 on success; 1 with a message on stderr otherwise (the broker's own log is
# DIR/broker.log).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Fails with message `$1` and the last lines of log `$2`.
fail() {
    echo "error: $1; see $2" >&2
    if [[ -f $2 ]]; then tail -n 5 "$2" | cut -c1-300 | sed 's/^/  | /' >&2; fi
    exit 1
}

usage() {
    echo "usage: $0 install DIR | start DIR [--owner PID] | stop DIR" >&2
    exit 2
}
cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || usage
shift 2
owner=
case $cmd in
    start)
        while [[ $# -gt 0 ]]; do
            case $1 in
                --owner)
                    [[ ${2:-} =~ ^[0-9]+$ ]] || usage
                    owner=$2
                    shift 2
                    ;;
                *) usage ;;
            esac
        done
        ;;
    install | stop) [[ $# -eq 0 ]] || usage ;;
    _watch) ;;
    *) usage ;;
esac
umask 077
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
lib=${WEIR_KAFKA_LIB:-$dir/lib}

need() {
    command -v "$1" > /dev/null || { echo "error: $1 is not installed (needed: $2)" >&2; exit 1; }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Copies the jars pom.xml names into $lib, unless $lib/.complete says they are there for this
# very pom.xml. One install at a time per jar directory (a lock beside it); an install writes
# into a fresh directory and renames it into place, so a broker never sees half the jars.
install() {
    local stamp
    stamp=$(sha256sum < "$here/pom.xml")
    [[ -f $lib/.complete && $(cat "$lib/.complete") == "$stamp" ]] && return 0
    need mvn "to fetch the broker's jars"
    mkdir -p "$(dirname "$lib")"
    exec 9> "$lib.lock"
    flock 9
    if [[ ! -f $lib/.complete || $(cat "$lib/.complete") != "$stamp" ]]; then
        local tmp="$lib.tmp.$$" log="$lib.install.log"
        rm -rf "$tmp"
        mvn -B -Dstyle.color=never -f "$here/pom.xml" -DoutputDirectory="$tmp" \
            org.apache.maven.plugins:maven-dependency-plugin:3.10.0:copy-dependencies > "$log" 2>&1 ||
            { rm -rf "$tmp"; fail "installing the broker's jars failed" "$log"; }
        echo "$stamp" > "$tmp/.complete"
        rm -rf "$lib"
        mv "$tmp" "$lib"
    fi
    exec 9>&-
}

# Whether process `$1` runs: it exists and is not a zombie (a process that ended and that its
# parent, or init, has not reaped yet; a container's init may never reap).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Kills broker `$1` at once (its data is about to be deleted, so a clean shutdown buys nothing)
# and waits until it is gone.
kill_now() {
    kill -KILL "$1" 2>/dev/null || return 0
    while alive "$1"; do sleep 0.05; done
}

# What a start writes for clients (besides the broker's pid), deleted when the broker stops.
started_files=(bootstrap sasl_bootstrap sasl_password ssl_bootstrap sasl_ssl_bootstrap ca.pem
    client.pem client.key client_key_password broker.pem)

stop() {
    if [[ -f $dir/broker.pid ]]; then
        local pid
        pid=$(cat "$dir/broker.pid")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 300); do
                alive "$pid" || break
                sleep 0.1
            done
            kill_now "$pid"
        fi
        rm -f "$dir/broker.pid" "${started_files[@]/#/$dir/}"
    fi
    rm -rf "$dir/data"
}

# The watchdog of broker `$2`, owned by process `$1`: runs detached (its own session, no
# terminal, output to DIR/watchdog.log) until either is gone; if the owner goes first, kills the
# broker and deletes its data. It watches the broker by the pid it was given, so a later broker
# started in the same directory is not its business.
watch() {
    local owner=$1 pid=$2
    while alive "$pid"; do
        if ! alive "$owner"; then
            echo "[$(date -u +%FT%TZ)] process $owner is gone: stopping broker $pid"
            kill_now "$pid"
            if [[ -f $dir/broker.pid && $(cat "$dir/broker.pid") == "$pid" ]]; then
                rm -f "$dir/broker.pid" "${started_files[@]/#/$dir/}"
                rm -rf "$dir/data"
            fi
            return 0
        fi
        sleep 1
    done
}

# Random hex of `$1` bytes: nothing in it needs quoting in a properties file, a JAAS line or an
# argument.
random_hex() {
    od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# Writes a fresh CA (DIR/ca.pem), the broker's PEM keystore (DIR/broker.pem: its unencrypted
# PKCS#8 key, then its certificate for IP 127.0.0.1 and DNS localhost) and a client's certificate
# (DIR/client.pem) and key (DIR/client.key, encrypted with the password in
# DIR/client_key_password). EC P-256 keys: generating them takes milliseconds. The CA's key only
# lives in a temporary directory, deleted on return; the certificates are valid for 30 days.
make_certificates() {
    local tmp="$dir/tls.tmp" log="$dir/tls.log" password
    rm -rf "$tmp"
    mkdir "$tmp"
    password=$(random_hex 16)
    [[ ${#password} -eq 32 ]] || { echo "error: cannot read /dev/urandom" >&2; exit 1; }
    echo "$password" > "$tmp/client_key_password"
    # `sign NAME SUBJECT EXTENSIONS [openssl req options]` signs a request for NAME's key with the
    # CA.
    sign() {
        openssl req -new -key "$tmp/$1.key" -subj "$2" "${@:4}" |
            openssl x509 -req -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -set_serial "0x$(random_hex 8)" \
                -days 30 -extfile <(printf '%s\n' "$3") -out "$tmp/$1.pem"
    }
    local curve=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256)
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/ca.key" \
            -out "$tmp/ca.pem" -days 30 -subj "/CN=weir test CA $(random_hex 4)" &&
            openssl genpkey "${curve[@]}" -out "$tmp/broker.key" &&
            sign broker /CN=localhost "subjectAltName=IP:127.0.0.1,DNS:localhost" &&
            openssl genpkey "${curve[@]}" -aes-256-cbc -pass "file:$tmp/client_key_password" \
                -out "$tmp/client.key" &&
            sign client /CN=weir "extendedKeyUsage=clientAuth" -passin "file:$tmp/client_key_password" &&
            cat "$tmp/broker.key" "$tmp/broker.pem" > "$tmp/broker_keystore.pem"
    } > "$log" 2>&1 || { rm -rf "$tmp"; fail "making the TLS certificates failed" "$log"; }
    mv "$tmp/broker_keystore.pem" "$dir/broker.pem"
    mv "$tmp/ca.pem" "$tmp/client.pem" "$tmp/client.key" "$tmp/client_key_password" "$dir/"
    rm -rf "$tmp"
}

start() {
    if [[ -f $dir/broker.pid ]] && alive "$(cat "$dir/broker.pid")"; then
        echo "error: a broker started in $dir is still running (pid $(cat "$dir/broker.pid"))" >&2
        exit 1
    fi
    need java "to run the broker (Java 17 or later)"
    need python3 "to pick free ports"
    need openssl "to make the TLS certificates"
    if [[ -n $owner ]] && ! alive "$owner"; then
        echo "error: the owner process $owner does not exist" >&2
        exit 1
    fi
    install
    local port sasl_port ssl_port sasl_ssl_port controller password cluster
    port=$(free_port)
    sasl_port=$(free_port)
    ssl_port=$(free_port)
    sasl_ssl_port=$(free_port)
    controller=$(free_port)
    password=$(random_hex 16)
    # A cluster id is 16 bytes in URL-safe base64 without padding, and (as Kafka's own
    # random ids) does not begin with '-', which the format command would take for an option.
    cluster=-
    while [[ $cluster == -* ]]; do
        cluster=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    [[ ${#password} -eq 32 && ${#cluster} -eq 22 ]] || { echo "error: cannot read /dev/urandom" >&2; exit 1; }
    cat > "$dir/log4j2.properties" <<'LOG'
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
LOG
    # One node, one replica of everything; groups rebalance and lingering transactions are
    # aborted quickly, as tests need; no topic is created by a client's mere mention. No
    # authorizer: every authenticated user may do everything.
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_ssl_port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port,SASL_SSL://127.0.0.1:$sasl_ssl_port,CONTROLLER://127.0.0.1:$controller
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$dir/broker.pem
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$dir/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$dir/broker.pem
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_weir="$password";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_weir="$password";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
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
    make_certificates
    local java_opts=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -XX:TieredStopAtLevel=1
        -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties")
    # The SCRAM credentials are records in the cluster metadata, written at format time.
    java "${java_opts[@]}" -cp "$lib/*" kafka.tools.StorageTool format --standalone \
        -t "$cluster" \
        -S "SCRAM-SHA-256=[name=weir,password=$password]" -S "SCRAM-SHA-512=[name=weir,password=$password]" \
        -c "$dir/server.properties" < /dev/null > "$dir/format.log" 2>&1 ||
        fail "formatting the broker's storage failed (exit status $?)" "$dir/format.log"
    java "${java_opts[@]}" -cp "$lib/*" kafka.Kafka "$dir/server.properties" < /dev/null > "$dir/broker.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/broker.pid"
    if [[ -n $owner ]]; then
        setsid "$here/$(basename "$0")" _watch "$dir" "$owner" "$pid" < /dev/null >> "$dir/watchdog.log" 2>&1 &
    fi
    for _ in $(seq 600); do
        if ! alive "$pid"; then
            rm -f "$dir/broker.pid"
            fail "the broker exited while starting" "$dir/broker.log"
        fi
        if grep -q "Kafka Server started" "$dir/broker.log" &&
            python3 -c "import socket; [socket.create_connection(('127.0.0.1', p), 1).close() for p in ($port, $sasl_port, $ssl_port, $sasl_ssl_port)]" 2>/dev/null; then
            echo "127.0.0.1:$sasl_port" > "$dir/sasl_bootstrap"
            echo "127.0.0.1:$ssl_port" > "$dir/ssl_bootstrap"
            echo "127.0.0.1:$sasl_ssl_port" > "$dir/sasl_ssl_bootstrap"
            echo "$password" > "$dir/sasl_password"
            echo "127.0.0.1:$port" | tee "$dir/bootstrap"
            return 0
        fi
        sleep 0.1
    done
    stop
    fail "the broker did not start within 60 s" "$dir/broker.log"
}

# `exit` is parsed with the dispatch: a watchdog runs for long, and bash would read whatever
# follows from the file as it is then.
case $cmd in
    install) install ;;
    start) start ;;
    stop) stop ;;
    _watch) watch "$1" "$2" ;;
esac; exit
