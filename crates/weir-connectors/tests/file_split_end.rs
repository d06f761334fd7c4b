//! A bounded glob over rotated logs: files are read oldest first, and a file read to its end
//! stops holding the watermark back, so its windows fire while the next file is still read.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use weir_connectors::FileSource;
use weir_runtime::{CollectSink, Count, Pipeline, TumblingWindows, Watermarks};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// The source task read the last line of the newest file.
    ReadLastLine,
    /// A window result for the window starting here passed the window task.
    Fired(i64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_file_releases_its_windows_before_the_next_file_ends() {
    let dir = tempfile::tempdir().unwrap();
    // `access.log.1` holds the older events ([0 s, 10 s)); `access.log` the newer ones. By name
    // `access.log` sorts first; by modification time `access.log.1` does, as it must.
    let old: String = (0..1_000).map(|i| format!("{}\n", i * 10)).collect();
    let new_lines = 4_000;
    let new: String = (0..new_lines).map(|i| format!("{}\n", 100_000 + i)).collect();
    std::fs::write(dir.path().join("access.log"), new).unwrap();
    std::fs::write(dir.path().join("access.log.1"), old).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3_600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("access.log.1"))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();

    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let p = Pipeline::builder("rotated")
        .parallelism(1)
        .channel_capacity(1)
        .handle_signals(false)
        .build()
        .unwrap();
    let out = CollectSink::new();
    let pattern = dir.path().join("access.log*");
    let read = events.clone();
    let fired = events.clone();
    p.source(FileSource::lines(pattern.to_str().unwrap()).batch_size(16))
        .map(|l| l.text.parse::<i64>().unwrap())
        .inspect(move |ts| {
            if *ts == 100_000 + new_lines - 1 {
                read.lock().unwrap().push(Event::ReadLastLine);
            }
        })
        .assign_timestamps(|ts| *ts, Watermarks::monotonic())
        .key_by(|_| 0u8)
        .window(TumblingWindows::of(Duration::from_secs(10)))
        .aggregate(Count)
        .inspect(move |r| fired.lock().unwrap().push(Event::Fired(r.window_start)))
        .sink(out.clone());
    let report = p.run().await.unwrap();

    assert_eq!(report.late_records, 0, "the older file was read after the newer one");
    let counts: Vec<(i64, u64)> = out.take().into_iter().map(|r| (r.window_start, r.value)).collect();
    assert_eq!(counts, [(0, 1_000), (100_000, 4_000)]);
    let events = events.lock().unwrap();
    let first = events.iter().position(|e| *e == Event::Fired(0)).unwrap();
    let last_read = events.iter().position(|e| *e == Event::ReadLastLine).unwrap();
    assert!(first < last_read, "window [0 s, 10 s) fired only at the end of input: {events:?}");
}
