//! Window semantics, differentially: random keyed events, some out of order within the
//! watermark bound and some late, through tumbling, sliding and session windows at parallelism 1
//! and 4, checked against a brute-force batch computation over the same records.
//!
//! # The oracle
//!
//! The pipeline is `MemorySource (batch_size b) → assign_timestamps(bounded_out_of_orderness B)
//! → key_by(key) → window(spec).allowed_lateness(L) → (Count, Sum, Min, Max, Avg)`, with the late
//! records sunk through `late_records`. The rules it is held to:
//!
//! - A source split's watermark is its largest timestamp − B − 1. `MemorySource` chunk `c` (records
//!   `c·b .. (c+1)·b`) is read by subtask `c mod p`; a task's watermark is the minimum over the
//!   splits it has seen; after the exchange the window's watermark is the minimum over the
//!   upstream subtasks that have not ended.
//! - A window `[start, end)` fires when the watermark reaches `end − 1`; with allowed lateness `L` a
//!   record is late iff every window it belongs to has `end − 1 + L <= watermark` when it arrives.
//!
//! When a record reaches the window at parallelism 4 depends on how the subtasks interleave, so
//! the inputs are built to make that irrelevant:
//!
//! - Every timestamp is `<= T`, and each of the first four chunks holds a record at `T`. So each
//!   source subtask's watermark is `W = T − B − 1` from its first batch until its final watermark
//!   (whether splits are tracked per chunk or per subtask), and the window's watermark is
//!   `Timestamp::MIN` until it heard from every live upstream, then `W`, then `Timestamp::MAX`.
//! - *Regular* records have timestamps whose every window has `end − 1 + L > W`: they are on time
//!   whenever they arrive. Their timestamps spread over `[R, T]`, so many arrive out of order
//!   (within `B + L` of the largest timestamp seen); windows with `end − 1 <= W` fire mid-stream and,
//!   with `L > 0`, fire again as later regular records update them.
//! - *Candidates* have timestamps whose every window has `end − 1 + L <= W` (sessions: `t + gap − 1 +
//!   L <= W`, and more than a gap below every regular record, so a candidate's session never
//!   touches a regular one). A candidate is late iff it arrives after the window's watermark
//!   became `W`, and then it is late for all its windows at once (never for some of them).
//! - Timestamps are drawn anywhere in their region, at its edge (the last candidate or first
//!   regular timestamp, where `end − 1 + L` is exactly `W` or `W + 1`), or around `W` (a window or
//!   session that fires exactly at `W`; half the cases move `T` so that a window ends at `W + 1`),
//!   so the comparisons in the lateness and firing rules are exercised at their boundaries.
//!   Session regions put one of their two edges at the limit, per case (the other is then a gap
//!   away, so sessions of the two kinds never touch).
//!
//! At parallelism 1 that is deterministic: chunk 0's watermark `W` precedes every later chunk, so
//! exactly the candidates outside chunk 0 are late. At parallelism 4 the first chunk of each
//! subtask (chunks 0–3) arrives before that subtask's first watermark, so its candidates are on
//! time; a candidate in a later chunk may go either way. The test reads which records were late
//! from the late side output, checks that set (exactly at parallelism 1, as a subset of the
//! possibly-late candidates at 4) and that `JobReport::late_records` counts it, and then compares
//! the windows against a brute-force computation over every record that was not late:
//!
//! - tumbling and sliding: each record in every window `[offset + k·slide, offset + k·slide +
//!   size)` that contains it;
//! - sessions: per key, the records sorted by time, merged while the next timestamp is `<=` the
//!   session's end (the intervals `[t, t + gap)` overlap or touch). Accepted candidates all arrive
//!   before the watermark reaches `W` and regular sessions are never purged before the end, so
//!   merging never meets a purged session and the result does not depend on arrival order.
//!
//! The *last* result emitted per (key, window) must equal the brute-force aggregate. With `L > 0`
//! a window may be emitted several times, but only because records were added: each emission of
//! a window counts more records than the one before. With `L = 0` every window is emitted exactly
//! once and nothing else is emitted; with `L > 0` a session that fired and then merged into a
//! larger one leaves its earlier result behind, which must lie inside a final session of the
//! same key.
//! Values are small integers, so `Avg`'s floating-point sum is exact in any order.
//!
//! Below the property tests are regressions for session windows found while writing them.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use weir_runtime::{
    Aggregator, Avg, CollectSink, Count, First, JobReport, Max, MemorySource, Min, Pipeline, SessionWindows,
    SlidingWindows, Sum, TumblingWindows, Watermarks, WindowResult, WindowSpec,
};

