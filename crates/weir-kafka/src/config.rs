//! Connection settings shared by the source, the sink and the task group.
//!
//! Invariants:
//! - Keys Weir owns are refused in the pass-through properties, naming the key and the typed
//!   setting to use instead; they are never silently overridden.
//! - Secrets (SASL passwords, TLS key passwords) come from the environment or a file and are
//!   never printed: not by `Debug`, not in errors, not in logs. Pass-through values of keys
//!   that look secret (`*password*`, `*secret*`, `sasl.*`, `ssl.key.*`) are redacted by
//!   `Debug` too.
//! - A broker that refuses the client (a failed SASL authentication, a failed TLS handshake)
//!   fails the client's first request at once, naming the bootstrap servers, instead of being
//!   retried until the request times out; a TLS file librdkafka cannot load is named in the
//!   error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext};
use weir_runtime::{BoxError, Error, Result};

/// A secret value read from the environment or a file; `Debug` and `Display` print `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value of the environment variable `var`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the variable (never its value) if it is unset or not
    /// UTF-8.
    pub fn from_env(var: &str) -> Result<Secret> {
        std::env::var(var).map(Secret).map_err(|e| Error::InvalidConfig {
            field: "secret",
            reason: format!("environment variable {var}: {e}"),
        })
    }

    /// The contents of the file at `path`, without a trailing newline.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the file if it cannot be read.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Secret> {
        let path = path.into();
        std::fs::read_to_string(&path)
            .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| Error::InvalidConfig { field: "secret", reason: format!("{}: {e}", path.display()) })
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A SASL mechanism librdkafka supports without Kerberos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN` (use it over TLS: the password crosses the wire).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name in Kafka's configuration, e.g. `SCRAM-SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a mechanism name (case-insensitive).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] on field `sasl.mechanism` naming the accepted values.
    pub fn parse(name: &str) -> Result<SaslMechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            other => Err(Error::InvalidConfig {
                field: "sasl.mechanism",
                reason: format!("{other:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
            }),
        }
    }
}

/// SASL authentication: a mechanism, a user name and a password.
#[derive(Debug, Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// TLS: the CA that signed the brokers' certificates and, for mutual TLS, the client's
/// certificate and key (PEM files). The brokers' host names are verified against their
/// certificates (`ssl.endpoint.identification.algorithm=https`; a pass-through
/// `ssl.endpoint.identification.algorithm=none` turns that off).
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// CA certificate(s); the system's store when `None`.
    pub ca: Option<PathBuf>,
    /// The client's certificate.
    pub certificate: Option<PathBuf>,
    /// The client's private key.
    pub key: Option<PathBuf>,
    /// The key's password, if it is encrypted.
    pub key_password: Option<Secret>,
}

/// Keys the connectors set themselves, and the typed setting that replaces each.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "KafkaConfig::new"),
    ("group.id", "the source's group"),
    ("enable.auto.commit", "none: offsets are committed when a checkpoint completes"),
    ("enable.auto.offset.store", "none: offsets are committed when a checkpoint completes"),
    ("transactional.id", "KafkaSink::exactly_once"),
    ("isolation.level", "none: sources read committed records only"),
    ("security.protocol", "KafkaConfig::sasl / KafkaConfig::tls"),
    ("sasl.mechanism", "KafkaConfig::sasl"),
    ("sasl.mechanisms", "KafkaConfig::sasl"),
    ("sasl.username", "KafkaConfig::sasl"),
    ("sasl.password", "KafkaConfig::sasl with a Secret from the environment or a file"),
    ("ssl.key.password", "KafkaConfig::tls with a Secret from the environment or a file"),
    ("ssl.ca.location", "KafkaConfig::tls"),
    ("ssl.certificate.location", "KafkaConfig::tls"),
    ("ssl.key.location", "KafkaConfig::tls"),
];

/// Keys owned only by an exactly-once sink (an at-least-once sink may set them).
const OWNED_EXACTLY_ONCE: &[&str] = &["enable.idempotence", "acks", "max.in.flight.requests.per.connection"];

