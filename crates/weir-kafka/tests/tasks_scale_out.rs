//! Scale-out through a consumer group, exactly once: three processes run the same
//! `KafkaTasks` program over a 6-partition topic, a keyed running count per task. One is
//! killed with SIGKILL at a random moment past 30 % of the input and started again while the
//! others go on. A `read_committed` reader then sees every input record's output exactly once,
//! and per key the running counts are exactly 1, 2, …, n: no gap (lost state or output), no
//! repeat (state or output applied twice). The survivors resume the dead process's partitions
//! soon after the session timeout; the restarted process takes partitions again.
//!
//! The processes are this test binary started again with `WEIR_KAFKA_TASKS` set.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

use common::*;
use weir_kafka::{KafkaRecord, KafkaSink, KafkaTasks, StartOffset};
use weir_runtime::{Batch, Collector, Operator, StateReader, StateWriter};
use weir_testkit::{ChildTest, Rng};

const CHILD: ChildTest = ChildTest::new("tasks_child", "WEIR_KAFKA_TASKS");
const RECORDS: usize = 30_000;
const KEYS: usize = 300;
const PARTITIONS: i32 = 6;

/// A running count per key, checkpointed.
#[derive(Clone, Default)]
struct RunningCount {
    counts: HashMap<String, u64>,
}