/// An event: `id` is its index in the input.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: usize,
    key: u8,
    ts: i64,
    v: i64,
}

/// (count, sum, min, max, avg) of `v`.
type Value = (u64, i64, i64, i64, f64);

fn aggregator() -> impl Aggregator<Ev, Output = Value> {
    (Count, Sum::of(|e: &Ev| e.v), Min::of(|e: &Ev| e.v), Max::of(|e: &Ev| e.v), Avg::of(|e: &Ev| e.v as f64))
}

/// The brute-force aggregate of some values.
fn value_of(values: &[i64]) -> Value {
    let n = values.len() as u64;
    let sum: i64 = values.iter().sum();
    let (min, max) = (values.iter().min().copied(), values.iter().max().copied());
    (n, sum, min.unwrap_or_default(), max.unwrap_or_default(), sum as f64 / n as f64)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tumbling { size: i64, offset: i64 },
    Sliding { size: i64, slide: i64, offset: i64 },
    Session { gap: i64 },
}

impl Kind {
    fn spec(self) -> WindowSpec {
        match self {
            Kind::Tumbling { size, offset } => TumblingWindows::of(ms(size)).with_offset(ms(offset)),
            Kind::Sliding { size, slide, offset } => {
                SlidingWindows::of(ms(size), ms(slide)).with_offset(ms(offset))
            }
            Kind::Session { gap } => SessionWindows::with_gap(ms(gap)),
        }
    }

    /// The windows `[offset + k·slide, offset + k·slide + size)` that contain `ts` (not sessions).
    fn windows(self, ts: i64) -> Vec<(i64, i64)> {
        let (size, slide, offset) = match self {
            Kind::Tumbling { size, offset } => (size, size, offset),
            Kind::Sliding { size, slide, offset } => (size, slide, offset),
            Kind::Session { .. } => unreachable!("sessions have no fixed windows"),
        };
        let last = (ts - offset).div_euclid(slide);
        let windows: Vec<(i64, i64)> = (0..size / slide)
            .map(|j| offset + (last - j) * slide)
            .map(|start| (start, start + size))
            .collect();
        assert!(windows.iter().all(|&(s, e)| s <= ts && ts < e), "oracle bug: {windows:?} for {ts}");
        windows
    }
}

/// Where regular records and candidates may lie; see the module docs.
#[derive(Debug, Clone, Copy)]
struct Regions {
    /// The watermark every source subtask reaches with its first batch.
    w: i64,
    /// The smallest regular timestamp.
    r_lo: i64,
    /// The largest candidate timestamp.
    c_max: i64,
}

impl Regions {
    /// The regions for a window kind. Session regions put one of their two boundaries exactly at
    /// the lateness limit: `candidate_edge` the candidates' (`c_max + gap − 1 + L = w`), otherwise
    /// the regular records' (`r_lo + gap − 1 + L = w + 1`).
    fn new(kind: Kind, t_hi: i64, bound: i64, lateness: i64, candidate_edge: bool) -> Regions {
        let w = t_hi - bound - 1;
        match kind {
            // With no bound and no lateness the edge layout leaves no room for regular records
            // (`r_lo` would be `t_hi + 1`): use the other layout.
            Kind::Session { gap } if candidate_edge && bound + lateness > 0 => {
                let c_max = w - lateness - gap + 1;
                Regions { w, r_lo: c_max + gap + 1, c_max }
            }
            Kind::Session { gap } => {
                let r_lo = w - lateness - gap + 2;
                Regions { w, r_lo, c_max: r_lo - gap - 1 }
            }
            _ => {
                let open = |ts: i64| kind.windows(ts).iter().all(|&(_, e)| e - 1 + lateness > w);
                let expired = |ts: i64| kind.windows(ts).iter().all(|&(_, e)| e - 1 + lateness <= w);
                assert!(open(t_hi));
                let mut r_lo = t_hi;
                while open(r_lo - 1) {
                    r_lo -= 1;
                }
                let mut c_max = r_lo - 1;
                while !expired(c_max) {
                    c_max -= 1;
                }
                Regions { w, r_lo, c_max }
            }
        }
    }

    /// Whether a record at `ts` is on time for any watermark up to `w`.
    fn regular(&self, kind: Kind, lateness: i64, ts: i64) -> bool {
        match kind {
            Kind::Session { gap } => ts + gap - 1 + lateness > self.w && ts >= self.r_lo,
            _ => kind.windows(ts).iter().all(|&(_, e)| e - 1 + lateness > self.w),
        }
    }

