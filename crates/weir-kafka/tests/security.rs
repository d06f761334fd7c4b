//! Security against a real broker.
//!
//! SASL: PLAIN and SCRAM-SHA-256/512 connect with the right password (read from a file); a wrong
//! password fails fast with an authentication error naming the broker (a source and a task
//! group); the password appears in no error and no `Debug` output.
//!
//! SASL over TLS (SASL_SSL) connects with SCRAM-SHA-512.
//!
//! TLS, on the broker's SSL listener (client certificates required): sinks write (at least
//! once and exactly once) and a source reads back with the typed [`Tls`] settings and a client
//! key encrypted with a password read from a file; a client whose CA does not trust the broker,
//! and a client without a certificate, fail fast with a TLS error naming the broker (a source, a
//! sink and a task group); a key its password does not decrypt fails naming the key file; the
//! key's password appears in no `Debug` output, no error and no log line (Weir's `tracing`
//! events and librdkafka's own log, with its debug contexts on).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use weir_kafka::{
    KafkaConfig, KafkaRecord, KafkaSink, KafkaSource, KafkaTasks, Sasl, SaslMechanism, Secret, StartOffset,
    Tls,
};
use weir_runtime::{CollectSink, MemorySource, Pipeline};
use weir_testkit::kafka::TlsListener;

fn sasl_config(mechanism: SaslMechanism, password: Secret) -> Option<(KafkaConfig, String)> {
    let kafka = weir_testkit::kafka::broker()?;
    let bootstrap = kafka.sasl_bootstrap.clone()?;
    let config = KafkaConfig::new(bootstrap.clone()).sasl(Sasl {
        mechanism,
        username: kafka.sasl_user.clone(),
        password,
    });
    Some((config, bootstrap))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_connects() {
    let Some(kafka) = weir_testkit::kafka::broker() else { return };
    let (Some(sasl_ssl), Some(tls)) = (&kafka.sasl_ssl_bootstrap, &kafka.tls) else {
        eprintln!("skipping: the broker has no SASL_SSL listener (WEIR_KAFKA_SASL_SSL_BOOTSTRAP is unset)");
        return;
    };
    let b = bootstrap().unwrap();
    let topic = unique("sasl-ssl");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[("k".into(), "hello".into())]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, &kafka.sasl_password).unwrap();
    let config = KafkaConfig::new(sasl_ssl.clone())
        .sasl(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: kafka.sasl_user.clone(),
            password: Secret::from_file(&file).unwrap(),
        })
        .tls(Tls { ca: Some(tls.ca.clone()), ..Tls::default() });
    assert_eq!(config.security_protocol(), "SASL_SSL");
    assert_eq!(read(config, &topic).await.unwrap(), ["hello"]);
}

async fn read(config: KafkaConfig, topic: &str) -> weir_runtime::Result<Vec<String>> {
    let p = Pipeline::builder("secure-read").parallelism(1).handle_signals(false).build()?;
    let out = CollectSink::new();
    p.source(
        KafkaSource::new(config, [topic.to_owned()], unique("g"))
            .start_offset(StartOffset::Earliest)
            .bounded(),
    )
    .map(|r: KafkaRecord| r.value_str().unwrap().to_owned())
    .sink(out.clone());
    p.run().await?;
    Ok(out.take())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_scram_connect_and_a_wrong_password_fails_fast_without_printing_it() {
    let Some(b) = bootstrap() else { return };
    let kafka = weir_testkit::kafka::broker().unwrap();
    let topic = unique("secure");
    create_topic(&b, &topic, 1);
    produce(&b, &topic, &[("k".into(), "hello".into())]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", kafka.sasl_password)).unwrap();

    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
        let (config, _) = sasl_config(mechanism, Secret::from_file(&file).unwrap()).unwrap();
        assert!(!format!("{config:?}").contains(&kafka.sasl_password), "Debug shows the password");
        assert_eq!(read(config, &topic).await.unwrap(), ["hello"], "{mechanism:?}");
    }

    let wrong = "not-the-password-7f3a";
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, wrong).unwrap();
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha256] {
        let (config, bootstrap) = sasl_config(mechanism, Secret::from_file(&wrong_file).unwrap()).unwrap();
        for side in ["source", "task group"] {
            let started = Instant::now();
            let err = match side {
                "source" => read(config.clone(), &topic).await.unwrap_err(),
                _ => join(config.clone(), &topic, dir.path()).await.unwrap_err(),
            };
            let took = started.elapsed();
            let shown = format!("{err} / {err:?} / {config:?}");
            assert!(took < Duration::from_secs(15), "a wrong password took {took:?} to fail ({side})");
            assert!(shown.to_lowercase().contains("authentication"), "{side}: {shown}");
            assert!(shown.contains(&bootstrap), "{side}: the error names the broker: {shown}");
            assert!(!shown.contains(wrong), "{side}: the password is printed: {shown}");
        }
    }
}

