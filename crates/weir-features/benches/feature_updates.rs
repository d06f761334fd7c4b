//! `feature_updates`: feature updates per second per core, state bytes per entity and lookup
//! latency, for the card-transaction view of eight features (counts and sums over 5 min, 1 h and
//! 24 h, approximate distinct merchants over 24 h, the last amount).
//!
//! ```text
//! cargo bench -p weir-features --bench feature_updates              # 4 M events, 100 000 users
//! cargo bench -p weir-features --bench feature_updates -- --quick   # 200 000 events, seconds
//! cargo bench -p weir-features --features http --bench feature_updates   # with the `http` rows
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
//!   the pipeline's `FeatureLookup` (the entity's stripe read-locked per lookup), without and then
//!   with the view's metrics (the clock read twice and a histogram observation per lookup), and
//!   the difference of their best p99s (`metrics`).
//! - `http` (with the cargo feature `http`): after the last pipeline row, its view served on
//!   127.0.0.1, and 20 000 `GET /features/user_txn/<user>?at=<newest event time>` of random
//!   users, one at a time on one keep-alive connection: p50 and p99 latency, the request sent
//!   to the body parsed as JSON. The pipeline has ended: no ingestion runs meanwhile.
//!
//! Then the lookups at 1 000 000 entities while a pipeline ingests (20 000 in `--quick`): the
//! pipeline of the `pipeline` rows at parallelism 1, over 11 000 000 events (340 000 in
//! `--quick`) of the same 24 hours whose first 1 000 000 are one per user, in turn, and the
//! rest drawn as above (hot users). Its source's stage and the view's operator after the
//! `key_by` are tasks of their own on a tokio runtime of one worker thread, and the HTTP
//! server runs on another runtime of one worker: on 2 cores, ingestion keeps one core and the
//! lookups share the other, as a deployment that reserves a core for serving would. Lookups start once the first 1 000 000 events are handled
//! (every user has state) and count only while events remain to be handled: they are taken in
//! blocks of 8, and a block counts if, after it, the view had not handled every event. Each is
//! of a user drawn uniformly among the 1 000 000, as of the event time of the ingestion's front
//! (read before each block) plus that of 50 000 events, so that a lookup never falls before the
//! horizon as ingestion moves on (those that did anyway are counted as refused, not timed).
//!
//! The lookups are paced, one due every 100 µs (200 µs over HTTP), none made up for when late:
//! they fall at moments independent of the pipeline's, so that those waiting for a batch being
//! applied (under a stripe's write lock) count as often as they happen, rather than as a few
//! among many crowded between batches; and they leave the ingestion CPU time. Rows:
//!
//! - `ingest/lookup`: `FeatureLookup::lookup_at` on one thread, one at a time: p50, p99 and
//!   p99.9 (target: p99 <= 20 µs); the lookups taken while ingesting, over how long, and the
//!   events per second ingested meanwhile.
//! - `ingest/state`: after the first `ingest/lookup` run, the bytes of state per entity at
//!   1 000 000 entities.
//! - `ingest/http` (with the cargo feature `http`): the view served on 127.0.0.1 as in the
//!   `http` row, by a runtime of its own (one worker thread), and
//!   `GET /features/user_txn/<user>?at=<ms>` one at a time on one keep-alive connection from a
//!   thread of its own: the same figures (target: p99 <= 1 ms).
//! - `idle/lookup`, `idle/http`: the control of each, in the same run: once the pipeline
//!   ended, the same paced lookups for 3 s (0.2 s in `--quick`) on the same state, as of the
//!   newest event time: what ingestion adds.
//!
//! Each row runs three times (the machine may be shared); the best and the median are printed
//! (of the `ingest` and `idle` rows: of their p99s). Timings are printed, never asserted.

#![allow(clippy::unwrap_used)] // A bench fails loudly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir_features::{Agg, FeatureError, FeatureLookup, FeatureState, FeatureView, Window};
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

/// The event time of the `i`-th of `n` events spread evenly over 24 hours, before their
/// disorder (at most `n`'s).
fn front(i: u64, n: u64) -> i64 {
    1_800_000_000_000 + (i.min(n) * 86_400_000 / n) as i64
}

fn generate(n: u64, users: u64) -> Vec<Txn> {
    let mut rng = Rng(42);
    (0..n)
        .map(|i| {
            let u = rng.below(1 << 16);
            Txn {
                user: ((u * u * users) >> 32) as u32,
                merchant: rng.below(500) as u32,
                amount_cents: rng.range(100, 50_000) as i64,
                ts: front(i, n) - rng.below(2000) as i64,
            }
        })
        .collect()
}

/// Lookups per round of the `lookup` and `api` rows.
const LOOKUPS: u64 = 200_000;

