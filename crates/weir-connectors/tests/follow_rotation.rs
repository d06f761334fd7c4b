//! Follow mode: appended lines are picked up, a partial line waits for its newline, and the
//! source survives rotation (rename + recreate) and truncation. Bounded in time.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use weir_connectors::{FileSource, Line};
use weir_runtime::{CollectSink, Pipeline};

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Waits until `seen` holds `n` lines, taking them from `out`; panics after 10 s.
async fn wait_for(out: &CollectSink<Line>, seen: &mut Vec<Line>, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {n} lines; got {seen:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen.extend(out.take());
    }
    assert_eq!(seen.len(), n, "more lines than expected: {seen:#?}");
}

fn texts(lines: &[Line]) -> Vec<(u64, &str)> {
    lines.iter().map(|l| (l.line, l.text.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_picks_up_appends_and_survives_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::fs::write(&path, "a1\na2\n").unwrap();

    let p = Pipeline::builder("follow").parallelism(1).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    let source = FileSource::lines(path.to_str().unwrap()).follow().poll_interval(Duration::from_millis(20));
    p.source(source).sink(out.clone());
    let job = tokio::spawn(p.run());
    let mut seen = Vec::new();

    let test = async {
        // What is there at the start.
        wait_for(&out, &mut seen, 2).await;
        assert_eq!(texts(&seen), [(1, "a1"), (2, "a2")]);

        // Appends, ending in a partial line that must wait for its newline.
        append(&path, "a3\npart");
        wait_for(&out, &mut seen, 3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.extend(out.take());
        assert_eq!(seen.len(), 3, "a line without its newline was emitted: {seen:#?}");
        append(&path, "ial\n");
        wait_for(&out, &mut seen, 4).await;
        assert_eq!(texts(&seen[3..]), [(4, "partial")]);

        // Rotation: rename, the old writer's last line, then a new file — at once, so the last
        // line is only found by draining the old handle after the new file was noticed.
        let rotated = dir.path().join("app.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        append(&rotated, "a5\n");
        std::fs::write(&path, "b1\nb2\n").unwrap();
        wait_for(&out, &mut seen, 7).await;
        assert_eq!(texts(&seen[4..]), [(5, "a5"), (1, "b1"), (2, "b2")]);

        // Renamed away and recreated later: the gap is waited out.
        std::fs::rename(&path, dir.path().join("app.log.2")).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        std::fs::write(&path, "c1\n").unwrap();
        wait_for(&out, &mut seen, 8).await;
        assert_eq!(texts(&seen[7..]), [(1, "c1")]);

        // Truncation in place (copytruncate): read again from the start.
        append(&path, "c2\n");
        wait_for(&out, &mut seen, 9).await;
        std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        append(&path, "d1\n");
        wait_for(&out, &mut seen, 10).await;
        assert_eq!(texts(&seen[8..]), [(2, "c2"), (1, "d1")]);
        assert!(seen.iter().all(|l| l.path.ends_with("app.log")));
    };
    tokio::time::timeout(Duration::from_secs(60), test).await.expect("follow test timed out");

    assert!(!job.is_finished(), "a followed source must not end");
    job.abort();
    assert!(job.await.unwrap_err().is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_sources_end_at_eof() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::fs::write(&path, "x\n".repeat(10_000)).unwrap();
    let p = Pipeline::builder("bounded").parallelism(1).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    p.source(FileSource::lines(path.to_str().unwrap())).sink(out.clone());
    let report = tokio::time::timeout(Duration::from_secs(30), p.run()).await.unwrap().unwrap();
    assert_eq!(report.dead_letters, 0);
    assert_eq!(out.take().len(), 10_000);
}

/// `copytruncate` followed by a burst: the file is truncated in place and rewritten past the
/// size already read before the source looks again. Same inode, larger than the read position:
/// only the changed first bytes tell; the new content is read from its start, whole lines only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_and_rewritten_past_its_old_size_between_polls_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let old: String = (1..=300).map(|i| format!("old line {i:04}\n")).collect();
    std::fs::write(&path, &old).unwrap();

    let p = Pipeline::builder("rewrite").parallelism(1).handle_signals(false).build().unwrap();
    let out = CollectSink::new();
    // A long poll interval: the truncation and the rewrite happen between two looks.
    let source = FileSource::lines(path.to_str().unwrap()).follow().poll_interval(Duration::from_millis(300));
    p.source(source).sink(out.clone());
    let job = tokio::spawn(p.run());
    let mut seen = Vec::new();

    let test = async {
        wait_for(&out, &mut seen, 300).await;
        // Truncate in place (same inode) and write more than was there, in one go.
        let new: String = (1..=400).map(|i| format!("new line {i:04}\n")).collect();
        let mut f = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        f.write_all(new.as_bytes()).unwrap();
        drop(f);
        // A last line after the rewrite: once it is seen, everything before it was read.
        append(&path, "the end\n");
        wait_for(&out, &mut seen, 701).await;
        let expected: Vec<(u64, String)> = (1..=400u64)
            .map(|i| (i, format!("new line {i:04}")))
            .chain([(401, "the end".to_owned())])
            .collect();
        let got: Vec<(u64, String)> = seen[300..].iter().map(|l| (l.line, l.text.clone())).collect();
        assert_eq!(got, expected);
    };
    tokio::time::timeout(Duration::from_secs(60), test).await.expect("rewrite test timed out");
    job.abort();
    assert!(job.await.unwrap_err().is_cancelled());
}
