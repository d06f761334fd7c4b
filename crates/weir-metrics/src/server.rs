//! The HTTP endpoint: `GET /metrics` (the registry in the text format) and `GET /healthz`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Error, Metrics, TEXT_CONTENT_TYPE};

/// Where the endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    addr: SocketAddr,
    allow_non_loopback: bool,
}

impl Default for ServerConfig {
    /// `127.0.0.1:9898`.
    fn default() -> Self {
        ServerConfig { addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9898)), allow_non_loopback: false }
    }
}

impl ServerConfig {
    /// Listens on `addr` (port 0: any free port; see [`MetricsServer::addr`]). A non-loopback
    /// address also needs [`ServerConfig::allow_non_loopback`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Allows an address other machines can reach: the metrics (pipeline, topic and group
    /// names) are then visible on that network. Default: loopback only.
    pub fn allow_non_loopback(mut self) -> Self {
        self.allow_non_loopback = true;
        self
    }

    /// The configured address.
    pub fn configured_addr(&self) -> SocketAddr {
        self.addr
    }

    fn validate(&self) -> Result<(), Error> {
        if !self.addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(Error::InvalidConfig {
                field: "metrics.addr",
                reason: format!(
                    "{} is not a loopback address; allow it explicitly (allow_non_loopback) to \
                     expose metrics to the network",
                    self.addr
                ),
            });
        }
        Ok(())
    }
}

/// A running endpoint; stops when dropped (its accept loop and open connections are aborted)
/// or on [`MetricsServer::shutdown`].
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the accept loop to end (connections in progress finish).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Serves `metrics` as configured, on the current tokio runtime, until the returned handle is
/// dropped: one line in a program's `main`,
/// `let _server = weir_metrics::serve(metrics.clone(), &ServerConfig::default()).await?;`.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a non-loopback address not allowed explicitly, [`Error::Bind`]
/// when the address cannot be bound (e.g. its port is in use).
///
/// # Cancel safety
///
/// Dropping the future before it completes binds nothing that outlives it: the listener is
/// closed and no task was started.
pub async fn serve(metrics: Metrics, config: &ServerConfig) -> Result<MetricsServer, Error> {
    config.validate()?;
    let listener =
        TcpListener::bind(config.addr).await.map_err(|source| Error::Bind { addr: config.addr, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: config.addr, source })?;
    let (stop, mut stopped) = watch::channel(false);
    tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    #[expect(clippy::disallowed_methods, reason = "owned by MetricsServer, which aborts it when dropped")]
    let task = tokio::spawn(async move {
        // Dropped with the accept loop: aborts the connections still open.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let metrics = metrics.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| respond(req, metrics.clone()));
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
            });
        }
    });
    Ok(MetricsServer { addr, stop, task: Some(task) })
}

async fn respond(req: Request<Incoming>, metrics: Metrics) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, TEXT_CONTENT_TYPE, metrics.encode()),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned()),
        (_, "/metrics" | "/healthz") => {
            (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET\n".to_owned())
        }
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "see /metrics and /healthz\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(response)
}
