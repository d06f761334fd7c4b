//! A real Apache Kafka broker for tests: one per test process, started on first use.
//!
//! A test that needs Kafka begins with `let Some(kafka) = weir_testkit::kafka::broker() else {
//! return };` and connects to [`Broker::bootstrap`] (PLAINTEXT) or [`Broker::sasl_bootstrap`]
//! (SASL_PLAINTEXT: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 as [`Broker::sasl_user`] with
//! [`Broker::sasl_password`]), [`Broker::tls`] (SSL: TLS with a client certificate, whose files
//! [`TlsListener`] names) or [`Broker::sasl_ssl_bootstrap`] (SASL_SSL: TLS, then SASL).
//!
//! Where the broker comes from, decided once per process:
//!
//! - If `WEIR_KAFKA_BOOTSTRAP` is set, that broker; `WEIR_KAFKA_SASL_BOOTSTRAP` and
//!   `WEIR_KAFKA_SASL_PASSWORD` (both or neither) name its SASL listener, `WEIR_KAFKA_SASL_USER`
//!   its user (default `weir`); `WEIR_KAFKA_SSL_BOOTSTRAP` and `WEIR_KAFKA_SSL_DIR` (both or
//!   neither) its SSL listener and a directory holding the files [`TlsListener`] names, under the
//!   names `broker.sh` gives them (`ca.pem`, `client.pem`, `client.key`, `client_key_password`);
//!   `WEIR_KAFKA_SASL_SSL_BOOTSTRAP` (with both of the above) its SASL_SSL listener. Nothing is
//!   started.
//! - Otherwise `tools/kafka-broker/broker.sh start <target>/kafka/run-<pid> --owner <pid>` starts
//!   a single-node broker on loopback (Java 17 and, for the first install of its jars, Maven are
//!   needed; the jars are shared by every run under `<target>/kafka/lib`, or `WEIR_KAFKA_LIB`).
//!   `<target>` is `CARGO_TARGET_DIR` (relative to the workspace root) or the workspace's
//!   `target`.
//!
//! If no broker can be had (Java, Maven or OpenSSL missing, the start failed, a variable is
//! malformed): when the environment variable `CI` is set, to any value, [`broker`] panics with
//! the reason, so a test that needs the broker fails in CI; otherwise it prints
//! `skipping: <reason>` to stderr and returns `None`, and the test returns early.
//!
//! Invariants:
//!
//! 1. One broker per process: every call returns the same broker (or the same failure).
//! 2. A started broker never outlives its test process: statics are never dropped, so
//!    `broker.sh`'s watchdog, given this process's id, kills the broker and deletes its data
//!    within about a second of the process ending, however it ends (SIGKILL included).
//! 3. Child processes do not inherit the broker by themselves: a test that starts the test binary
//!    again passes [`Broker::env`] to it, or the child starts a broker of its own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// A running Kafka broker the tests of this process share.
pub struct Broker {
    /// The PLAINTEXT bootstrap address, `host:port`.
    pub bootstrap: String,
    /// The SASL_PLAINTEXT bootstrap address, `host:port`; `None` for an external broker given
    /// without one.
    pub sasl_bootstrap: Option<String>,
    /// The SASL user name (`weir` for a started broker).
    pub sasl_user: String,
    /// The SASL user's password, for PLAIN and SCRAM-SHA-256/512 (random for a started broker;
    /// empty when there is no SASL listener). `Debug` does not show it.
    pub sasl_password: String,
    /// The SSL listener (TLS, client certificate required) and the files a client needs;
    /// `None` for an external broker given without one.
    pub tls: Option<TlsListener>,
    /// The SASL_SSL bootstrap address, `host:port`: TLS (a broker certificate signed by
    /// [`TlsListener::ca`], no client certificate), then SASL as on [`Broker::sasl_bootstrap`];
    /// `None` for an external broker given without one.
    pub sasl_ssl_bootstrap: Option<String>,
    /// The directory of a started broker (its logs are there); `None` for an external one.
    dir: Option<PathBuf>,
}