/// Where and how to connect to Kafka: the bootstrap servers, security settings, and any other
/// librdkafka property, passed through.
///
/// ```
/// use weir_kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("127.0.0.1:9092").set("linger.ms", "5");
/// assert!(config.clone().set("enable.auto.commit", "true").check().is_err());
/// assert!(config.check().is_ok());
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    bootstrap: String,
    properties: BTreeMap<String, String>,
    sasl: Option<Sasl>,
    tls: Option<Tls>,
}

impl KafkaConfig {
    /// Connects through `bootstrap_servers` (`host:port[,host:port…]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap: bootstrap_servers.into(),
            properties: BTreeMap::new(),
            sasl: None,
            tls: None,
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Passes a librdkafka property through (e.g. `linger.ms`, `compression.type`). Keys the
    /// connectors own are refused when a client is made ([`KafkaConfig::check`]); unknown keys
    /// are refused by librdkafka, naming them.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Authenticates with SASL (over TLS too if [`KafkaConfig::tls`] is set).
    pub fn sasl(mut self, sasl: Sasl) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// Encrypts with TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The `security.protocol` these settings give.
    pub fn security_protocol(&self) -> &'static str {
        match (&self.sasl, &self.tls) {
            (None, None) => "PLAINTEXT",
            (None, Some(_)) => "SSL",
            (Some(_), None) => "SASL_PLAINTEXT",
            (Some(_), Some(_)) => "SASL_SSL",
        }
    }

    /// Checks the pass-through properties: none may be a key the connectors own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the key and what to use instead.
    pub fn check(&self) -> Result<()> {
        self.check_owned(false)
    }

    pub(crate) fn check_owned(&self, exactly_once: bool) -> Result<()> {
        for key in self.properties.keys() {
            if let Some((_, instead)) = OWNED.iter().find(|(k, _)| k == key) {
                return Err(owned(key, instead));
            }
            if exactly_once && OWNED_EXACTLY_ONCE.contains(&key.as_str()) {
                return Err(owned(key, "none: an exactly-once sink sets it"));
            }
        }
        Ok(())
    }

    /// A librdkafka configuration: bootstrap servers, security, pass-through properties.
    pub(crate) fn client(&self, exactly_once: bool) -> Result<ClientConfig> {
        self.check_owned(exactly_once)?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("security.protocol", self.security_protocol());
        if let Some(sasl) = &self.sasl {
            c.set("sasl.mechanism", sasl.mechanism.as_str());
            c.set("sasl.username", &sasl.username);
            c.set("sasl.password", sasl.password.expose());
        }
        if let Some(tls) = &self.tls {
            c.set("ssl.endpoint.identification.algorithm", "https");
            let paths = [
                ("ssl.ca.location", &tls.ca),
                ("ssl.certificate.location", &tls.certificate),
                ("ssl.key.location", &tls.key),
            ];
            for (key, path) in paths {
                if let Some(path) = path {
                    c.set(key, path.display().to_string());
                }
            }
            if let Some(password) = &tls.key_password {
                c.set("ssl.key.password", password.expose());
            }
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }
}

impl KafkaConfig {
    /// Makes a client of `client` (from [`KafkaConfig::client`]) with `context`. A TLS file
    /// librdkafka cannot load (missing, not PEM, or a key its password does not decrypt) is named
    /// in the error, with the setting to check.
    pub(crate) fn create<T, C>(&self, client: &ClientConfig, context: C) -> std::result::Result<T, BoxError>
    where
        T: FromClientConfigAndContext<C>,
        C: ClientContext,
    {
        T::from_config_and_context(client, context).map_err(|e| {
            let (Some(tls), KafkaError::ClientCreation(reason)) = (&self.tls, &e) else {
                return e.into();
            };
            // librdkafka says which setting failed: "ssl.key.location failed: <OpenSSL's error>".
            let (what, path, check) = match reason.split_once(" failed:").map(|(key, _)| key) {
                Some("ssl.ca.location") => ("CA certificate", &tls.ca, ""),
                Some("ssl.certificate.location") => ("client certificate", &tls.certificate, ""),
                Some("ssl.key.location") if tls.key_password.is_some() => {
                    ("client key", &tls.key, ", or Tls::key_password does not decrypt it")
                }
                Some("ssl.key.location") => {
                    ("client key", &tls.key, ", or it is encrypted and Tls::key_password is unset")
                }
                _ => return e.into(),
            };
            match path {
                Some(path) => {
                    TlsFileError { what, path: path.display().to_string(), check, source: e }.into()
                }
                None => e.into(),
            }
        })
    }

