//! A glob over three files at parallelism 2: every line once, each batch from one file whose
//! index is the batch's split.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use weir_connectors::{FileSource, Line};
use weir_runtime::{Batch, CollectSink, Collector, Operator, Pipeline};

/// Each batch's split and the files of its lines.
type Seen = Arc<Mutex<Vec<(u32, Vec<Arc<str>>)>>>;

/// Passes batches on, noting what it saw.
#[derive(Clone)]
struct Splits(Seen);

impl Operator<Line, Line> for Splits {
    fn process_batch(&mut self, batch: Batch<Line>, out: &mut Collector<Line>) {
        let paths = batch.records.iter().map(|l| l.path.clone()).collect();
        self.0.lock().unwrap().push((batch.split, paths));
        out.batch(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glob_over_three_files_at_parallelism_two_sees_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [("a.log", 1_000u64), ("b.log", 1_500), ("c.log", 701)];
    for (name, n) in sizes {
        let text: String = (1..=n).map(|i| format!("{name} {i}\n")).collect();
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    // Not matched, or not files: never read.
    std::fs::write(dir.path().join("notes.txt"), "nope\n").unwrap();
    std::fs::create_dir(dir.path().join("d.log")).unwrap();

    let p = Pipeline::builder("glob").parallelism(2).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    let splits: Seen = Arc::default();
    let pattern = dir.path().join("*.log");
    p.source(FileSource::lines(pattern.to_str().unwrap()).batch_size(128))
        .operator("splits", Splits(splits.clone()))
        .sink(out.clone());
    p.run().await.unwrap();

    let lines = out.take();
    assert_eq!(lines.len(), 1_000 + 1_500 + 701);
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for l in &lines {
        let (name, n) = l.text.split_once(' ').unwrap();
        assert!(l.path.ends_with(name), "{l:?}");
        assert_eq!(n.parse::<u64>().unwrap(), l.line, "line numbers count from 1");
        *seen.entry((name.to_owned(), l.line)).or_default() += 1;
    }
    assert!(seen.values().all(|&c| c == 1), "some line was read twice");
    for (name, n) in sizes {
        assert_eq!(seen.keys().filter(|(f, _)| f == name).count() as u64, n, "{name}");
    }

    let splits = splits.lock().unwrap();
    for (split, paths) in splits.iter() {
        let name = ["a.log", "b.log", "c.log"][*split as usize];
        assert!(paths.iter().all(|p| p.ends_with(name)), "split {split} holds lines of {paths:?}");
        assert!(paths.len() <= 128);
    }
    let used: std::collections::BTreeSet<u32> = splits.iter().map(|(s, _)| *s).collect();
    assert_eq!(used.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
}

#[tokio::test]
async fn subtasks_take_every_pth_file() {
    use weir_runtime::{Source, SourceReader};
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.log", "b.log", "c.log"] {
        std::fs::write(dir.path().join(name), format!("{name}\n")).unwrap();
    }
    let source = FileSource::lines(dir.path().join("*.log").to_str().unwrap());
    let mut files = Vec::new();
    for subtask in 0..2 {
        let mut reader = source.reader(subtask, 2).unwrap();
        while let Some(batch) = reader.next_batch().await.unwrap() {
            files.push((subtask, batch.split, batch.records[0].text.clone()));
        }
    }
    let want = [(0, 0, "a.log"), (0, 2, "c.log"), (1, 1, "b.log")];
    assert_eq!(files, want.map(|(s, i, t)| (s, i, t.to_owned())));
}