/// A broker's SSL listener: TLS with client authentication required (mutual TLS), and the PEM
/// files a client connects with. A started broker gets a new CA, certificates and key password
/// on every start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// The SSL bootstrap address, `host:port`.
    pub bootstrap: String,
    /// The directory holding the files below (`WEIR_KAFKA_SSL_DIR` for another process).
    pub dir: PathBuf,
    /// The CA certificate that signed the broker's certificate and [`TlsListener::certificate`].
    pub ca: PathBuf,
    /// A client certificate the listener accepts.
    pub certificate: PathBuf,
    /// The certificate's private key, encrypted with the password in
    /// [`TlsListener::key_password_file`].
    pub key: PathBuf,
    /// A file holding the key's password (one line).
    pub key_password_file: PathBuf,
}

impl TlsListener {
    /// The listener at `bootstrap`, with the files under the names `broker.sh` gives them in
    /// `dir`.
    fn new(bootstrap: String, dir: &Path) -> TlsListener {
        TlsListener {
            bootstrap,
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            certificate: dir.join("client.pem"),
            key: dir.join("client.key"),
            key_password_file: dir.join("client_key_password"),
        }
    }
}

impl Broker {
    /// The environment variables that make [`broker`] in another process (a test binary started
    /// again, a program under test) use this broker: `cmd.envs(kafka.env())`.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        let mut vars = vec![("WEIR_KAFKA_BOOTSTRAP", self.bootstrap.as_str())];
        if let Some(sasl) = &self.sasl_bootstrap {
            vars.push(("WEIR_KAFKA_SASL_BOOTSTRAP", sasl));
            vars.push(("WEIR_KAFKA_SASL_USER", &self.sasl_user));
            vars.push(("WEIR_KAFKA_SASL_PASSWORD", &self.sasl_password));
        }
        // (A directory whose path is not UTF-8 cannot be named, so neither is the listener.)
        if let Some((tls, dir)) = self.tls.as_ref().and_then(|tls| Some((tls, tls.dir.to_str()?))) {
            vars.push(("WEIR_KAFKA_SSL_BOOTSTRAP", &tls.bootstrap));
            vars.push(("WEIR_KAFKA_SSL_DIR", dir));
            if let Some(sasl_ssl) = &self.sasl_ssl_bootstrap {
                vars.push(("WEIR_KAFKA_SASL_SSL_BOOTSTRAP", sasl_ssl));
            }
        }
        vars
    }

    /// The directory of a broker this process started (its `broker.log` is there); `None` for
    /// an external broker.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("bootstrap", &self.bootstrap)
            .field("sasl_bootstrap", &self.sasl_bootstrap)
            .field("sasl_user", &self.sasl_user)
            .field("sasl_password", &"<hidden>")
            .field("tls", &self.tls)
            .field("sasl_ssl_bootstrap", &self.sasl_ssl_bootstrap)
            .field("dir", &self.dir)
            .finish()
    }
}

/// The broker of this process, found or started on the first call (see the module docs).
///
/// # Panics
///
/// No broker can be had and the environment variable `CI` is set.
pub fn broker() -> Option<&'static Broker> {
    static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();
    match BROKER.get_or_init(|| from_env().transpose().unwrap_or_else(start)) {
        Ok(broker) => Some(broker),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("no Kafka broker, and CI is set so tests that need one fail: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping: {reason}");
            None
        }
    }
}

/// A non-empty environment variable.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The broker the environment names, if it names one.
fn from_env() -> Result<Option<Broker>, String> {
    let Some(bootstrap) = var("WEIR_KAFKA_BOOTSTRAP") else { return Ok(None) };
    let (sasl_bootstrap, sasl_password) =
        match (var("WEIR_KAFKA_SASL_BOOTSTRAP"), var("WEIR_KAFKA_SASL_PASSWORD")) {
            (Some(sasl), Some(password)) => (Some(sasl), password),
            (None, None) => (None, String::new()),
            (Some(_), None) => {
                return Err("WEIR_KAFKA_SASL_BOOTSTRAP is set without WEIR_KAFKA_SASL_PASSWORD".into());
            }
            (None, Some(_)) => {
                return Err("WEIR_KAFKA_SASL_PASSWORD is set without WEIR_KAFKA_SASL_BOOTSTRAP".into());
            }
        };
    let sasl_user = var("WEIR_KAFKA_SASL_USER").unwrap_or_else(|| "weir".into());
    let tls = match (var("WEIR_KAFKA_SSL_BOOTSTRAP"), var("WEIR_KAFKA_SSL_DIR")) {
        (Some(ssl), Some(dir)) => Some(TlsListener::new(ssl, Path::new(&dir))),
        (None, None) => None,
        (Some(_), None) => return Err("WEIR_KAFKA_SSL_BOOTSTRAP is set without WEIR_KAFKA_SSL_DIR".into()),
        (None, Some(_)) => return Err("WEIR_KAFKA_SSL_DIR is set without WEIR_KAFKA_SSL_BOOTSTRAP".into()),
    };
    let sasl_ssl_bootstrap = var("WEIR_KAFKA_SASL_SSL_BOOTSTRAP");
    if sasl_ssl_bootstrap.is_some() && (sasl_bootstrap.is_none() || tls.is_none()) {
        return Err("WEIR_KAFKA_SASL_SSL_BOOTSTRAP is set without the SASL and SSL variables".into());
    }
    Ok(Some(Broker {
        bootstrap,
        sasl_bootstrap,
        sasl_user,
        sasl_password,
        tls,
        sasl_ssl_bootstrap,
        dir: None,
    }))
}