    /// Whether a record at `ts` is late for all its windows once the watermark is `w`.
    fn candidate(&self, kind: Kind, lateness: i64, ts: i64) -> bool {
        match kind {
            Kind::Session { gap } => ts + gap - 1 + lateness <= self.w && ts + gap < self.r_lo,
            _ => kind.windows(ts).iter().all(|&(_, e)| e - 1 + lateness <= self.w),
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    kind: Kind,
    bound: i64,
    lateness: i64,
    batch_size: usize,
    regions: Regions,
    records: Vec<Ev>,
    /// Ids of the candidates (see the module docs).
    candidates: BTreeSet<usize>,
}

impl Case {
    fn chunk(&self, id: usize) -> usize {
        id / self.batch_size
    }
}

/// A raw event: whether it is a candidate, key, timestamp seed, value, and how to place the
/// timestamp (0–1 anywhere in its region, 2 at the region's edge, 3 around the watermark `w`).
type Raw = (bool, u8, u32, i64, u8);

fn build(
    kind: Kind,
    (bound, lateness, candidate_edge): (i64, i64, bool),
    (t_hi, align): (i64, bool),
    batch_size: usize,
    raw: Vec<Raw>,
    markers: Vec<usize>,
) -> Case {
    // Aligned, a window ends right after `W = T − B − 1`: it fires exactly at `W`.
    let t_hi = match kind {
        Kind::Tumbling { size: slide, offset } | Kind::Sliding { slide, offset, .. } if align => {
            t_hi - (t_hi - bound - offset).rem_euclid(slide)
        }
        _ => t_hi,
    };
    let regions = Regions::new(kind, t_hi, bound, lateness, candidate_edge);
    let w = regions.w;
    let (Kind::Tumbling { size: span, .. } | Kind::Sliding { size: span, .. } | Kind::Session { gap: span }) =
        kind;
    let candidate_span = 3 * span + 1;
    let mut candidates = BTreeSet::new();
    let records = raw
        .into_iter()
        .enumerate()
        .map(|(id, (late, key, seed, v, pick))| {
            let chunk = id / batch_size;
            let marker = chunk < 4 && id % batch_size == markers[chunk] % batch_size;
            let seed = i64::from(seed);
            let ts = if marker {
                t_hi
            } else if late {
                candidates.insert(id);
                regions.c_max - if pick >= 2 { seed % 2 } else { seed % candidate_span }
            } else {
                match pick {
                    2 => regions.r_lo + seed % 3,
                    // Sessions: a session ending right at the watermark; windows: around it.
                    3 if matches!(kind, Kind::Session { .. }) => w - span + 1 + seed % 2,
                    3 => w - 1 + seed % 3,
                    _ => regions.r_lo + seed % (t_hi - regions.r_lo + 1),
                }
                .clamp(regions.r_lo, t_hi)
            };
            Ev { id, key, ts, v }
        })
        .collect::<Vec<_>>();
    for e in &records {
        let (regular, candidate) =
            (regions.regular(kind, lateness, e.ts), regions.candidate(kind, lateness, e.ts));
        assert!(e.ts <= t_hi, "generator bug: {e:?}");
        assert!(
            if candidates.contains(&e.id) { candidate } else { regular },
            "generator bug: {e:?} in {regions:?}"
        );
    }
    Case { kind, bound, lateness, batch_size, regions, records, candidates }
}

fn raw_strategy() -> impl Strategy<Value = Raw> {
    (prop::bool::weighted(0.15), 0u8..4, any::<u32>(), -50i64..=50, 0u8..4)
}

/// Batch size, then between 4 and 20 chunks' worth of raw events (at least one in the fifth
/// chunk), then the position of the record at `T` in each of the first four chunks.
fn layout_strategy() -> impl Strategy<Value = (usize, Vec<Raw>, Vec<usize>)> {
    (1usize..=12).prop_flat_map(|b| {
        (
            Just(b),
            prop::collection::vec(raw_strategy(), (4 * b + 1)..=(20 * b)),
            prop::collection::vec(0..b, 4),
        )
    })
}

fn case_strategy(kind: impl Strategy<Value = Kind>) -> impl Strategy<Value = Case> {
    let lateness = prop_oneof![Just(0i64), 1i64..=1_500];
    let times = (0i64..=800, lateness, any::<bool>());
    (kind, times, (-30_000i64..=300_000, any::<bool>()), layout_strategy()).prop_map(
        |(kind, times, t_hi, (batch_size, raw, markers))| build(kind, times, t_hi, batch_size, raw, markers),
    )
}

fn tumbling() -> impl Strategy<Value = Kind> {
    (1i64..=600, 0i64..600).prop_map(|(size, offset)| Kind::Tumbling { size, offset: offset % size })
}

fn sliding() -> impl Strategy<Value = Kind> {
    (1i64..=150, 1i64..=5, 0i64..600).prop_map(|(slide, n, offset)| Kind::Sliding {
        size: slide * n,
        slide,
        offset: offset % slide,
    })
}

fn session() -> impl Strategy<Value = Kind> {
    (1i64..=400).prop_map(|gap| Kind::Session { gap })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    })
}

