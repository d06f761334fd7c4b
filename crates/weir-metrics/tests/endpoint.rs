//! The endpoint over real TCP: `/metrics`, `/healthz`, unknown paths, and the loopback rule.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_metrics::catalog::OPERATOR_RECORDS_IN;
use weir_metrics::{Error, Metrics, ServerConfig, serve};

async fn get(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn serves_metrics_and_health() {
    let metrics = Metrics::new();
    metrics.counter(&OPERATOR_RECORDS_IN, ["demo", "map", "0"]).inc_by(42);
    let server =
        serve(metrics.clone(), &ServerConfig::default().addr("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let addr = server.addr();

    let r = get(addr, "GET", "/metrics").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("text/plain; version=0.0.4"), "{r}");
    assert!(
        r.contains(r#"weir_operator_records_in_total{operator="map",pipeline="demo",subtask="0"} 42"#),
        "{r}"
    );

    // Values are read at scrape time.
    metrics.counter(&OPERATOR_RECORDS_IN, ["demo", "map", "0"]).inc();
    assert!(get(addr, "GET", "/metrics").await.contains("} 43"));

    let r = get(addr, "GET", "/healthz").await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
    assert!(get(addr, "GET", "/nope").await.starts_with("HTTP/1.1 404"));
    assert!(get(addr, "POST", "/metrics").await.starts_with("HTTP/1.1 405"));

    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still listening after shutdown");
}

#[tokio::test]
async fn a_non_loopback_address_must_be_allowed_explicitly() {
    let config = ServerConfig::default().addr("0.0.0.0:0".parse().unwrap());
    match serve(Metrics::new(), &config).await {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "metrics.addr");
            assert!(reason.contains("0.0.0.0"), "{reason}");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let server = serve(Metrics::new(), &config.allow_non_loopback()).await.unwrap();
    assert!(server.addr().ip().is_unspecified());
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let first =
        serve(Metrics::new(), &ServerConfig::default().addr("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let err = serve(Metrics::new(), &ServerConfig::default().addr(first.addr())).await.unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains(&first.addr().to_string()), "{err}");
}