/// The workspace root, where `tools/` is.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where this process's broker lives: `<target>/kafka`.
fn kafka_dir() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("kafka")
}

/// Starts this process's broker with `broker.sh`, owned by this process.
fn start() -> Result<Broker, String> {
    let script = workspace_root().join("tools/kafka-broker/broker.sh");
    let kafka = kafka_dir();
    prune(&kafka);
    let dir = kafka.join(format!("run-{}", std::process::id()));
    let lib = std::env::var_os("WEIR_KAFKA_LIB").map_or_else(|| kafka.join("lib"), PathBuf::from);
    let began = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .args(["--owner", &std::process::id().to_string()])
        .env("WEIR_KAFKA_LIB", &lib)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} start {} failed ({}): {}",
            script.display(),
            dir.display(),
            out.status,
            stderr.trim()
        ));
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let broker = Broker {
        bootstrap: read("bootstrap")?,
        sasl_bootstrap: Some(read("sasl_bootstrap")?),
        sasl_user: "weir".into(),
        sasl_password: read("sasl_password")?,
        tls: Some(TlsListener::new(read("ssl_bootstrap")?, &dir)),
        sasl_ssl_bootstrap: Some(read("sasl_ssl_bootstrap")?),
        dir: Some(dir),
    };
    eprintln!(
        "kafka: started a broker at {} in {:.1} s ({:?})",
        broker.bootstrap,
        began.elapsed().as_secs_f64(),
        broker.dir
    );
    Ok(broker)
}

