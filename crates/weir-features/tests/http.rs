//! Lookups over HTTP: a pipeline feeds views, and `GET /features/<view>/<entity>` on a real
//! loopback socket answers what the in-process lookups answer, with the documented errors.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_features::http::{FeatureServer, ServeError, ServerConfig, Views, serve};
use weir_features::{Agg, FeatureLookup, FeatureRow, FeatureView, Status, Value, Window};
use weir_runtime::{DiscardSink, MemorySource, Pipeline, Watermarks};
use weir_testkit::now_ms;

/// (user, event time ms, amount)
type Txn = (u32, i64, i64);
/// (user name, event time ms, amount)
type NamedTxn = (String, i64, i64);

const LATENESS: Duration = Duration::from_secs(600);

fn view() -> FeatureView<u32, Txn> {
    FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .allowed_lateness(LATENESS)
        .number("amount", |t| t.2 as f64)
        .feature("count_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
        .feature("sum_10m", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(600)))
        .feature("min_1m", Agg::Min("amount".into()), Window::Last(Duration::from_secs(60)))
        .feature("last_2", Agg::LastN("amount".into(), 2), Window::Lifetime)
        .build()
        .unwrap()
}

fn named_view() -> FeatureView<String, NamedTxn> {
    FeatureView::builder("named")
        .entity(|t: &NamedTxn| t.0.clone())
        .event_time(|t| t.1)
        .number("amount", |t| t.2 as f64)
        .feature("count_1h", Agg::Count, Window::Last(Duration::from_secs(3600)))
        .build()
        .unwrap()
}

/// 20 000 events of 50 users over 20 minutes, in time order; user 49 stops after 5 minutes.
fn txns() -> Vec<Txn> {
    (0..20_000i64)
        .map(|i| ((i * 7 % 50) as u32, i * 60, i % 97))
        .filter(|t| t.0 != 49 || t.1 < 300_000)
        .collect()
}

/// Runs a pipeline over `events` feeding both views; returns their lookups.
async fn run(events: Vec<Txn>) -> (FeatureLookup<u32, Txn>, FeatureLookup<String, NamedTxn>) {
    let p = Pipeline::builder("http").parallelism(2).handle_signals(false).build().unwrap();
    let stream = p
        .source(MemorySource::new(events.clone()).batch_size(128))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, lookup) = view().attach(stream);
    late.sink(DiscardSink);
    let named: Vec<NamedTxn> = events.iter().map(|t| (format!("u {}", t.0), t.1, t.2)).collect();
    let stream = p
        .source(MemorySource::new(named).batch_size(128))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, named_lookup) = named_view().attach(stream);
    late.sink(DiscardSink);
    p.run().await.unwrap();
    (lookup, named_lookup)
}

async fn start(lookup: FeatureLookup<u32, Txn>, named: FeatureLookup<String, NamedTxn>) -> FeatureServer {
    let config = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap());
    serve(Views::new().with(lookup).with(named), &config).await.unwrap()
}

