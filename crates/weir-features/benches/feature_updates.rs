//! `feature_updates`: feature updates per second per core, state bytes per entity and lookup
//! latency, for the card-transaction view of eight features (counts and sums over 5 min, 1 h and
//! 24 h, approximate distinct merchants over 24 h, the last amount).
//!
//! ```text
//! cargo bench -p weir-features --bench feature_updates              # 4 M events, 100 000 users
//! cargo bench -p weir-features --bench feature_updates -- --quick   # 200 000 events, seconds
//! cargo bench -p weir-features --features http --bench feature_updates   # with the `http` row
//! ```
//!
//! The input is generated before anything is timed: transactions over 24 hours of event time,
//! users drawn so that a few are hot (a user's index is the square of a uniform number, scaled:
//! user `k` is drawn with a probability falling as `1 / sqrt(k)`),
//! out of order by up to 2 s. Rows:
//!
//! - `state`: one thread applying the events to a `FeatureState` in batches of 1024, advancing
//!   the watermark (newest event time minus 2 s) after each batch: the updates per second of one
//!   core, without a pipeline.
//! - `pipeline/p<n>`: a pipeline (`MemorySource` → `assign_timestamps` → the view's operator
//!   after a `key_by`) at parallelism `n`: events per second, and per second per core.
//! - `lookup`: after the `state` row, 200 000 lookups of random users (hot users more often,
//!   as drawn) as of the newest event time, one at a time: p50 and p99 latency.
//! - `api`, `api/metered`: after the last pipeline row, 200 000 lookups as in `lookup`, through
//!   the pipeline's `FeatureLookup` (the subtask's read lock taken per lookup), without and then
//!   with the view's metrics (the clock read twice and a histogram observation per lookup), and
//!   the difference of their best p99s (`metrics`).
//! - `http` (with the cargo feature `http`): after the last pipeline row, its view served on
//!   127.0.0.1, and 20 000 `GET /features/user_txn/<user>?at=<newest event time>` of random
//!   users, one at a time on one keep-alive connection: p50 and p99 latency, the request sent
//!   to the body parsed as JSON. The pipeline has ended: no ingestion runs meanwhile.
//!
//! Each row runs three times (the machine may be shared); the best and the median are printed.

#![allow(clippy::unwrap_used)] // A bench fails loudly.

use std::time::{Duration, Instant};

use weir_features::{Agg, FeatureState, FeatureView, Window};
use weir_runtime::{DiscardSink, MemorySource, Pipeline, Watermarks};
use weir_testkit::Rng;

#[derive(Debug, Clone)]
struct Txn {
    user: u32,
    merchant: u32,
    amount_cents: i64,
    ts: i64,
}

fn view() -> FeatureView<u32, Txn> {
    let min = |m: u64| Window::Last(Duration::from_secs(60 * m));
    let amount = || "amount".to_owned();
    FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.user)
        .event_time(|t| t.ts)
        .allowed_lateness(Duration::from_secs(5))
        .number("amount", |t| t.amount_cents as f64)
        .category("merchant", |t| t.merchant)
        .feature("txn_count_5m", Agg::Count, min(5))
        .feature("txn_count_1h", Agg::Count, min(60))
        .feature("txn_count_24h", Agg::Count, min(1440))
        .feature("amount_sum_5m", Agg::Sum(amount()), min(5))
        .feature("amount_sum_1h", Agg::Sum(amount()), min(60))
        .feature("amount_sum_24h", Agg::Sum(amount()), min(1440))
        .feature("distinct_merchants_24h", Agg::ApproxDistinct("merchant".into()), min(1440))
        .feature("last_amount", Agg::Last(amount()), Window::Lifetime)
        .build()
        .unwrap()
}

fn generate(n: u64, users: u64) -> Vec<Txn> {
    let mut rng = Rng(42);
    let day = 86_400_000u64;
    (0..n)
        .map(|i| {
            let u = rng.below(1 << 16);
            Txn {
                user: ((u * u * users) >> 32) as u32,
                merchant: rng.below(500) as u32,
                amount_cents: rng.range(100, 50_000) as i64,
                ts: 1_800_000_000_000 + (i * day / n) as i64 - rng.below(2000) as i64,
            }
        })
        .collect()
}