impl Operator<(String, u64), String> for RunningCount {
    fn process_batch(&mut self, batch: Batch<(String, u64)>, out: &mut Collector<String>) {
        let rows = batch
            .records
            .iter()
            .map(|(key, seq)| {
                let n = self.counts.entry(key.clone()).or_insert(0);
                *n += 1;
                format!("{key},{n},{seq}")
            })
            .collect();
        out.batch(batch.derive(rows, Vec::new()));
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> weir_runtime::Result<()> {
        self.counts.iter().try_for_each(|(k, n)| state.put(k, n))
    }

    fn restore(&mut self, state: &StateReader<'_>) -> weir_runtime::Result<()> {
        for entry in state.entries::<String, u64>() {
            let (k, n) = entry?;
            self.counts.insert(k, n);
        }
        Ok(())
    }
}

/// A process of the task group: `bootstrap|input|output|checkpoint dir|group|instance`.
#[test]
fn tasks_child() {
    let Some(arg) = CHILD.value() else { return };
    child_setup();
    let args: Vec<&str> = arg.split('|').collect();
    let [bootstrap, input, output, dir, group, instance] = args[..] else { panic!("bad argument {arg}") };
    let started = std::path::Path::new(dir).join(format!("started-{instance}"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (bootstrap, output, group) = (bootstrap.to_owned(), output.to_owned(), group.to_owned());
    rt.block_on(
        KafkaTasks::new(config(&bootstrap), input, group.clone())
            // Through object_store, as on S3 (here a local directory): the repartition test
            // uses a plain directory.
            .checkpoint_store(
                std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()),
                "checkpoints",
            )
            .checkpoint_interval(Duration::from_millis(200))
            .session_timeout(Duration::from_secs(6))
            .run(
                move |task| {
                    let mut log =
                        std::fs::OpenOptions::new().create(true).append(true).open(&started).unwrap();
                    writeln!(log, "{}", task.partition()).unwrap();
                    // The topic is keyed by the key the counts are kept by.
                    task.copartitioned();
                    let p = task.pipeline("count").build()?;
                    p.source(task.source().start_offset(StartOffset::Earliest).batch_size(50))
                        .map(|r: KafkaRecord| {
                            if r.offset % 5 == 0 {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            (r.key_str().unwrap().to_owned(), r.value_str().unwrap().parse::<u64>().unwrap())
                        })
                        .key_by(|r: &(String, u64)| r.0.clone())
                        .into_stream()
                        .operator("running_count", RunningCount::default())
                        .sink(task.sink(
                            KafkaSink::bytes(config(&bootstrap), output.clone()).exactly_once(group.clone()),
                        ));
                    Ok(p)
                },
                std::future::pending(),
            ),
    )
    .unwrap();
}

#[test]
fn three_processes_one_killed_and_restarted_count_every_record_exactly_once() {
    if CHILD.is_child() {
        return;
    }
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let (input, output, group) = (unique("in"), unique("out"), unique("tasks"));
    create_topic(&b, &input, PARTITIONS);
    create_topic(&b, &output, PARTITIONS);
    produce(&b, &input, &(0..RECORDS).map(|i| (format!("k{}", i % KEYS), i.to_string())).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let arg = |instance: &str| format!("{b}|{input}|{output}|{}|{group}|{instance}", dir.path().display());
    let mut children: BTreeMap<&str, std::process::Child> =
        ["a", "b", "c"].into_iter().map(|i| (i, spawn(&CHILD, arg(i)))).collect();
    let output_high = || (0..PARTITIONS).map(|p| lso_and_high(&b, &output, p).1).sum::<i64>();

    let at = RECORDS as i64 * 3 / 10 + rng.below(RECORDS as u64 / 4) as i64;
    wait_until(Duration::from_secs(120), "the group to pass 30 %", || output_high() >= at);
    // A process that runs tasks (the group may not have given each one partitions yet).
    let owners: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|i| {
            std::fs::read_to_string(dir.path().join(format!("started-{i}")))
                .is_ok_and(|s| !s.trim().is_empty())
        })
        .collect();
    let victim = owners[rng.below(owners.len() as u64) as usize];
    let mut killed = children.remove(victim).unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    eprintln!("killed {victim} at {} output offsets", output_high());
    std::fs::remove_file(dir.path().join(format!("started-{victim}"))).unwrap();
    // The survivors own the dead process's partitions once the group notices (session timeout
    // 6 s): every partition's committed offset moves on (or is at its end) well within that.
    let ends: Vec<i64> = (0..PARTITIONS).map(|p| lso_and_high(&b, &input, p).1).collect();
    let at_kill = committed(&b, &group, &input, PARTITIONS);
    let killed_at = std::time::Instant::now();
    wait_until(Duration::from_secs(30), "the survivors to resume every partition", || {
        let now = committed(&b, &group, &input, PARTITIONS);
        (0..PARTITIONS).all(|p| {
            let o = now.get(&p).map_or(-1, |(o, _)| *o);
            o >= ends[p as usize] || o > at_kill.get(&p).map_or(-1, |(o, _)| *o)
        })
    });
    eprintln!("the survivors resumed every partition {:?} after the kill", killed_at.elapsed());
    std::thread::sleep(Duration::from_millis(rng.range(200, 1_000)));
    children.insert(victim, spawn(&CHILD, arg(victim)));

    wait_until(Duration::from_secs(180), "every partition's offsets to reach the end", || {
        for (name, child) in children.iter_mut() {
            assert!(child.try_wait().unwrap().is_none(), "process {name} ended");
        }
        let c = committed(&b, &group, &input, PARTITIONS);
        (0..PARTITIONS).all(|p| c.get(&p).is_some_and(|(o, _)| *o >= ends[p as usize]))
    });
    // A process that joins takes partitions over, also when the input is read to its end.
    let started = dir.path().join(format!("started-{victim}"));
    wait_until(Duration::from_secs(60), "the restarted process to take partitions", || {
        std::fs::read_to_string(&started).is_ok_and(|s| !s.trim().is_empty())
    });
    wait_until(Duration::from_secs(30), "the last transactions to commit", || {
        (0..PARTITIONS).all(|p| {
            let (lso, high) = lso_and_high(&b, &output, p);
            lso == high
        })
    });
    for (_, mut child) in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let rows = read_all(&b, &output, "read_committed");
    let mut seqs: Vec<usize> = Vec::new();
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &rows {
        let mut fields = r.value.split(',');
        let (key, n, seq) = (fields.next().unwrap(), fields.next().unwrap(), fields.next().unwrap());
        seqs.push(seq.parse().unwrap());
        counts.entry(key.to_owned()).or_default().push(n.parse().unwrap());
    }
    seqs.sort_unstable();
    let dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    seqs.dedup();
    assert_eq!(dups, 0, "{dups} input records have more than one output");
    assert_eq!(
        seqs.len(),
        RECORDS,
        "missing: {:?}",
        weir_testkit::missing(&(0..RECORDS).collect::<Vec<_>>(), &seqs)
    );
    assert_eq!(counts.len(), KEYS);
    for (key, mut ns) in counts {
        ns.sort_unstable();
        let expected: Vec<u64> = (1..=ns.len() as u64).collect();
        assert_eq!(ns, expected, "running counts of {key} have a gap or a repeat");
    }
    let restarted = std::fs::read_to_string(dir.path().join(format!("started-{victim}"))).unwrap_or_default();
    let uncommitted = read_all(&b, &output, "read_uncommitted").len();
    eprintln!(
        "{} rows committed, {uncommitted} written; {victim} restarted with tasks {:?}",
        rows.len(),
        restarted.split_whitespace().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_pipeline_keying_its_records_without_saying_they_are_copartitioned_is_refused() {
    if CHILD.is_child() {
        return;
    }
    let Some(b) = bootstrap() else { return };
    let input = unique("in");
    create_topic(&b, &input, 1);
    let dir = tempfile::tempdir().unwrap();
    let err = KafkaTasks::new(config(&b), input.clone(), unique("g"))
        .checkpoint_dir(dir.path())
        .session_timeout(Duration::from_secs(6))
        .run(
            |task| {
                let p = task.pipeline("count").build()?;
                p.source(task.source())
                    .map(|r: KafkaRecord| r.value)
                    .key_by(|v: &Vec<u8>| v.len())
                    .into_stream()
                    .sink(weir_runtime::DiscardSink);
                Ok(p)
            },
            tokio::time::sleep(Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, weir_runtime::Error::InvalidConfig { field: "key_by", .. }), "{shown}");
    assert!(shown.contains("Task::copartitioned") && shown.contains("repartition"), "{shown}");
}