/// [`ROUNDS`] rounds of [`LOOKUPS`] lookups with `lookup`, each timed, of users drawn as the
/// events are (hot users more often); prints each round's latencies under `row` and returns
/// their p99s.
fn timed_lookups<R>(row: &str, events: &[Txn], rng: &mut Rng, mut lookup: impl FnMut(u32) -> R) -> Vec<f64> {
    let n = events.len() as u64;
    (0..ROUNDS)
        .map(|_| {
            let mut latencies: Vec<u64> = (0..LOOKUPS)
                .map(|_| {
                    let user = events[rng.below(n) as usize].user;
                    let t0 = Instant::now();
                    let found = lookup(user);
                    let ns = t0.elapsed().as_nanos() as u64;
                    std::hint::black_box(found);
                    ns
                })
                .collect();
            print_latencies(row, &mut latencies)
        })
        .collect()
}

/// [`generate`]'s events, but the first `users` of them are one per user, in turn: once they
/// are handled, every user has state.
fn generate_warm(n: u64, users: u64) -> Vec<Txn> {
    let mut events = generate(n, users);
    for (user, t) in events.iter_mut().take(users as usize).enumerate() {
        t.user = user as u32;
    }
    events
}

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
    let p99s = timed_lookups("lookup", &events, &mut rng, |user| state.lookup_at(&user, at).unwrap());
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
            let p99s = timed_lookups(row, &events, &mut rng, |user| lookup.lookup_at(&user, at).unwrap());
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
    drop(events);

    let (users, n, idle_for) = if quick {
        (20_000, 340_000, Duration::from_millis(200))
    } else {
        (1_000_000, 11_000_000, Duration::from_secs(3))
    };
    // The pipeline on one worker thread, the HTTP server on another runtime's: on 2 cores,
    // ingestion keeps one and the lookups (a thread of their own) share the other.
    let one_worker =
        || tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    ingest_rows(&one_worker(), &one_worker(), users, n, idle_for);
}

/// The parallelism of the `ingest` rows' pipeline: the least, on a machine of 2 cores that
/// also serves the lookups.
const INGEST_PARALLELISM: usize = 1;

/// Lookups between two reads of the ingestion's progress.
const BLOCK: usize = 8;

/// How far (in events) ahead of the ingestion's front the `ingest` rows look up.
const AHEAD: u64 = 50_000;

/// The interval between the in-process lookups of `ingest/lookup`: at most 10 000 per second.
const LOOKUP_EVERY: Duration = Duration::from_micros(100);

/// The interval between the requests of `ingest/http`: at most 5 000 per second.
#[cfg(feature = "http")]
const HTTP_EVERY: Duration = Duration::from_micros(200);

/// The `ingest/*` and `idle/*` rows: lookups of `users` entities while the pipeline ingests
/// `n` events, then for `idle_for` after it ended.
fn ingest_rows(
    rt: &tokio::runtime::Runtime,
    serving: &tokio::runtime::Runtime,
    users: u64,
    n: u64,
    idle_for: Duration,
) {
    let events = generate_warm(n, users);
    println!(
        "ingest       {n} events: {users} users one event each, then {} of hot users; pipeline at parallelism {INGEST_PARALLELISM}",
        n - users
    );
    let (mut p99s, mut idle_p99s) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let ((mut measured, mut idle), lookup) = ingest(rt, events.clone(), |lookup, done| {
            let mut one = |user, at| {
                let t0 = Instant::now();
                let row = lookup.lookup_at(&user, at);
                let ns = t0.elapsed().as_nanos() as u64;
                match row {
                    Ok(row) => {
                        std::hint::black_box(row);
                        Some(ns)
                    }
                    Err(FeatureError::BeforeHorizon { .. }) => None,
                    Err(e) => panic!("{e}"),
                }
            };
            let seed = 7 + round as u64;
            let measured = while_ingesting(lookup, users, n, done, seed, LOOKUP_EVERY, &mut one);
            (measured, after_ingesting(users, n, done, seed, LOOKUP_EVERY, idle_for, &mut one))
        });
        p99s.push(measured.print("ingest/lookup"));
        idle_p99s.push(print_latencies("idle/lookup", &mut idle));
        if round == 0 {
            let entities = lookup.entities();
            println!(
                "ingest/state {entities} entities, {:.0} bytes of state per entity",
                lookup.state_bytes() as f64 / entities as f64
            );
        }
    }
    print_p99s("ingest/lookup", &p99s, 20);
    print_p99s("idle/lookup", &idle_p99s, 20);
    #[cfg(not(feature = "http"))]
    let _ = serving;

    #[cfg(feature = "http")]
    {
        let (mut p99s, mut idle_p99s) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let ((mut measured, mut idle), _) = ingest(rt, events.clone(), |lookup, done| {
                http::while_ingesting(serving, lookup, users, n, done, 11 + round as u64, idle_for)
            });
            p99s.push(measured.print("ingest/http"));
            idle_p99s.push(print_latencies("idle/http", &mut idle));
        }
        print_p99s("ingest/http", &p99s, 1000);
        print_p99s("idle/http", &idle_p99s, 1000);
    }
}