    /// The partition count of `topic`, asked of the brokers by a client that reports a failed
    /// authentication or TLS handshake as soon as a broker refuses it (librdkafka itself would
    /// retry until the request times out). The error names the bootstrap servers and never a
    /// secret.
    pub(crate) fn topic_partitions(&self, topic: &str) -> std::result::Result<i32, String> {
        let client = self.client(false).map_err(|e| e.to_string())?;
        let consumer: BaseConsumer<Watchful> =
            self.create(&client, Watchful::default()).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + crate::source::REQUEST_TIMEOUT;
        loop {
            match consumer.fetch_metadata(Some(topic), Duration::from_millis(500)) {
                Ok(m) => {
                    return match m.topics().first() {
                        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                            Ok(t.partitions().len() as i32)
                        }
                        Some(t) => Err(format!("topic {topic}: {:?}", t.error())),
                        None => Err(format!("topic {topic}: no metadata")),
                    };
                }
                Err(e) => {
                    // Serves the client's events: the error callback runs here.
                    let _ = consumer.poll(Duration::ZERO);
                    match consumer.context().refused() {
                        Some(Refusal::Authentication(reason)) => {
                            return Err(format!("authentication failed at {}: {reason}", self.bootstrap));
                        }
                        Some(Refusal::Tls(reason)) => {
                            return Err(format!(
                                "TLS failed at {} (check the CA, the client certificate and key, and \
                                 that the address is a TLS listener): {reason}",
                                self.bootstrap
                            ));
                        }
                        None => {}
                    }
                    if std::time::Instant::now() >= deadline {
                        return Err(format!("{} did not answer: {e}", self.bootstrap));
                    }
                }
            }
        }
    }
}

/// Why a broker refused a client: retrying will not help.
#[derive(Debug, Clone)]
enum Refusal {
    /// SASL authentication failed (wrong password, unknown user, mechanism not enabled).
    Authentication(String),
    /// The TLS handshake failed: the broker's certificate is not trusted or does not name it,
    /// the broker refused the client's certificate, or the listener does not speak TLS.
    Tls(String),
}

/// Notes the first refusal librdkafka reports (an authentication or TLS handshake failure).
#[derive(Default)]
struct Watchful {
    refused: Mutex<Option<Refusal>>,
}

impl Watchful {
    fn refused(&self) -> Option<Refusal> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ClientContext for Watchful {
    fn error(&self, error: KafkaError, reason: &str) {
        let refusal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => Refusal::Authentication(reason.to_owned()),
            Some(RDKafkaErrorCode::SSL) => Refusal::Tls(reason.to_owned()),
            // Under TLS 1.3 the client's handshake is over before the broker checks the client's
            // certificate: a refusal arrives as a TLS alert on the first read, which librdkafka
            // reports as a transport failure ("... SSL routines::tlsv13 alert certificate
            // required", "... sslv3 alert bad certificate"); so does a handshake the peer
            // closes (a listener that does not speak TLS).
            Some(RDKafkaErrorCode::BrokerTransportFailure) if tls_refusal(reason) => {
                Refusal::Tls(reason.to_owned())
            }
            _ => {
                tracing::warn!(error = %error, reason, "kafka client");
                return;
            }
        };
        self.refused.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(refusal);
    }
}

impl ConsumerContext for Watchful {}

