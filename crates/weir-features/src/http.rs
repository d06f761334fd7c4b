//! Lookups over HTTP (cargo feature `http`): any number of views, each under its name, served
//! as JSON on tokio, loopback only unless allowed.
//!
//! | request | answer |
//! |---|---|
//! | `GET /features/<view>/<entity>` | 200, the entity's features as of now (the wall clock, ms) |
//! | `GET /features/<view>/<entity>?at=<ms>` | 200, the entity's features as of `<ms>` since the epoch |
//! | an unknown view, any other path | 404 |
//! | `at` not an integer, another query parameter, an entity that is not a key of the view | 400 |
//! | a lookup before the view's horizon ([`FeatureError::BeforeHorizon`]) | 422 |
//! | another method on `/features/…` | 405, with `Allow: GET` |
//!
//! `<view>` and `<entity>` are percent-decoded (`u%2017` is the entity `u 17`); the entity is
//! parsed into the view's key with [`FromStr`] (`String`, integers). A 200 body:
//!
//! ```json
//! {"view": "user_txn", "entity": "u17", "at": 1700000000000, "newest_event": 1699999990000,
//!  "features": {"txn_count_5m": {"value": 3, "status": "present"},
//!               "last_amount": {"value": null, "status": "empty"}}}
//! ```
//!
//! `value` is a number, `null` ([`Value::Missing`], or a number that is not finite) or an array
//! of numbers ([`Value::Numbers`]); `status` is `present`, `expired` or `empty` ([`Status`]);
//! `newest_event` is `null` when the entity has no known event at or before `at`. Every other
//! answer's body is `{"error": "<what was wrong>"}`.
//!
//! A lookup is the in-process [`FeatureLookup::lookup_at`], with its read-your-writes
//! guarantee; it read-locks one stripe of one subtask's state for the time of one lookup. No
//! input makes the server panic. With the view's [metrics](crate::metrics) on, a request for a
//! served view (with a valid query) is timed as `path="http"`, from its arrival to its JSON body,
//! whatever its answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::FeatureError;
use crate::operator::FeatureLookup;
use crate::state::now_ms;
use crate::view::{FeatureRow, Status, Value};

/// What went wrong starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error("feature server: {field} {reason}")]
    InvalidConfig {
        /// The field (`addr`, `views`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The address could not be bound (e.g. its port is in use).
    #[error("feature server: cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    addr: SocketAddr,
    allow_non_loopback: bool,
}

impl Default for ServerConfig {
    /// `127.0.0.1:9899`.
    fn default() -> Self {
        ServerConfig { addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9899)), allow_non_loopback: false }
    }
}

impl ServerConfig {
    /// Listens on `addr` (port 0: any free port; see [`FeatureServer::addr`]). A non-loopback
    /// address also needs [`ServerConfig::allow_non_loopback`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Allows an address other machines can reach: every entity's features are then readable
    /// on that network. Default: loopback only.
    pub fn allow_non_loopback(mut self) -> Self {
        self.allow_non_loopback = true;
        self
    }

    /// The configured address.
    pub fn configured_addr(&self) -> SocketAddr {
        self.addr
    }

    fn validate(&self) -> Result<(), ServeError> {
        if !self.addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ServeError::InvalidConfig {
                field: "addr",
                reason: format!(
                    "{} is not a loopback address; allow it explicitly (allow_non_loopback) to \
                     expose the features to the network",
                    self.addr
                ),
            });
        }
        Ok(())
    }
}

/// A view as the server sees it: its key type erased.
trait ServedView: Send + Sync {
    /// The row of `entity` as of `at`; [`LookupError::Entity`] if `entity` is not a key of the view.
    fn lookup_at(&self, entity: &str, at: i64) -> Result<FeatureRow, LookupError>;
    /// Counts a request for the view that took `took`.
    fn observe(&self, took: Duration);
}

enum LookupError {
    Entity(String),
    Feature(FeatureError),
}

impl<K, T> ServedView for FeatureLookup<K, T>
where
    K: FromStr + Hash + Eq + Clone + Serialize + Send + Sync,
    K::Err: std::fmt::Display,
    T: Send + Sync,
{
    fn lookup_at(&self, entity: &str, at: i64) -> Result<FeatureRow, LookupError> {
        let key = entity.parse::<K>().map_err(|e| LookupError::Entity(e.to_string()))?;
        self.lookup_untimed(&key, at).map_err(LookupError::Feature)
    }

    fn observe(&self, took: Duration) {
        self.observe_http(took);
    }
}

struct Served {
    lookup: Box<dyn ServedView>,
    names: Vec<String>,
}

/// The views to serve, each under its name ([`FeatureView::name`](crate::FeatureView::name)).
#[derive(Default)]
pub struct Views {
    views: HashMap<String, Served>,
    duplicate: Option<String>,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views").field("names", &self.views.keys().collect::<Vec<_>>()).finish()
    }
}

impl Views {
    /// No views.
    pub fn new() -> Self {
        Views::default()
    }

    /// Serves `lookup` under its view's name; the entity in a URL is parsed with `K`'s
    /// [`FromStr`]. Two views of one name are refused by [`serve`].
    pub fn with<K, T>(mut self, lookup: FeatureLookup<K, T>) -> Self
    where
        K: FromStr + Hash + Eq + Clone + Serialize + Send + Sync + 'static,
        K::Err: std::fmt::Display,
        T: Send + Sync + 'static,
    {
        let name = lookup.view().name().to_owned();
        let names = lookup.view().feature_names().map(str::to_owned).collect();
        match self.views.entry(name) {
            Entry::Occupied(e) => {
                self.duplicate.get_or_insert_with(|| e.key().clone());
            }
            Entry::Vacant(e) => {
                e.insert(Served { lookup: Box::new(lookup), names });
            }
        }
        self
    }
}