/// One request on a fresh connection: the whole response.
async fn raw(addr: SocketAddr, method: &str, target: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// One request on a fresh connection: the status code and the body as JSON.
async fn request(addr: SocketAddr, method: &str, target: &str) -> (u16, Json) {
    let response = raw(addr, method, target).await;
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{target}: {e}: {body:?}")))
}

async fn get(addr: SocketAddr, target: &str) -> (u16, Json) {
    request(addr, "GET", target).await
}

/// The JSON the documentation promises for `row`, written independently of the server's.
fn expected(view: &str, entity: &str, names: &[&str], row: &FeatureRow) -> Json {
    let mut features = serde_json::Map::new();
    for (name, v) in names.iter().zip(&row.values) {
        let value = match &v.value {
            Value::Count(n) => json!(*n),
            Value::Number(x) => json!(*x),
            Value::Numbers(xs) => json!(xs),
            Value::Missing => Json::Null,
            other => panic!("unexpected value {other:?}"),
        };
        let status = match v.status {
            Status::Present => "present",
            Status::Expired => "expired",
            Status::Empty => "empty",
            other => panic!("unexpected status {other:?}"),
        };
        features.insert((*name).to_owned(), json!({ "value": value, "status": status }));
    }
    json!({ "view": view, "entity": entity, "at": row.at, "newest_event": row.newest_event, "features": features })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_lookups_equal_in_process_lookups_for_many_entities_and_times() {
    let events = txns();
    let end = events.last().unwrap().1;
    let (lookup, named) = run(events).await;
    let server = start(lookup.clone(), named.clone()).await;
    let names: Vec<&str> = lookup.view().feature_names().collect();
    let mut statuses = std::collections::BTreeSet::new();
    let times = [end - 590_000, end - 300_001, end - 60_000, end - 1, end, end + 30_000, end + 3_600_000];
    for user in (0..50u32).chain([999]) {
        for at in times {
            let row = lookup.lookup_at(&user, at).unwrap();
            let (status, body) = get(server.addr(), &format!("/features/user_txn/{user}?at={at}")).await;
            assert_eq!(status, 200, "user {user} at {at}: {body}");
            assert_eq!(body, expected("user_txn", &user.to_string(), &names, &row), "user {user} at {at}");
            statuses.extend(body["features"].as_object().unwrap().values().map(|f| f["status"].to_string()));
        }
    }
    let all: Vec<&str> = statuses.iter().map(String::as_str).collect();
    assert_eq!(all, ["\"empty\"", "\"expired\"", "\"present\""]);
    // The statuses, each where it belongs: user 49 went idle after 5 minutes.
    let (_, idle) = get(server.addr(), &format!("/features/user_txn/49?at={end}")).await;
    assert_eq!(idle["features"]["count_1m"], json!({ "value": 0, "status": "expired" }));
    assert_eq!(idle["features"]["min_1m"], json!({ "value": null, "status": "expired" }));
    assert_eq!(idle["features"]["last_2"]["status"], "present");
    let (_, unknown) = get(server.addr(), &format!("/features/user_txn/999?at={end}")).await;
    assert_eq!(unknown["newest_event"], Json::Null);
    assert_eq!(unknown["features"]["count_1m"], json!({ "value": 0, "status": "empty" }));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_without_at_is_as_of_the_wall_clock() {
    let (lookup, named) = run(txns()).await;
    let server = start(lookup, named).await;
    let before = now_ms();
    let (status, body) = get(server.addr(), "/features/user_txn/3").await;
    let after = now_ms();
    assert_eq!(status, 200, "{body}");
    let at = body["at"].as_i64().unwrap();
    assert!((before..=after).contains(&at), "{before} <= {at} <= {after}");
    // The events are from 1970: as of now every window has passed them.
    assert_eq!(body["features"]["count_1m"], json!({ "value": 0, "status": "expired" }));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_entity_is_decoded_and_parsed_with_the_views_key_type() {
    let events = txns();
    let end = events.last().unwrap().1;
    let (lookup, named) = run(events).await;
    let server = start(lookup, named.clone()).await;
    let row = named.lookup_at(&"u 17".to_owned(), end).unwrap();
    assert_eq!(row.values[0].status, Status::Present);
    let (status, body) = get(server.addr(), &format!("/features/named/u%2017?at={end}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, expected("named", "u 17", &["count_1h"], &row));
    // An integer key refuses what does not parse, naming the entity.
    let (status, body) = get(server.addr(), &format!("/features/user_txn/u%2017?at={end}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"u 17\""), "{body}");
    let (status, body) = get(server.addr(), "/features/named/u%2G17").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("entity"), "{body}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_their_status() {
    let events = txns();
    let end = events.last().unwrap().1;
    let (lookup, named) = run(events).await;
    let server = start(lookup, named).await;
    let addr = server.addr();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("GET", "/features/nope/3".into(), 404, "no such view \"nope\""),
        ("GET", "/features/user_txn".into(), 404, "no such path"),
        ("GET", "/features/user_txn/".into(), 404, "no such path"),
        ("GET", "/features/user_txn/3/x".into(), 404, "no such path"),
        ("GET", "/metrics".into(), 404, "no such path"),
        ("GET", "/features/user_txn/3?at=soon".into(), 400, "at: expected milliseconds"),
        ("GET", "/features/user_txn/3?at=".into(), 400, "at: expected milliseconds"),
        ("GET", "/features/user_txn/3?at=1.5".into(), 400, "at: expected milliseconds"),
        ("GET", "/features/user_txn/3?at=99999999999999999999".into(), 400, "at: expected milliseconds"),
        ("GET", "/features/user_txn/3?at=1&at=2".into(), 400, "at: given twice"),
        ("GET", "/features/user_txn/3?when=1".into(), 400, "unknown query parameter \"when\""),
        ("GET", format!("/features/user_txn/3?at={}", end - 700_000), 422, "before the horizon"),
        ("GET", "/features/user_txn/%".into(), 400, "entity: invalid percent escape"),
        ("GET", "/features/user_txn/%F".into(), 400, "entity: invalid percent escape"),
        ("GET", "/features/user_txn/%+1".into(), 400, "entity: invalid percent escape"),
        ("GET", "/features/user_txn/%FF".into(), 400, "entity: \"%FF\" does not decode to UTF-8"),
        ("GET", "/features/%ZZ/1".into(), 400, "view: invalid percent escape"),
        ("GET", "/features/user_txn/1?at=%".into(), 400, "at: invalid percent escape"),
        ("GET", "/features/user_txn/-1".into(), 400, "entity \"-1\" is not a key of view \"user_txn\""),
        ("POST", "/features/user_txn/3".into(), 405, "only GET"),
        ("DELETE", "/features/user_txn/3".into(), 405, "only GET"),
    ];
    for (method, target, code, error) in cases {
        let (status, body) = request(addr, method, &target).await;
        assert_eq!(status, code, "{method} {target}: {body}");
        let text = body["error"].as_str().unwrap_or_else(|| panic!("{method} {target}: {body}"));
        assert!(text.contains(error), "{method} {target}: {text:?} lacks {error:?}");
    }
    let refused = raw(addr, "PUT", "/features/user_txn/3").await.to_ascii_lowercase();
    assert!(refused.contains("\r\nallow: get\r\n"), "{refused}");
    let answered = raw(addr, "GET", "/features/user_txn/3").await.to_ascii_lowercase();
    assert!(answered.contains("\r\ncontent-type: application/json\r\n"), "{answered}");
    // The extremes of `at` answer, without overflowing.
    for at in [i64::MAX, i64::MAX - 1] {
        let (status, body) = get(addr, &format!("/features/user_txn/3?at={at}")).await;
        assert_eq!((status, &body["features"]["count_1m"]["status"]), (200, &json!("expired")), "{body}");
    }
    for at in [i64::MIN, i64::MIN + 1] {
        let (status, body) = get(addr, &format!("/features/named/u%203?at={at}")).await;
        assert_eq!(status, 422, "{body}");
    }
    // The server still answers, and an exact time parses.
    let (status, body) = get(addr, &format!("/features/user_txn/3?at={end}")).await;
    assert_eq!((status, body["at"].as_i64()), (200, Some(end)));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_listening_on_shutdown() {
    let (lookup, named) = run(txns()).await;
    let server = start(lookup, named).await;
    let addr = server.addr();
    assert_eq!(get(addr, "/features/user_txn/1?at=1200000").await.0, 200);
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err(), "{addr} still accepts connections");
}

#[tokio::test(flavor = "current_thread")]
async fn a_non_loopback_address_or_a_view_name_twice_is_refused() {
    let lookup = weir_features::FeatureOperator::new(view()).lookup();
    let open = ServerConfig::default().addr("0.0.0.0:0".parse().unwrap());
    let err = serve(Views::new().with(lookup.clone()), &open).await.unwrap_err();
    assert!(matches!(err, ServeError::InvalidConfig { field: "addr", .. }), "{err}");
    let local = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap());
    let err = serve(Views::new().with(lookup.clone()).with(lookup), &local).await.unwrap_err();
    assert!(matches!(err, ServeError::InvalidConfig { field: "views", .. }), "{err}");
}