/// Runs the case's pipeline; the window results in emission order, the late records, the report.
fn run(case: &Case, parallelism: usize) -> (Vec<WindowResult<u8, Value>>, Vec<Ev>, JobReport) {
    runtime().block_on(async {
        let p =
            Pipeline::builder("differential").parallelism(parallelism).handle_signals(false).build().unwrap();
        let (out, late) = (CollectSink::new(), CollectSink::new());
        p.source(MemorySource::new(case.records.clone()).batch_size(case.batch_size))
            .assign_timestamps(|e: &Ev| e.ts, Watermarks::bounded_out_of_orderness(ms(case.bound)))
            .key_by(|e: &Ev| e.key)
            .window(case.kind.spec())
            .allowed_lateness(ms(case.lateness))
            .late_records(|records| records.sink(late.clone()))
            .aggregate(aggregator())
            .sink(out.clone());
        let report = tokio::time::timeout(Duration::from_secs(30), p.run()).await.expect("the job completes");
        (out.take(), late.take(), report.unwrap())
    })
}

/// The brute-force windows over `records`.
fn brute_force(kind: Kind, records: &[&Ev]) -> BTreeMap<(u8, i64, i64), Value> {
    let mut values: BTreeMap<(u8, i64, i64), Vec<i64>> = BTreeMap::new();
    match kind {
        Kind::Session { gap } => {
            let mut by_key: BTreeMap<u8, Vec<(i64, i64)>> = BTreeMap::new();
            for e in records {
                by_key.entry(e.key).or_default().push((e.ts, e.v));
            }
            for (key, mut events) in by_key {
                events.sort_unstable();
                let mut session: Option<(i64, i64, Vec<i64>)> = None;
                for (ts, v) in events {
                    match &mut session {
                        Some((_, end, vs)) if ts <= *end => {
                            *end = (*end).max(ts + gap);
                            vs.push(v);
                        }
                        _ => {
                            if let Some((s, e, vs)) = session.replace((ts, ts + gap, vec![v])) {
                                values.insert((key, s, e), vs);
                            }
                        }
                    }
                }
                if let Some((s, e, vs)) = session {
                    values.insert((key, s, e), vs);
                }
            }
        }
        _ => {
            for e in records {
                for (start, end) in kind.windows(e.ts) {
                    values.entry((e.key, start, end)).or_default().push(e.v);
                }
            }
        }
    }
    values.into_iter().map(|(k, vs)| (k, value_of(&vs))).collect()
}