/// A running server; stops when dropped (its accept loop and open connections are aborted) or
/// on [`FeatureServer::shutdown`].
#[derive(Debug)]
pub struct FeatureServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FeatureServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept loop to end: the listener is closed, and the
    /// connections still open are aborted.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FeatureServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves lookups into `views` as configured, on the current tokio runtime, until the returned
/// handle is dropped or shut down.
///
/// # Examples
///
/// ```no_run
/// # async fn f(lookup: weir_features::FeatureLookup<String, (String, i64)>) -> Result<(), Box<dyn std::error::Error>> {
/// use weir_features::http::{ServerConfig, Views, serve};
/// let server = serve(Views::new().with(lookup), &ServerConfig::default()).await?;
/// println!("http://{}/features/user_txn/u17", server.addr());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`ServeError::InvalidConfig`] for a non-loopback address not allowed explicitly or two
/// views of one name, [`ServeError::Bind`] when the address cannot be bound.
///
/// # Cancel safety
///
/// Dropping the future before it completes binds nothing that outlives it.
pub async fn serve(views: Views, config: &ServerConfig) -> Result<FeatureServer, ServeError> {
    config.validate()?;
    if let Some(name) = views.duplicate {
        return Err(ServeError::InvalidConfig { field: "views", reason: format!("name {name} twice") });
    }
    let views = Arc::new(views.views);
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: config.addr, source })?;
    let (stop, mut stopped) = watch::channel(false);
    // Owned by FeatureServer, which aborts it when dropped.
    let task = tokio::spawn(async move {
        // Dropped with the accept loop: aborts the connections still open.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
                _ = stopped.changed() => break,
            };
            let views = views.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let views = views.clone();
                    async move { Ok::<_, Infallible>(respond(&req, &views)) }
                });
                // A client that goes away mid-request is no error of the server's.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(FeatureServer { addr, stop, task: Some(task) })
}

fn respond(req: &Request<Incoming>, views: &HashMap<String, Served>) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let mut served = None;
    let (status, body) = match answer(req, views, &mut served) {
        Ok(body) => (StatusCode::OK, body),
        Err((status, error)) => (status, json!({ "error": error })),
    };
    let body = body.to_string();
    if let Some(served) = served {
        served.lookup.observe(start.elapsed());
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET"));
    }
    response
}

type Failure = (StatusCode, String);

/// The body of a 200 answer, or the failure; sets `served` to the view the request named, if
/// served.
fn answer<'v>(
    req: &Request<Incoming>,
    views: &'v HashMap<String, Served>,
    served: &mut Option<&'v Served>,
) -> Result<Json, Failure> {
    let not_found = || {
        (StatusCode::NOT_FOUND, format!("no such path {}; see /features/<view>/<entity>", req.uri().path()))
    };
    let rest = req.uri().path().strip_prefix("/features/").ok_or_else(not_found)?;
    let (view, entity) = rest.split_once('/').ok_or_else(not_found)?;
    if view.is_empty() || entity.is_empty() || entity.contains('/') {
        return Err(not_found());
    }
    if req.method() != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; only GET", req.method()),
        ));
    }
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let view = percent_decode(view).map_err(|e| bad(format!("view: {e}")))?;
    let entity = percent_decode(entity).map_err(|e| bad(format!("entity: {e}")))?;
    let at = parse_at(req.uri().query()).map_err(bad)?.unwrap_or_else(now_ms);
    let served = *served
        .insert(views.get(&view).ok_or_else(|| (StatusCode::NOT_FOUND, format!("no such view {view:?}")))?);
    let row = served.lookup.lookup_at(&entity, at).map_err(|e| match e {
        LookupError::Entity(e) => bad(format!("entity {entity:?} is not a key of view {view:?}: {e}")),
        LookupError::Feature(e @ FeatureError::BeforeHorizon { .. }) => {
            (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        LookupError::Feature(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let features: Map<String, Json> = served
        .names
        .iter()
        .zip(&row.values)
        .map(|(name, v)| {
            let value = match &v.value {
                Value::Count(n) => json!(n),
                Value::Number(x) => json!(x),
                Value::Numbers(xs) => json!(xs),
                _ => Json::Null,
            };
            let status = match v.status {
                Status::Present => "present",
                Status::Expired => "expired",
                _ => "empty",
            };
            (name.clone(), json!({ "value": value, "status": status }))
        })
        .collect();
    Ok(json!({
        "view": view, "entity": entity, "at": row.at, "newest_event": row.newest_event, "features": features,
    }))
}

/// The `at` of a query string, if any; any other parameter is refused.
fn parse_at(query: Option<&str>) -> Result<Option<i64>, String> {
    let mut at = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "at" {
            return Err(format!("unknown query parameter {name:?}; only at=<epoch ms>"));
        }
        let value = percent_decode(value).map_err(|e| format!("at: {e}"))?;
        let t = value
            .parse::<i64>()
            .map_err(|_| format!("at: expected milliseconds since the epoch (an integer), got {value:?}"))?;
        if at.replace(t).is_some() {
            return Err("at: given twice".to_owned());
        }
    }
    Ok(at)
}

/// Decodes `%XX` escapes into UTF-8.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let byte = hex
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent escape in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}
