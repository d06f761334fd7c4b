//! A keyed windowed aggregation whose key is not the topic's key, spread over processes: the
//! access events are keyed by client, the counts by status class. One task group classifies
//! and writes a repartition topic keyed by class (exactly once, with heartbeats carrying the
//! writers' watermarks); a second counts per class in 10 s tumbling windows. Three processes, one killed with
//! SIGKILL past 30 % and restarted, give exactly the rows of a one-process run, and both equal
//! the counts computed here from the generated input.
//!
//! The processes are this test binary started again with `WEIR_KAFKA_REPARTITION` set.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use weir_kafka::{KafkaRecord, KafkaSink, KafkaTasks, StartOffset};
use weir_runtime::{Count, TumblingWindows, Watermarks};
use weir_testkit::{ChildTest, Rng};

const CHILD: ChildTest = ChildTest::new("repartition_child", "WEIR_KAFKA_REPARTITION");
const EVENTS: usize = 12_000;
const PARTITIONS: i32 = 6;
const T0: i64 = 1_700_000_000_000;
const WINDOW_MS: i64 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    client: String,
    status: u16,
    ts: i64,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct Classified {
    class: String,
    ts: i64,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    class: String,
    start: i64,
    count: u64,
}

/// The input: per client, events 50 ms apart in event time (shifted by up to 1 s within a
/// partition, less than the 2 s out-of-orderness bound), then one `status 0` event per
/// partition a minute after the last, which closes every window.
fn events(rng: &mut Rng) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            let client = format!("c{}", i % 240);
            let status = [200, 200, 200, 301, 404, 500, 503][rng.below(7) as usize];
            let ts = T0 + i as i64 * 50 - rng.below(1_000) as i64;
            (client.clone(), serde_json::to_string(&Event { client, status, ts }).unwrap())
        })
        .collect();
    // Clients c0..c239 cover every partition; one closing event for each client.
    let end = T0 + EVENTS as i64 * 50 + 60_000;
    for c in 0..240 {
        let client = format!("c{c}");
        out.push((client.clone(), serde_json::to_string(&Event { client, status: 0, ts: end }).unwrap()));
    }
    out
}

/// Counts per class and 10 s window, computed directly (the closing events excluded).
fn expected(input: &[(String, String)]) -> Vec<Row> {
    let mut counts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (_, v) in input {
        let e: Event = serde_json::from_str(v).unwrap();
        if e.status != 0 {
            *counts
                .entry((format!("{}xx", e.status / 100), e.ts - e.ts.rem_euclid(WINDOW_MS)))
                .or_default() += 1;
        }
    }
    counts.into_iter().map(|((class, start), count)| Row { class, start, count }).collect()
}