fn check(case: &Case, parallelism: usize) -> Result<(), TestCaseError> {
    let (results, late, report) = run(case, parallelism);
    let late: BTreeSet<usize> = late.iter().map(|e| e.id).collect();
    prop_assert_eq!(
        report.late_records,
        late.len() as u64,
        "p{}: late_records counts the side output",
        parallelism
    );

    // Which records were late.
    if parallelism == 1 {
        let want: BTreeSet<usize> =
            case.candidates.iter().copied().filter(|&id| case.chunk(id) >= 1).collect();
        prop_assert_eq!(
            &late,
            &want,
            "p1: exactly the candidates after chunk 0 are late ({:?})",
            case.regions
        );
    } else {
        let possible: BTreeSet<usize> =
            case.candidates.iter().copied().filter(|&id| case.chunk(id) >= parallelism).collect();
        prop_assert!(
            late.is_subset(&possible),
            "p{parallelism}: late {:?} but only {:?} may be",
            late.difference(&possible).collect::<Vec<_>>(),
            possible
        );
    }

    // The windows.
    let accepted: Vec<&Ev> = case.records.iter().filter(|e| !late.contains(&e.id)).collect();
    let want = brute_force(case.kind, &accepted);
    let mut last: BTreeMap<(u8, i64, i64), Value> = BTreeMap::new();
    let mut emitted: BTreeMap<(u8, i64, i64), usize> = BTreeMap::new();
    for r in results {
        let window = (r.key, r.window_start, r.window_end);
        *emitted.entry(window).or_default() += 1;
        // A window fires again only because records were added to it.
        if let Some(previous) = last.insert(window, r.value) {
            prop_assert!(
                previous.0 < r.value.0,
                "p{parallelism}: {window:?} fired again without new records: {previous:?}, then {:?}",
                r.value
            );
        }
    }
    let superseded = |&(key, start, end): &(u8, i64, i64)| {
        matches!(case.kind, Kind::Session { .. })
            && case.lateness > 0
            && want.keys().any(|&(k, s, e)| k == key && s <= start && end <= e && (s, e) != (start, end))
    };
    let extra: Vec<_> = last.keys().filter(|w| !want.contains_key(w) && !superseded(w)).collect();
    prop_assert!(extra.is_empty(), "p{parallelism}: windows the brute force does not have: {extra:?}");
    for (window, value) in &want {
        prop_assert_eq!(last.get(window), Some(value), "p{}: the last result of {:?}", parallelism, window);
    }
    if case.lateness == 0 {
        let repeated: Vec<_> = emitted.iter().filter(|(_, n)| **n != 1).collect();
        prop_assert!(
            repeated.is_empty(),
            "p{parallelism}: without lateness each window fires once: {repeated:?}"
        );
        prop_assert_eq!(last.len(), want.len());
    }
    Ok(())
}

fn check_both(case: &Case) -> Result<(), TestCaseError> {
    check(case, 1)?;
    check(case, 4)
}

fn config() -> Config {
    Config { cases: 128, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tumbling_windows_match_brute_force(case in case_strategy(tumbling())) {
        check_both(&case)?;
    }

    #[test]
    fn sliding_windows_match_brute_force(case in case_strategy(sliding())) {
        check_both(&case)?;
    }

    #[test]
    fn session_windows_match_brute_force(case in case_strategy(session())) {
        check_both(&case)?;
    }
}

/// Runs `records` (one batch of key `"k"`, monotonic watermarks) through session windows of
/// `gap` with allowed lateness `lateness`, aggregated by `agg`; every result in emission order.
fn sessions<A>(records: Vec<(i64, i64)>, gap: i64, lateness: i64, agg: A) -> Vec<(i64, i64, A::Output)>
where
    A: Aggregator<(i64, i64)>,
{
    runtime().block_on(async {
        let p = Pipeline::builder("sessions").parallelism(1).handle_signals(false).build().unwrap();
        let out = CollectSink::new();
        p.source(MemorySource::new(records))
            .assign_timestamps(|e: &(i64, i64)| e.0, Watermarks::monotonic())
            .key_by(|_: &(i64, i64)| 'k')
            .window(SessionWindows::with_gap(ms(gap)))
            .allowed_lateness(ms(lateness))
            .aggregate(agg)
            .sink(out.clone());
        tokio::time::timeout(Duration::from_secs(10), p.run()).await.unwrap().unwrap();
        out.take().into_iter().map(|r| (r.window_start, r.window_end, r.value)).collect()
    })
}

/// A session fires once when the watermark passes its end, however many records it holds. (With
/// allowed lateness, records that did not move the session's end made it fire once each.)
#[test]
fn a_session_fires_once_however_many_records_it_holds() {
    // The records at 50 and 100 join [100, 1100) without moving its end. The watermark after
    // the batch is 2999: [50, 1100) fires, within its lateness of 5 s; [3000, 4000) fires at the end.
    let got = sessions(vec![(100, 1), (50, 2), (100, 3), (3_000, 4)], 1_000, 5_000, Count);
    assert_eq!(got, vec![(50, 1_100, 3), (3_000, 4_000, 1)]);
}

/// Merging sessions hands the aggregator its states in time order, earlier first, as
/// `Aggregator::merge` promises: a record that bridges two sessions must not make the later
/// session's `First` the merged session's.
#[test]
fn merging_sessions_keeps_the_states_in_time_order() {
    // [0, 1000) and [1500, 2500), then 800 bridges them into [0, 2500).
    let got = sessions(vec![(0, 10), (1_500, 20), (800, 30)], 1_000, 0, First::of(|e: &(i64, i64)| e.1));
    assert_eq!(got, vec![(0, 2_500, Some(10))]);
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap())
}