/// Deletes the directories of brokers that earlier processes started and that are stopped (no
/// `broker.pid`) since more than ten minutes; a directory being started is younger.
fn prune(kafka: &Path) {
    let Ok(entries) = std::fs::read_dir(kafka) else { return };
    let old = |path: &Path| {
        let modified = std::fs::metadata(path).and_then(|m| m.modified());
        modified.is_ok_and(|t| {
            SystemTime::now().duration_since(t).is_ok_and(|age| age > Duration::from_secs(600))
        })
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let is_run = entry.file_name().to_str().is_some_and(|n| n.starts_with("run-"));
        if is_run && !path.join("broker.pid").exists() && old(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChildTest;
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream;

    #[test]
    fn the_broker_accepts_connections_on_every_listener() {
        let Some(kafka) = broker() else { return };
        TcpStream::connect(&kafka.bootstrap).unwrap();
        if let Some(sasl) = &kafka.sasl_bootstrap {
            TcpStream::connect(sasl).unwrap();
        }
        if let Some(sasl_ssl) = &kafka.sasl_ssl_bootstrap {
            TcpStream::connect(sasl_ssl).unwrap();
        }
        if let Some(tls) = &kafka.tls {
            TcpStream::connect(&tls.bootstrap).unwrap();
            for file in [&tls.ca, &tls.certificate, &tls.key, &tls.key_password_file] {
                assert!(file.is_file(), "{}", file.display());
            }
        }
        assert!(std::ptr::eq(kafka, broker().unwrap()), "one broker per process");
    }

    #[test]
    fn env_names_the_broker_for_another_process() {
        let kafka = Broker {
            bootstrap: "127.0.0.1:1".into(),
            sasl_bootstrap: Some("127.0.0.1:2".into()),
            sasl_user: "weir".into(),
            sasl_password: "secret".into(),
            tls: Some(TlsListener::new("127.0.0.1:3".into(), Path::new("/run/kafka"))),
            sasl_ssl_bootstrap: Some("127.0.0.1:4".into()),
            dir: None,
        };
        let env = kafka.env();
        assert!(env.contains(&("WEIR_KAFKA_BOOTSTRAP", "127.0.0.1:1")));
        assert!(env.contains(&("WEIR_KAFKA_SASL_BOOTSTRAP", "127.0.0.1:2")));
        assert!(env.contains(&("WEIR_KAFKA_SASL_PASSWORD", "secret")));
        assert!(env.contains(&("WEIR_KAFKA_SSL_BOOTSTRAP", "127.0.0.1:3")));
        assert!(env.contains(&("WEIR_KAFKA_SSL_DIR", "/run/kafka")));
        assert!(env.contains(&("WEIR_KAFKA_SASL_SSL_BOOTSTRAP", "127.0.0.1:4")));
        assert!(!format!("{kafka:?}").contains("secret"), "Debug hides the password");
    }

    const ASKS: ChildTest =
        ChildTest::new("kafka::tests::a_child_asks_for_the_broker", "WEIR_TESTKIT_KAFKA_ASKS");

    /// The child's half of the next test.
    #[test]
    fn a_child_asks_for_the_broker() {
        if ASKS.is_child() {
            assert!(broker().is_none());
        }
    }

    #[test]
    fn without_a_broker_a_test_skips_with_the_reason_outside_ci_and_fails_in_ci() {
        if ASKS.is_child() {
            return;
        }
        // A SASL listener without a password: no broker, and nothing is started.
        let run = |ci: Option<&str>| {
            let mut cmd = ASKS.command("1");
            cmd.env("WEIR_KAFKA_BOOTSTRAP", "127.0.0.1:1").env("WEIR_KAFKA_SASL_BOOTSTRAP", "127.0.0.1:2");
            cmd.env_remove("WEIR_KAFKA_SASL_PASSWORD").env_remove("CI");
            if let Some(ci) = ci {
                cmd.env("CI", ci);
            }
            let out = cmd.output().unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let reason = "WEIR_KAFKA_SASL_BOOTSTRAP is set without WEIR_KAFKA_SASL_PASSWORD";
        let (passed, stderr) = run(None);
        assert!(passed && stderr.contains(&format!("skipping: {reason}")), "{stderr}");
        let (passed, stderr) = run(Some("true"));
        assert!(!passed && stderr.contains("CI is set") && stderr.contains(reason), "{stderr}");
    }

    const CHILD: ChildTest = ChildTest::new(
        "kafka::tests::a_child_starts_a_broker_and_waits_to_be_killed",
        "WEIR_TESTKIT_KAFKA_CHILD",
    );

    /// The child's half of the next test.
    #[test]
    fn a_child_starts_a_broker_and_waits_to_be_killed() {
        if !CHILD.is_child() {
            return;
        }
        let Some(kafka) = broker() else { return };
        let dir = kafka.dir().unwrap();
        let pid = std::fs::read_to_string(dir.join("broker.pid")).unwrap();
        println!("\nkafka-broker-pid={} {}", pid.trim(), dir.display());
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    /// Whether process `pid` runs (exists and is not a zombie).
    #[cfg(target_os = "linux")]
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_started_broker_is_killed_and_its_data_deleted_when_its_test_process_is_killed() {
        if CHILD.is_child() {
            return;
        }
        if var("WEIR_KAFKA_BOOTSTRAP").is_some() {
            eprintln!("skipping: WEIR_KAFKA_BOOTSTRAP names a broker, so no test process starts one");
            return;
        }
        let mut child = CHILD.command("1").stdout(Stdio::piped()).spawn().unwrap();
        // Before its own line, the child prints libtest's.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let line = stdout.lines().map(Result::unwrap).find(|line| line.starts_with("kafka-broker-pid="));
        let Some(rest) = line.as_deref().and_then(|line| line.strip_prefix("kafka-broker-pid=")) else {
            // No broker in the child: it skipped (outside CI) or failed (in CI).
            let status = child.wait().unwrap();
            assert!(status.success(), "the child failed: {status}");
            return;
        };
        let (pid, dir) = rest.split_once(' ').unwrap();
        let (pid, dir): (u32, PathBuf) = (pid.parse().unwrap(), dir.into());
        assert!(alive(pid) && dir.join("data").exists());
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        while alive(pid) || dir.join("data").exists() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "broker {pid} in {} outlived its owner",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the broker was gone {:.1} s after its owner", killed.elapsed().as_secs_f64());
    }
}