/// A process: `bootstrap|input|repartition|output|checkpoint dir|group`.
#[test]
fn repartition_child() {
    let Some(arg) = CHILD.value() else { return };
    child_setup();
    let args: Vec<String> = arg.split('|').map(str::to_owned).collect();
    let [b, input, repartition, output, dir, group] = &args[..] else { panic!("bad argument {arg}") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tasks = |topic: &str, stage: &str| {
        KafkaTasks::new(config(b), topic, format!("{group}-{stage}"))
            .checkpoint_dir(dir)
            .checkpoint_interval(Duration::from_millis(200))
            .session_timeout(Duration::from_secs(6))
    };
    let (b1, repartition1, prefix1) = (b.clone(), repartition.clone(), format!("{group}-classify"));
    let classify = tasks(input, "classify").run(
        move |task| {
            let p = task.pipeline("classify").build()?;
            p.source(task.source().start_offset(StartOffset::Earliest).batch_size(50))
                .map(|r: KafkaRecord| {
                    if r.offset % 5 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    r.parse_json::<Event>().unwrap()
                })
                .assign_timestamps(
                    |e: &Event| e.ts,
                    Watermarks::bounded_out_of_orderness(Duration::from_secs(2)),
                )
                .map(|e| Classified { class: format!("{}xx", e.status / 100), ts: e.ts })
                .sink(
                    task.sink(
                        KafkaSink::json(config(&b1), repartition1.clone())
                            .key_by(|c: &Classified| c.class.clone())
                            .repartition()
                            .exactly_once(prefix1.clone()),
                    ),
                );
            Ok(p)
        },
        std::future::pending(),
    );
    let (b2, output2, prefix2) = (b.clone(), output.clone(), format!("{group}-count"));
    let count = tasks(repartition, "count").run(
        move |task| {
            // The repartition topic is keyed by class.
            task.copartitioned();
            let p = task.pipeline("count").build()?;
            p.source(task.source().from_repartition(PARTITIONS as u32).start_offset(StartOffset::Earliest))
                .assign_timestamps_punctuated(
                    |r: &KafkaRecord| r.timestamp.unwrap_or(i64::MIN),
                    KafkaRecord::watermark,
                    None,
                )
                .filter(|r| !r.is_heartbeat())
                .map(|r| r.parse_json::<Classified>().unwrap())
                .key_by(|c: &Classified| c.class.clone())
                .window(TumblingWindows::of(Duration::from_millis(WINDOW_MS as u64)))
                .aggregate(Count)
                .map(|w| Row { class: w.key, start: w.window_start, count: w.value })
                .sink(task.sink(KafkaSink::json(config(&b2), output2.clone()).exactly_once(prefix2.clone())));
            Ok(p)
        },
        std::future::pending(),
    );
    rt.block_on(async { tokio::try_join!(classify, count) }).unwrap();
}

struct Run {
    b: String,
    input: String,
    repartition: String,
    output: String,
    group: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn new(b: &str, input: &str) -> Run {
        let run = Run {
            b: b.to_owned(),
            input: input.to_owned(),
            repartition: unique("repartition"),
            output: unique("out"),
            group: unique("g"),
            dir: tempfile::tempdir().unwrap(),
        };
        create_topic(b, &run.repartition, PARTITIONS);
        create_topic(b, &run.output, 2);
        run
    }

    fn spawn(&self) -> std::process::Child {
        spawn(
            &CHILD,
            format!(
                "{}|{}|{}|{}|{}|{}",
                self.b,
                self.input,
                self.repartition,
                self.output,
                self.dir.path().display(),
                self.group
            ),
        )
    }

    /// The committed rows once there are `n` (without the closing window).
    fn rows(&self, n: usize, children: &mut Children) -> Vec<Row> {
        let read = || -> Vec<Row> {
            let mut rows: Vec<Row> = read_all(&self.b, &self.output, "read_committed")
                .iter()
                .map(|r| serde_json::from_str(&r.value).unwrap())
                .collect();
            rows.sort();
            rows
        };
        let mut last = 0;
        wait_until(Duration::from_secs(240), "every window's row", || {
            children.check_running();
            // Transaction markers take offsets too: count rows only once the offsets allow.
            if (0..2).map(|p| lso_and_high(&self.b, &self.output, p).0).sum::<i64>() < n as i64 {
                return false;
            }
            let got = read().len();
            if got != last {
                eprintln!("{got} of {n} rows");
                last = got;
            }
            got >= n
        });
        // Let any late duplicate show up before reading.
        std::thread::sleep(Duration::from_secs(2));
        read()
    }
}

#[test]
fn a_keyed_window_over_a_repartition_topic_gives_the_same_rows_at_one_and_three_processes() {
    if CHILD.is_child() {
        return;
    }
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let input = unique("access");
    create_topic(&b, &input, PARTITIONS);
    let records = events(&mut rng);
    produce(&b, &input, &records);
    let want = expected(&records);
    let n = want.len();

    let one = Run::new(&b, &input);
    let mut children = Children(vec![one.spawn()]);
    let single = one.rows(n, &mut children);
    drop(children);
    assert_eq!(single, want, "one process");

    let three = Run::new(&b, &input);
    let mut children = Children((0..3).map(|_| three.spawn()).collect());
    let at = rng.range(30, 60) as i64 * EVENTS as i64 / 100;
    wait_until(Duration::from_secs(120), "the classifiers to pass 30 %", || {
        committed(&b, &format!("{}-classify", three.group), &input, PARTITIONS)
            .values()
            .map(|(o, _)| *o)
            .sum::<i64>()
            >= at
    });
    let victim = rng.below(3) as usize;
    children.0[victim].kill().unwrap();
    children.0[victim].wait().unwrap();
    eprintln!("killed process {victim}");
    std::thread::sleep(Duration::from_millis(rng.range(200, 2_000)));
    children.0[victim] = three.spawn();
    let scaled = three.rows(n, &mut children);
    drop(children);
    assert_eq!(scaled.len(), single.len(), "rows at three processes");
    assert_eq!(scaled, single, "three processes, one killed, give the one-process rows");
}
