//! Exactly once through SIGKILL: a checkpointed copier Kafka → Weir → Kafka with an
//! exactly-once sink is killed at a random moment past 30 % of its input and restarted; a
//! `read_committed` reader then sees every input record's output exactly once, while a
//! `read_uncommitted` reader sees the aborted transaction's duplicates (so the transactions
//! are what makes it exactly once). The successor aborts the killed process's open
//! transaction at start, long before `transaction.timeout.ms`.
//!
//! The job runs in a child process: this test binary started again with `WEIR_KAFKA_COPIER`
//! set (`weir_testkit::ChildTest`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_kafka::{KafkaRecord, KafkaSink, KafkaSource, StartOffset};
use weir_runtime::{Checkpointing, Pipeline};
use weir_testkit::{ChildTest, Rng};

const CHILD: ChildTest = ChildTest::new("copier_child", "WEIR_KAFKA_COPIER");
const RECORDS: usize = 20_000;
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The copier (in the child): `bootstrap|input|output|checkpoint dir|name`.
#[test]
fn copier_child() {
    let Some(arg) = CHILD.value() else { return };
    let args: Vec<&str> = arg.split('|').collect();
    let [bootstrap, input, output, dir, name] = args[..] else { panic!("bad argument {arg}") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let p = Pipeline::builder(name)
            .parallelism(1)
            .handle_signals(false)
            .checkpointing(Checkpointing::to_dir(dir).interval(Duration::from_millis(200)))
            .build()
            .unwrap();
        p.source(KafkaSource::new(config(bootstrap), [input], name).start_offset(StartOffset::Earliest).batch_size(50))
            .map(|r: KafkaRecord| {
                // Slow enough that the kill lands mid-run with a transaction open.
                if r.offset % 5 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (r.key_str().unwrap_or_default().to_owned(), r.value_str().unwrap().to_owned())
            })
            .sink(
                KafkaSink::with_encoder(config(bootstrap), output, |r: &(String, String), out| {
                    out.extend_from_slice(r.1.as_bytes());
                    Ok(())
                })
                .key_by(|r: &(String, String)| r.0.clone())
                .exactly_once(name)
                .transaction_timeout(TRANSACTION_TIMEOUT),
            );
        p.run().await.unwrap();
    });
}

fn output_high(b: &str, topic: &str) -> i64 {
    (0..3).map(|p| lso_and_high(b, topic, p).1).sum()
}

#[test]
fn a_killed_exactly_once_copier_restarted_outputs_every_record_once() {
    if CHILD.is_child() {
        return;
    }
    let Some(b) = bootstrap() else { return };
    let mut rng = Rng::from_env_or_clock("WEIR_KAFKA_SEED");
    let (input, output, name) = (unique("in"), unique("out"), unique("copier"));
    create_topic(&b, &input, 3);
    create_topic(&b, &output, 3);
    produce(&b, &input, &(0..RECORDS).map(|i| (format!("k{}", i % 101), i.to_string())).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("{b}|{input}|{output}|{}|{name}", dir.path().display());

    let mut first = CHILD.spawn(&arg);
    let at = RECORDS as i64 * 3 / 10 + rng.below(RECORDS as u64 / 3) as i64;
    wait_until(Duration::from_secs(120), "the copier to pass 30 %", || {
        assert!(first.try_wait().unwrap().is_none(), "the copier ended");
        output_high(&b, &output) >= at
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let high_at_kill: Vec<i64> = (0..3).map(|p| lso_and_high(&b, &output, p).1).collect();
    let open = (0..3).any(|p| lso_and_high(&b, &output, p).0 < high_at_kill[p as usize]);
    eprintln!("killed at {} output offsets; a transaction was open: {open}", high_at_kill.iter().sum::<i64>());

    let started = Instant::now();
    let mut second = CHILD.spawn(&arg);
    wait_until(Duration::from_secs(30), "the killed copier's transaction to be aborted", || {
        (0..3).all(|p| lso_and_high(&b, &output, p).0 >= high_at_kill[p as usize])
    });
    let aborted_after = started.elapsed();
    assert!(
        aborted_after < TRANSACTION_TIMEOUT / 4,
        "the lingering transaction was resolved after {aborted_after:?}, not at once"
    );
    // Done when the group's offsets (committed after each checkpoint) reach the input's end.
    let ends: Vec<i64> = (0..3).map(|p| lso_and_high(&b, &input, p).1).collect();
    wait_until(Duration::from_secs(120), "the copier to finish", || {
        assert!(second.try_wait().unwrap().is_none(), "the restarted copier ended");
        let c = committed(&b, &name, &input, 3);
        (0..3).all(|p| c.get(&p).is_some_and(|(o, _)| *o >= ends[p as usize]))
    });
    wait_until(Duration::from_secs(30), "the last transaction to commit", || {
        let (lso, high) = (0..3).map(|p| lso_and_high(&b, &output, p)).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
        lso == high
    });
    second.kill().unwrap();
    second.wait().unwrap();

    let committed_rows = read_all(&b, &output, "read_committed");
    let mut values: Vec<usize> = committed_rows.iter().map(|r| r.value.parse().unwrap()).collect();
    values.sort_unstable();
    let dups = values.windows(2).filter(|w| w[0] == w[1]).count();
    values.dedup();
    assert_eq!(dups, 0, "a read_committed reader saw {dups} duplicates");
    assert_eq!(values.len(), RECORDS, "missing: {:?}", weir_testkit::missing(&(0..RECORDS).collect::<Vec<_>>(), &values));
    let uncommitted = read_all(&b, &output, "read_uncommitted").len();
    eprintln!("read_committed {} records, read_uncommitted {uncommitted}; resolved after {aborted_after:?}", committed_rows.len());
    if open {
        assert!(uncommitted > RECORDS, "the aborted transaction's records are visible to read_uncommitted readers");
    }
}