/// Runs the `ingest` pipeline over `events` on `rt`, with `measure` on a thread of its own
/// meanwhile (given the view's lookups and a flag set once the pipeline ended); returns what
/// `measure` returned, and the lookups.
fn ingest<M: Send>(
    rt: &tokio::runtime::Runtime,
    events: Vec<Txn>,
    measure: impl FnOnce(&FeatureLookup<u32, Txn>, &AtomicBool) -> M + Send,
) -> (M, FeatureLookup<u32, Txn>) {
    let (p, lookup) = rt.block_on(async move {
        let p = Pipeline::builder("features")
            .parallelism(INGEST_PARALLELISM)
            .handle_signals(false)
            .report_on_stderr(false)
            .build()
            .unwrap();
        let stream = p
            .source(MemorySource::new(events).batch_size(1024))
            .assign_timestamps(|t| t.ts, Watermarks::bounded_out_of_orderness(Duration::from_secs(2)));
        let (late, lookup) = view().attach(stream);
        late.sink(DiscardSink);
        (p, lookup)
    });
    let done = AtomicBool::new(false);
    let measured = std::thread::scope(|s| {
        let measuring = s.spawn(|| measure(&lookup, &done));
        let ran = rt.block_on(p.run());
        done.store(true, Ordering::Relaxed);
        ran.unwrap();
        measuring.join().unwrap()
    });
    (measured, lookup)
}

/// What lookups measured while a pipeline ingested.
struct Measured {
    /// The latencies (ns) of the lookups taken while the pipeline ingested.
    latencies: Vec<u64>,
    /// Lookups refused meanwhile: before the horizon (their `at` fell behind).
    refused: u64,
    /// The seconds during which they were taken.
    secs: f64,
    /// The events per second the view handled meanwhile.
    ingest_rate: f64,
    /// The entities with state when the lookups started.
    entities: usize,
}

impl Measured {
    /// Prints the latencies and the ingestion under `row`; returns the p99 in µs.
    fn print(&mut self, row: &str) -> f64 {
        let p99 = if self.latencies.is_empty() {
            println!("{row:<12} no lookup while ingesting");
            f64::NAN
        } else {
            print_latencies(row, &mut self.latencies)
        };
        println!(
            "{row:<12} {} lookups in {:.1} s while ingesting {:.0} events/s, {} entities ({} refused)",
            self.latencies.len(),
            self.secs,
            self.ingest_rate,
            self.entities,
            self.refused
        );
        p99
    }
}

/// Looks up users drawn uniformly among `users` with `one(user, at)` (the latency in ns, or
/// `None` if refused) while the view of `lookup` handles the `n` events of [`generate_warm`]:
/// from when it handled the first `users` (every user has state) until it handled all `n`, or
/// `done`. The lookups are taken in blocks of [`BLOCK`] as of the front read before each block
/// plus [`AHEAD`] events; a block counts if events remained to handle after it.
///
/// One lookup is due `every` (none is made up for when late): paced, the lookups fall at
/// moments independent of the pipeline's, so those that wait for a batch being applied count
/// as often as they happen, rather than a few slow ones among many crowded between batches;
/// and the ingestion keeps a core.
fn while_ingesting(
    lookup: &FeatureLookup<u32, Txn>,
    users: u64,
    n: u64,
    done: &AtomicBool,
    seed: u64,
    every: Duration,
    mut one: impl FnMut(u32, i64) -> Option<u64>,
) -> Measured {
    let mut handled = lookup.events_handled();
    while handled < users && !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(200));
        handled = lookup.events_handled();
    }
    let entities = lookup.entities();
    let started = (Instant::now(), handled);
    let mut until = started;
    let mut rng = Rng(seed);
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut refused = 0;
    let mut block = Vec::with_capacity(BLOCK);
    let mut pacer = Pacer::new(every);
    while handled < n && !done.load(Ordering::Relaxed) {
        let at = front(handled + AHEAD, n);
        block.clear();
        let mut block_refused = 0;
        for _ in 0..BLOCK {
            pacer.wait();
            match one(rng.below(users) as u32, at) {
                Some(ns) => block.push(ns),
                None => block_refused += 1,
            }
        }
        handled = lookup.events_handled();
        if handled < n {
            latencies.extend_from_slice(&block);
            refused += block_refused;
            until = (Instant::now(), handled);
        }
    }
    let secs = until.0.duration_since(started.0).as_secs_f64();
    let ingest_rate = if secs > 0.0 { (until.1 - started.1) as f64 / secs } else { f64::NAN };
    Measured { latencies, refused, secs, ingest_rate, entities }
}