/// Everything this process logs, at every level: Weir's `tracing` events and librdkafka's log
/// lines (through the `log` crate).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let _ = writeln!(Capture, "{} {}: {}", record.level(), record.target(), record.args());
    }

    fn flush(&self) {}
}

/// Sends every log line of this process to [`LOGS`] from now on.
fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
        log::set_boxed_logger(Box::new(Capture)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// What this process logged so far.
fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

/// The broker's SSL listener, or `None` (the test returns; it printed why).
fn tls_listener() -> Option<&'static TlsListener> {
    let kafka = weir_testkit::kafka::broker()?;
    let tls = kafka.tls.as_ref();
    if tls.is_none() {
        eprintln!("skipping: the broker has no SSL listener (WEIR_KAFKA_SSL_BOOTSTRAP is unset)");
    }
    tls
}

/// The SSL listener, a new topic with `partitions` partitions, and the client key's password,
/// with this process's log captured; `None` (the test returns) without a listener.
fn tls_setup(prefix: &str, partitions: i32) -> Option<(&'static TlsListener, String, String)> {
    let tls = tls_listener()?;
    capture_logs();
    let topic = unique(prefix);
    create_topic(&bootstrap().unwrap(), &topic, partitions);
    let key_password = std::fs::read_to_string(&tls.key_password_file).unwrap().trim().to_owned();
    Some((tls, topic, key_password))
}

/// The typed TLS settings for the listener's client certificate, with the key's password read
/// from its file.
fn client_tls(tls: &TlsListener) -> Tls {
    Tls {
        ca: Some(tls.ca.clone()),
        certificate: Some(tls.certificate.clone()),
        key: Some(tls.key.clone()),
        key_password: Some(Secret::from_file(&tls.key_password_file).unwrap()),
    }
}

/// Writes `values` to `topic` with `sink`.
async fn write_with(sink: KafkaSink<String>, values: Vec<String>) -> weir_runtime::Result<()> {
    let p = Pipeline::builder("secure-write").parallelism(1).handle_signals(false).build()?;
    p.source(MemorySource::new(values)).sink(sink);
    p.run().await.map(drop)
}

/// Writes `values` to `topic` with an at-least-once sink.
async fn write(config: KafkaConfig, topic: &str, values: Vec<String>) -> weir_runtime::Result<()> {
    write_with(KafkaSink::bytes(config, topic), values).await
}

/// Runs a task group over `topic` that copies nothing, until it fails (or for 20 s at most).
async fn join(config: KafkaConfig, topic: &str, dir: &Path) -> weir_runtime::Result<()> {
    let tasks = KafkaTasks::new(config, topic, unique("tasks")).checkpoint_dir(dir);
    let build = |task: &weir_kafka::Task| {
        let p = task.pipeline("nothing").build()?;
        p.source(task.source()).sink(CollectSink::new());
        Ok(p)
    };
    tasks.run(build, tokio::time::sleep(Duration::from_secs(20))).await
}