/// Whether librdkafka's reason for a failed connection is a TLS alert the broker sent (OpenSSL
/// names received alerts `... alert <name>`) or a handshake that failed otherwise (the peer
/// closed the connection: it does not speak TLS).
fn tls_refusal(reason: &str) -> bool {
    (reason.contains("SSL routines") && reason.contains(" alert ")) || reason.contains("SSL handshake failed")
}

/// librdkafka could not load a TLS file.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path} cannot be loaded (it is missing or not PEM{check}): {source}")]
struct TlsFileError {
    /// Which file: `CA certificate`, `client certificate` or `client key`.
    what: &'static str,
    /// Its path.
    path: String,
    /// What else to check.
    check: &'static str,
    /// librdkafka's error.
    source: KafkaError,
}

fn owned(key: &str, instead: &str) -> Error {
    Error::InvalidConfig {
        field: "kafka properties",
        reason: format!("{key:?} is set by Weir and cannot be passed through (instead: {instead})"),
    }
}

/// Whether a pass-through key's value must not be printed.
fn secret_key(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.starts_with("sasl.")
        || key.starts_with("ssl.key")
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if secret_key(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &properties)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn owned_keys_are_refused_naming_them() {
        for key in ["enable.auto.commit", "transactional.id", "group.id", "sasl.password"] {
            let err = KafkaConfig::new("b:1").set(key, "x").check().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let eo = KafkaConfig::new("b:1").set("enable.idempotence", "false");
        assert!(eo.check().is_ok());
        assert!(eo.check_owned(true).unwrap_err().to_string().contains("enable.idempotence"));
    }

    #[test]
    fn secrets_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2-very-secret\n").unwrap();
        let config = KafkaConfig::new("b:1")
            .sasl(Sasl {
                mechanism: SaslMechanism::ScramSha256,
                username: "weir".into(),
                password: Secret::from_file(&path).unwrap(),
            })
            .tls(Tls { key_password: Some(Secret::from_file(&path).unwrap()), ..Tls::default() })
            .set("sasl.oauthbearer.client.secret", "hunter2-very-secret");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("weir"), "{shown}");
        assert_eq!(config.security_protocol(), "SASL_SSL");
        let err = Secret::from_env("WEIR_SURELY_UNSET_VARIABLE").unwrap_err().to_string();
        assert!(err.contains("WEIR_SURELY_UNSET_VARIABLE"), "{err}");
    }

    #[test]
    fn a_tls_file_librdkafka_cannot_load_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "not PEM").unwrap();
        let password = Secret::from_file(&not_pem).unwrap();
        let cases = [
            ("CA certificate", Tls { ca: Some(not_pem.clone()), ..Tls::default() }),
            (
                "client key",
                Tls { key: Some(not_pem.clone()), key_password: Some(password), ..Tls::default() },
            ),
        ];
        for (what, tls) in cases {
            let config = KafkaConfig::new("127.0.0.1:1").tls(tls);
            let client = config.client(false).unwrap();
            let Err(err) =
                config.create::<BaseConsumer, _>(&client, rdkafka::consumer::DefaultConsumerContext)
            else {
                panic!("librdkafka loaded {}", not_pem.display());
            };
            let err = err.to_string();
            assert!(err.contains(&format!("TLS {what} {}", not_pem.display())), "{err}");
        }
    }

    #[test]
    fn a_tls_alert_or_a_closed_handshake_is_a_refusal_and_a_broken_connection_is_not() {
        // As librdkafka reports them.
        let refused = [
            "ssl://127.0.0.1:1/bootstrap: Receive failed: ../ssl/record/rec_layer_s3.c:1601:ssl3_read_bytes \
             error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42",
            "ssl://b:9093/1: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required",
            "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: Disconnected: SSL connection closed by peer: \
             connecting to a PLAINTEXT broker listener? (after 1ms in state SSL_HANDSHAKE)",
        ];
        assert!(refused.iter().all(|r| tls_refusal(r)));
        assert!(!tls_refusal("ssl://b:9093/1: Connection refused (after 0ms in state CONNECT)"));
        assert!(!tls_refusal("ssl://b:9093/1: Disconnected (after 2ms in state UP)"));
    }
}