/// The control of [`while_ingesting`]: once `done` (the pipeline ended), the same lookups
/// (with `one`, paced alike) for `idle_for`, as of the newest event time: their latencies (ns).
fn after_ingesting(
    users: u64,
    n: u64,
    done: &AtomicBool,
    seed: u64,
    every: Duration,
    idle_for: Duration,
    mut one: impl FnMut(u32, i64) -> Option<u64>,
) -> Vec<u64> {
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut rng = Rng(seed + 100);
    let mut pacer = Pacer::new(every);
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < idle_for {
        pacer.wait();
        latencies
            .push(one(rng.below(users) as u32, front(n, n)).expect("a lookup as of the newest event time"));
    }
    latencies
}

/// Paces calls: one due every `every`, none made up for when late.
struct Pacer {
    every: Duration,
    due: Instant,
}

impl Pacer {
    fn new(every: Duration) -> Self {
        Pacer { every, due: Instant::now() }
    }

    /// Sleeps until the next call is due.
    fn wait(&mut self) {
        let now = Instant::now();
        if self.due > now {
            std::thread::sleep(self.due - now);
        }
        self.due = self.due.max(now) + self.every;
    }
}

#[cfg(feature = "http")]
mod http {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use weir_features::FeatureLookup;
    use weir_features::http::{FeatureServer, ServerConfig, Views, serve};
    use weir_testkit::Rng;

    use super::{HTTP_EVERY, Measured, ROUNDS, Txn, print_latencies, print_p99s};

    /// Serves `lookup` on 127.0.0.1, on a port of the system's choosing.
    async fn start(lookup: FeatureLookup<u32, Txn>) -> FeatureServer {
        let config = ServerConfig::default().addr("127.0.0.1:0".parse().unwrap());
        serve(Views::new().with(lookup), &config).await.unwrap()
    }

    /// A keep-alive connection to `server`, each request sent at once (no Nagle delay).
    async fn connect(server: &FeatureServer) -> TcpStream {
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Reads one response of `stream` into `buf`: the body if the status is 200, else the
    /// head (lower case).
    async fn response<'a>(stream: &mut TcpStream, buf: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
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
                if !head.starts_with("http/1.1 200") {
                    return Err(head);
                }
                return Ok(&buf[end + 4..end + 4 + length]);
            }
        }
    }

    /// `GET /features/user_txn/<user>?at=<at>` on `stream`: the nanoseconds from sending the
    /// request to its body parsed as JSON, or the head of an answer other than 200.
    async fn get(stream: &mut TcpStream, buf: &mut Vec<u8>, user: u32, at: i64) -> Result<u64, String> {
        let request = format!("GET /features/user_txn/{user}?at={at} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let t0 = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        let body = response(stream, buf).await?;
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        let ns = t0.elapsed().as_nanos() as u64;
        std::hint::black_box(json);
        Ok(ns)
    }

    pub(super) async fn row(lookup: FeatureLookup<u32, Txn>, events: &[Txn], at: i64) {
        let server = start(lookup).await;
        let mut stream = connect(&server).await;
        let mut rng = Rng(11);
        let mut buf = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..ROUNDS {
            let mut latencies = Vec::with_capacity(20_000);
            for _ in 0..20_000 {
                let user = events[rng.below(events.len() as u64) as usize].user;
                latencies.push(get(&mut stream, &mut buf, user, at).await.unwrap());
            }
            p99s.push(print_latencies("http", &mut latencies));
        }
        print_p99s("http", &p99s, 1000);
        server.shutdown().await;
    }

    /// [`super::while_ingesting`] over HTTP: `lookup` served on `rt`, requested from this
    /// thread (on a runtime of its own) on one keep-alive connection. An answer 422 (a lookup
    /// before the horizon) is refused.
    pub(super) fn while_ingesting(
        rt: &tokio::runtime::Runtime,
        lookup: &FeatureLookup<u32, Txn>,
        users: u64,
        n: u64,
        done: &AtomicBool,
        seed: u64,
        idle_for: Duration,
    ) -> (Measured, Vec<u64>) {
        let client = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let server = rt.block_on(start(lookup.clone()));
        let mut stream = client.block_on(connect(&server));
        let mut buf = Vec::new();
        let mut one = |user, at| match client.block_on(get(&mut stream, &mut buf, user, at)) {
            Ok(ns) => Some(ns),
            Err(head) if head.starts_with("http/1.1 422") => None,
            Err(head) => panic!("{head}"),
        };
        let measured = super::while_ingesting(lookup, users, n, done, seed, HTTP_EVERY, &mut one);
        let idle = super::after_ingesting(users, n, done, seed, HTTP_EVERY, idle_for, &mut one);
        rt.block_on(server.shutdown());
        (measured, idle)
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