/// Lookups per round of the `lookup` and `api` rows.
const LOOKUPS: u64 = 200_000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, users) = if quick { (200_000, 10_000) } else { (4_000_000, 100_000) };
    let events = generate(n, users);
    println!("feature_updates: {n} events of up to {users} users over 24 h, 8 features");

    // Three rounds of each row (the machine may be shared): the best and the median.
    let mut rates = Vec::new();
    let mut state = FeatureState::new(view());
    for _ in 0..ROUNDS {
        state = FeatureState::new(view());
        let started = Instant::now();
        for batch in events.chunks(1024) {
            state.apply_batch(batch);
            state.advance(batch.iter().map(|t| t.ts).max().unwrap() - 2000);
        }
        rates.push(n as f64 / started.elapsed().as_secs_f64());
    }
    let entities = state.entities();
    let (best, median) = best_median(&mut rates);
    println!(
        "state        {best:>12.0} updates/s on 1 core (median {median:.0})   {} entities, {:.0} bytes of state per entity, {} late",
        entities,
        state.state_bytes() as f64 / entities as f64,
        state.late_events()
    );

    let at = events.iter().map(|t| t.ts).max().unwrap();
    let mut rng = Rng(7);
    let mut p99s = Vec::new();
    for _ in 0..ROUNDS {
        let mut latencies: Vec<u64> = (0..LOOKUPS)
            .map(|_| {
                let user = events[rng.below(n) as usize].user;
                let t0 = Instant::now();
                let row = state.lookup_at(&user, at).unwrap();
                let ns = t0.elapsed().as_nanos() as u64;
                std::hint::black_box(row);
                ns
            })
            .collect();
        p99s.push(print_latencies("lookup", &mut latencies));
    }
    print_p99s("lookup", &p99s, 20);
    drop(state);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut served = None;
    for parallelism in [1, 2] {
        let mut rates = Vec::new();
        for _ in 0..ROUNDS {
            let events = events.clone();
            let secs = rt.block_on(async move {
                let p = Pipeline::builder("features")
                    .parallelism(parallelism)
                    .handle_signals(false)
                    .report_on_stderr(false)
                    .build()
                    .unwrap();
                let stream = p.source(MemorySource::new(events).batch_size(1024)).assign_timestamps(
                    |t| t.ts,
                    Watermarks::bounded_out_of_orderness(Duration::from_secs(2)),
                );
                let (late, lookup) = view().attach(stream);
                late.sink(DiscardSink);
                let started = Instant::now();
                p.run().await.unwrap();
                (started.elapsed().as_secs_f64(), lookup)
            });
            rates.push(n as f64 / secs.0);
            served = Some(secs.1);
        }
        let (best, median) = best_median(&mut rates);
        println!(
            "pipeline/p{parallelism}  {best:>12.0} events/s (median {median:.0})   {:.0} per core (target 1 000 000)",
            best / parallelism as f64
        );
    }
    if let Some(lookup) = &served {
        let metrics = weir_metrics::Metrics::new();
        let mut best_p99 = [0.0; 2];
        for (i, (row, metered)) in [("api", false), ("api/metered", true)].into_iter().enumerate() {
            if metered {
                lookup.register_metrics(&metrics, "features");
            }
            let mut p99s = Vec::new();
            for _ in 0..ROUNDS {
                let mut latencies: Vec<u64> = (0..LOOKUPS)
                    .map(|_| {
                        let user = events[rng.below(n) as usize].user;
                        let t0 = Instant::now();
                        let row = lookup.lookup_at(&user, at).unwrap();
                        let ns = t0.elapsed().as_nanos() as u64;
                        std::hint::black_box(row);
                        ns
                    })
                    .collect();
                p99s.push(print_latencies(row, &mut latencies));
            }
            print_p99s(row, &p99s, 20);
            best_p99[i] = p99s.iter().copied().fold(f64::INFINITY, f64::min);
        }
        println!(
            "metrics      p99 best {:.1} µs metered, {:.1} µs not: {:+.1} µs per lookup",
            best_p99[1],
            best_p99[0],
            best_p99[1] - best_p99[0]
        );
    }
    #[cfg(feature = "http")]
    if let Some(lookup) = served {
        rt.block_on(http::row(lookup, &events, at));
    }
    #[cfg(not(feature = "http"))]
    drop(served);
}

#[cfg(feature = "http")]
mod http {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weir_features::FeatureLookup;
    use weir_features::http::{ServerConfig, Views, serve};
    use weir_testkit::Rng;

    use super::{ROUNDS, Txn, print_latencies, print_p99s};

    /// Reads one response of `stream` into `buf`: the body.
    async fn response<'a>(stream: &mut tokio::net::TcpStream, buf: &'a mut Vec<u8>) -> &'a [u8] {
        buf.clear();
        loop {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..read]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = std::str::from_utf8(&buf[..end]).unwrap().to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            if buf.len() >= end + 4 + length {
                assert!(head.starts_with("http/1.1 200"), "{head}");
                return &buf[end + 4..end + 4 + length];
            }
        }
    }

    pub(super) async fn row(lookup: FeatureLookup<u32, Txn>, events: &[Txn], at: i64) {
        let config = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap());
        let server = serve(Views::new().with(lookup), &config).await.unwrap();
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut rng = Rng(11);
        let mut buf = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..ROUNDS {
            let mut latencies = Vec::with_capacity(20_000);
            for _ in 0..20_000 {
                let user = events[rng.below(events.len() as u64) as usize].user;
                let request =
                    format!("GET /features/user_txn/{user}?at={at} HTTP/1.1\r\nHost: bench\r\n\r\n");
                let t0 = Instant::now();
                stream.write_all(request.as_bytes()).await.unwrap();
                let body = response(&mut stream, &mut buf).await;
                let json: serde_json::Value = serde_json::from_slice(body).unwrap();
                latencies.push(t0.elapsed().as_nanos() as u64);
                std::hint::black_box(json);
            }
            p99s.push(print_latencies("http", &mut latencies));
        }
        print_p99s("http", &p99s, 1000);
        server.shutdown().await;
    }
}

const ROUNDS: usize = 3;

/// Prints the p50, p99 and p99.9 of `latencies` (ns) under `row`; returns the p99 in µs.
fn print_latencies(row: &str, latencies: &mut [u64]) -> f64 {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!("{row:<12} p50 {:.1} µs   p99 {:.1} µs   p99.9 {:.1} µs", pct(0.5), pct(0.99), pct(0.999));
    pct(0.99)
}

/// Prints the best (lowest) and the median of the rounds' p99s (µs) under `row`.
fn print_p99s(row: &str, p99s: &[f64], target_us: u32) {
    let (best, median) = best_median(&mut p99s.iter().map(|p| -p).collect::<Vec<_>>());
    println!("{row:<12} p99 best {:.1} µs, median {:.1} µs (target {target_us} µs)", -best, -median);
}

/// The largest and the median of `xs`.
fn best_median(xs: &mut [f64]) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() - 1], xs[xs.len() / 2])
}
