//! Feature views in a pipeline: lookups find every entity on the subtask that owns it, see
//! what the operator applied, and late events leave on the operator's output, counted.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_features::{Agg, FeatureView, Status, Value, Window};
use weir_runtime::{CollectSink, MemorySource, Pipeline, Watermarks};

/// (user, event time ms, amount)
type Txn = (u32, i64, i64);

fn view() -> FeatureView<u32, Txn> {
    FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .number("amount", |t| t.2 as f64)
        .feature("count_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
        .feature("sum_10m", Agg::Sum("amount".into()), Window::Last(Duration::from_secs(600)))
        .build()
        .unwrap()
}

/// A view of one feature: each user's count of events, ever.
fn lifetime_count() -> FeatureView<u32, Txn> {
    FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .feature("count_life", Agg::Count, Window::Lifetime)
        .build()
        .unwrap()
}

/// A pipeline that prints no report.
fn quiet(name: &str, parallelism: usize) -> Pipeline {
    Pipeline::builder(name)
        .parallelism(parallelism)
        .handle_signals(false)
        .report_on_stderr(false)
        .build()
        .unwrap()
}

/// 20 000 events of 50 users over 20 minutes, in time order.
fn txns() -> Vec<Txn> {
    (0..20_000i64).map(|i| ((i * 7 % 50) as u32, i * 60, i % 97)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_find_every_entity_on_the_subtask_that_owns_it_at_every_parallelism() {
    let events = txns();
    let end = events.last().unwrap().1;
    for parallelism in [1, 2, 3] {
        let p = Pipeline::builder("features").parallelism(parallelism).handle_signals(false).build().unwrap();
        let stream = p
            .source(MemorySource::new(events.clone()).batch_size(128))
            .assign_timestamps(|t| t.1, Watermarks::monotonic());
        let (late, lookup) = view().attach(stream);
        let late_out = CollectSink::new();
        late.sink(late_out.clone());
        p.run().await.unwrap();
        assert_eq!(lookup.entities(), 50, "parallelism {parallelism}");
        assert!(late_out.take().is_empty());
        for user in 0..50u32 {
            let of_user = || events.iter().filter(|e| e.0 == user);
            let count = of_user().filter(|e| e.1 > end - 60_000).count() as u64;
            let sum: i64 = of_user().filter(|e| e.1 > end - 600_000).map(|e| e.2).sum();
            let row = lookup.lookup_at(&user, end).unwrap();
            assert_eq!(row.values[0].value, Value::Count(count), "user {user} at parallelism {parallelism}");
            assert_eq!(
                row.values[1].value,
                Value::Number(sum as f64),
                "user {user} at parallelism {parallelism}"
            );
            assert_eq!(row.newest_event, of_user().map(|e| e.1).max());
        }
        let unknown = lookup.lookup_at(&999, end).unwrap();
        assert!(unknown.values.iter().all(|v| v.status == Status::Empty));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_made_after_the_operator_handled_an_event_sees_it() {
    // Batches of one: the operator handles (7, 10 s) and its watermark, then the late (7, 0),
    // which it emits; the lookup made when the late event comes out must see the first one.
    let p = Pipeline::builder("ryw").parallelism(1).handle_signals(false).build().unwrap();
    let events = vec![(7, 10_000, 5), (7, 0, 1), (8, 20_000, 3), (8, 1, 1)];
    let stream =
        p.source(MemorySource::new(events).batch_size(1)).assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, lookup) = view().attach(stream);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_in, reader) = (seen.clone(), lookup.clone());
    late.inspect(move |t: &Txn| {
        let newest = if t.0 == 7 { 10_000 } else { 20_000 };
        let row = reader.lookup_at(&t.0, newest).unwrap();
        seen_in.lock().unwrap().push((t.0, row.newest_event, row.values[0].value.clone()));
    })
    .sink(CollectSink::new());
    let report = p.run().await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|s| s.0);
    assert_eq!(seen, [(7, Some(10_000), Value::Count(1)), (8, Some(20_000), Value::Count(1))]);
    assert_eq!(report.late_records, 2);
    assert_eq!(lookup.late_events(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_leave_on_the_operators_output_and_count_as_the_jobs_late_records() {
    // One subtask: which events are behind the watermark depends only on the input.
    let p = Pipeline::builder("late").parallelism(1).handle_signals(false).build().unwrap();
    let mut events = txns();
    // Every 100th event is moved 5 minutes back: behind the watermark, and late.
    let mut want_late = Vec::new();
    for (i, e) in events.iter_mut().enumerate() {
        if i % 100 == 99 {
            e.1 -= 300_000;
            want_late.push(*e);
        }
    }
    let stream = p
        .source(MemorySource::new(events.clone()).batch_size(64))
        .assign_timestamps(|t| t.1, Watermarks::bounded_out_of_orderness(Duration::from_secs(1)));
    let (late, lookup) = view().attach(stream);
    let out = CollectSink::new();
    late.sink(out.clone());
    let report = p.run().await.unwrap();
    let mut got = out.take();
    got.sort();
    want_late.sort();
    assert_eq!(got, want_late);
    assert_eq!(report.late_records, got.len() as u64);
    assert_eq!(lookup.late_events(), got.len() as u64);
    let end = events.iter().map(|e| e.1).max().unwrap();
    let user = 3u32;
    let sum: i64 =
        events.iter().filter(|e| e.0 == user && e.1 > end - 600_000 && !got.contains(e)).map(|e| e.2).sum();
    assert_eq!(lookup.lookup_at(&user, end).unwrap().values[1].value, Value::Number(sum as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_a_view_whose_state_layout_changed_is_refused_naming_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let run = |view: FeatureView<u32, Txn>| {
        let dir = dir.path().to_owned();
        async move {
            let p = Pipeline::builder("features")
                .parallelism(2)
                .handle_signals(false)
                .report_on_stderr(false)
                .checkpointing(weir_runtime::Checkpointing::to_dir(dir))
                .build()?;
            let stream = p
                .source(MemorySource::new(txns()).batch_size(128))
                .assign_timestamps(|t| t.1, Watermarks::monotonic());
            let (late, _) = view.attach(stream);
            late.sink(CollectSink::new());
            p.run().await.map(drop)
        }
    };
    run(view()).await.unwrap();
    run(view()).await.unwrap();
    // The same name, another input: the saved rows have another shape.
    let changed = FeatureView::builder("user_txn")
        .entity(|t: &Txn| t.0)
        .event_time(|t| t.1)
        .number("amount", |t| t.2 as f64)
        .number("cents", |t| (t.2 * 100) as f64)
        .feature("count_1m", Agg::Count, Window::Last(Duration::from_secs(60)))
        .feature("sum_10m", Agg::Sum("cents".into()), Window::Last(Duration::from_secs(600)))
        .build()
        .unwrap();
    let refused = run(changed).await.unwrap_err().to_string();
    assert!(refused.contains("feature view user_txn") && refused.contains("another definition"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_while_the_pipeline_runs_never_see_a_count_go_back_and_batched_lookups_match_single_ones() {
    let view = lifetime_count();
    let p = quiet("concurrent", 2);
    let events: Vec<Txn> = (0..200_000i64).map(|i| ((i % 5) as u32, i, 1)).collect();
    let stream = p
        .source(MemorySource::new(events).batch_size(256))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, lookup) = view.attach(stream);
    late.sink(CollectSink::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (lookup, done) = (lookup.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last, mut reads) = (vec![0u64; 5], 0u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = lookup.lookup_many(&[0, 1, 2, 3, 4], i64::MAX).unwrap();
                for (user, row) in rows.iter().enumerate() {
                    let Value::Count(n) = row.values[0].value else { panic!("{row:?}") };
                    assert!(n >= last[user], "user {user}: {n} after {}", last[user]);
                    last[user] = n;
                }
                reads += 1;
            }
            reads
        })
    };
    p.run().await.unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let users = [4, 0, 3, 3, 99];
    let many = lookup.lookup_many(&users, i64::MAX).unwrap();
    let single: Vec<_> = users.iter().map(|u| lookup.lookup_at(u, i64::MAX).unwrap()).collect();
    assert_eq!(many, single);
    assert_eq!(many[0].values[0].value, Value::Count(40_000));
    assert_eq!(many[4].values[0].status, Status::Empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_operator_handled_n_events_a_lookup_of_any_entity_sees_each_of_the_first_n() {
    // 1 000 users, so that a batch spreads over the stripes of the subtask's state: a lookup
    // must see the first `n` events however far the operator got into the next batch.
    const USERS: i64 = 1_000;
    let view = lifetime_count();
    let p = quiet("handled", 1);
    let events: Vec<Txn> = (0..300_000i64).map(|i| ((i % USERS) as u32, i, 1)).collect();
    let total = events.len() as u64;
    let stream = p
        .source(MemorySource::new(events).batch_size(512))
        .assign_timestamps(|t| t.1, Watermarks::monotonic());
    let (late, lookup) = view.attach(stream);
    late.sink(CollectSink::new());
    let reader = {
        let lookup = lookup.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            loop {
                let handled = lookup.events_handled() as i64;
                // The users of events just before the front: those a stripe not yet written
                // would miss.
                for back in 0..16 {
                    let user = (handled - 1 - back * 31).rem_euclid(USERS);
                    let want = if handled > user { (handled - user - 1) / USERS + 1 } else { 0 };
                    let row = lookup.lookup_at(&(user as u32), i64::MAX).unwrap();
                    let got = match row.values[0].value {
                        Value::Count(n) => n as i64,
                        _ => 0,
                    };
                    assert!(
                        got >= want,
                        "user {user}: {got} events seen once {handled} were handled, {want} of them theirs"
                    );
                    checks += 1;
                }
                if handled as u64 == total {
                    return checks;
                }
            }
        })
    };
    p.run().await.unwrap();
    assert!(reader.join().unwrap() > 0);
    assert_eq!(lookup.events_handled(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_entities_are_evicted_and_old_lookups_refused_whichever_entities_the_batches_touch() {
    // 2 000 users in the first minute, then only user 0 for two hours: the watermark moves on
    // while no batch touches the others' state, which must still be evicted once their 10
    // minute window and the lateness have passed, and lookups of them behind the horizon
    // refused.
    let p = quiet("evict", 1);
    let mut events: Vec<Txn> = (0..2_000i64).map(|u| (u as u32, u * 30, 1)).collect();
    events.extend((0..7_200i64).map(|s| (0, 60_000 + s * 1_000, 1)));
    let end = events.last().unwrap().1;
    let stream = p
        .source(MemorySource::new(events).batch_size(64))
        .assign_timestamps(|t| t.1, Watermarks::bounded_out_of_orderness(Duration::from_secs(5)));
    let (late, lookup) = view().attach(stream);
    late.sink(CollectSink::new());
    p.run().await.unwrap();
    assert_eq!(lookup.entities(), 1, "only user 0 has events in the last 10 minutes");
    for user in [1u32, 777, 1_999, 5_000] {
        assert!(
            matches!(
                lookup.lookup_at(&user, end - 1_800_000),
                Err(weir_features::FeatureError::BeforeHorizon { .. })
            ),
            "user {user}: a lookup half an hour behind the watermark is refused"
        );
        let row = lookup.lookup_at(&user, end).unwrap();
        assert!(row.values.iter().all(|v| v.status != Status::Present), "user {user}: {row:?}");
    }
    assert_eq!(lookup.lookup_at(&0, end).unwrap().values[0].value, Value::Count(60));
}