/// A self-signed CA of its own in `dir`, which signed nothing the broker shows.
fn unrelated_ca(dir: &Path) -> PathBuf {
    let (ca, key) = (dir.join("unrelated_ca.pem"), dir.join("unrelated_ca.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=unrelated CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl (which the broker's script needs too) runs");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    ca
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_writes_at_least_and_exactly_once_and_reads_back_without_printing_the_key_password()
 {
    let Some((tls, topic, key_password)) = tls_setup("tls", 2) else { return };
    // librdkafka's debug contexts on: its log shows every connection, handshake and setting.
    let config =
        KafkaConfig::new(tls.bootstrap.clone()).tls(client_tls(tls)).set("debug", "security,broker,conf");
    assert_eq!(config.security_protocol(), "SSL");

    let values: Vec<String> = (0..100).map(|i| format!("tls-{i}")).collect();
    write(config.clone(), &topic, values[..50].to_vec()).await.unwrap();
    let exactly_once = KafkaSink::bytes(config.clone(), topic.clone()).exactly_once(unique("tls"));
    write_with(exactly_once, values[50..].to_vec()).await.unwrap();
    let mut got = read(config.clone(), &topic).await.unwrap();
    got.sort_by_key(|v| v[4..].parse::<u32>().unwrap());
    assert_eq!(got, values);

    let logged = logs();
    assert!(
        logged.contains(&tls.bootstrap) && logged.contains("ssl.key.password"),
        "librdkafka's log, with its settings, is captured"
    );
    let sink = KafkaSink::<String>::bytes(config.clone(), topic.clone());
    for (what, shown) in [("Debug", format!("{config:?} {sink:?}")), ("the log", logged)] {
        assert!(!shown.contains(&key_password), "{what} shows the key's password");
    }

    // A wrong key password fails naming the key file, and prints neither password.
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-key-password-52c1";
    std::fs::write(dir.path().join("wrong"), wrong).unwrap();
    let config = KafkaConfig::new(tls.bootstrap.clone()).tls(Tls {
        key_password: Some(Secret::from_file(dir.path().join("wrong")).unwrap()),
        ..client_tls(tls)
    });
    let started = Instant::now();
    let err = read(config, &topic).await.unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(shown.contains(&tls.key.display().to_string()), "the error names the key file: {shown}");
    assert!(!shown.contains(wrong) && !shown.contains(&key_password), "a password is printed: {shown}");
    assert!(!logs().contains(wrong), "the log shows the wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_broker_or_has_no_certificate_fails_fast_with_a_tls_error() {
    let Some((tls, topic, key_password)) = tls_setup("tls-refused", 1) else { return };
    let dir = tempfile::tempdir().unwrap();
    let untrusting = Tls { ca: Some(unrelated_ca(dir.path())), ..client_tls(tls) };
    let anonymous = Tls { ca: Some(tls.ca.clone()), ..Tls::default() };
    for (client, settings) in [("untrusting", untrusting), ("without a certificate", anonymous)] {
        let config = KafkaConfig::new(tls.bootstrap.clone()).tls(settings);
        for side in ["source", "sink", "task group"] {
            let started = Instant::now();
            let err = match side {
                "source" => read(config.clone(), &topic).await.unwrap_err(),
                "sink" => write(config.clone(), &topic, vec!["x".into()]).await.unwrap_err(),
                _ => join(config.clone(), &topic, dir.path()).await.unwrap_err(),
            };
            let took = started.elapsed();
            let shown = format!("{err} / {err:?}");
            eprintln!("{client} {side}: {took:?}: {err}");
            assert!(took < Duration::from_secs(15), "{client} {side} took {took:?} to fail: {shown}");
            assert!(shown.contains(&tls.bootstrap), "{client} {side}: the error names the broker: {shown}");
            assert!(shown.contains("TLS") && shown.contains("certificate"), "{client} {side}: {shown}");
            assert!(
                !shown.contains(&key_password),
                "{client} {side}: the key's password is printed: {shown}"
            );
        }
    }
}
