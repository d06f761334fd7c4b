//! Exactly once through SIGKILL: a checkpointed copier Kafka → Weir → Kafka with an
//! exactly-once sink is killed at a random moment past 30 % of its input and restarted; a
//! `read_committed` reader then sees every input record's output exactly once, while a
//! `read_uncommitted` reader sees the aborted transaction's duplicates (so the transactions
//! are what makes it exactly once). The successor aborts the killed process's open
//! transaction at start, long before `transaction.timeout.ms`.
//!
//! A process that dies after a checkpoint completed but before its transaction committed (the
//! gap librdkafka cannot close by resuming the transaction) loses nothing either: the restart
//! restores the checkpoint before it, which the marker in the last committed transaction names.
//!
//! The job runs in a child process: this test binary started again with `WEIR_KAFKA_COPIER`
//! set (`weir_testkit::ChildTest`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_kafka::{KafkaRecord, KafkaSink, KafkaSource, StartOffset};
use weir_runtime::{Checkpointing, Pipeline, Sink};
use weir_testkit::{ChildTest, Rng};

const CHILD: ChildTest = ChildTest::new("copier_child", "WEIR_KAFKA_COPIER");
const RECORDS: usize = 20_000;
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Delegates to a sink, but dies (as by SIGKILL) in its `n`-th commit, before committing:
/// after the checkpoint completed.
#[derive(Clone)]
struct DieInCommit<S> {
    sink: S,
    n: u64,
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<T, S: Sink<T> + Clone> Sink<T> for DieInCommit<S> {
    type Writer = S::Writer;

    fn name(&self) -> String {
        self.sink.name()
    }
    fn writer(&self, subtask: usize, parallelism: usize) -> weir_runtime::Result<S::Writer> {
        self.sink.writer(subtask, parallelism)
    }
    fn transactional_writer(&self, subtask: usize, parallelism: usize) -> weir_runtime::Result<S::Writer> {
        self.sink.transactional_writer(subtask, parallelism)
    }
    fn commit(&self, checkpoint: u64, committables: &[Vec<u8>]) -> weir_runtime::Result<()> {
        if self.commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.n {
            eprintln!("dying before committing checkpoint {checkpoint}");
            std::process::abort();
        }
        self.sink.commit(checkpoint, committables)
    }
    fn restore_limit(&self) -> weir_runtime::Result<Option<u64>> {
        self.sink.restore_limit()
    }
    fn check_restore(&self, restored: Option<u64>) -> weir_runtime::Result<()> {
        self.sink.check_restore(restored)
    }
    fn discard_uncommitted(&self, restored: Option<u64>) -> weir_runtime::Result<()> {
        self.sink.discard_uncommitted(restored)
    }
    fn committed_output(&self) -> weir_runtime::Result<Option<weir_runtime::CommittedOutput>> {
        self.sink.committed_output()
    }
    fn destination(&self) -> Option<String> {
        self.sink.destination()
    }
}

/// The copier (in the child): `bootstrap|input|output|checkpoint dir|name|die in commit n`
/// (0: never).
#[test]
fn copier_child() {
    let Some(arg) = CHILD.value() else { return };
    child_setup();
    let args: Vec<&str> = arg.split('|').collect();
    let [bootstrap, input, output, dir, name, die] = args[..] else { panic!("bad argument {arg}") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let p = Pipeline::builder(name)
            .parallelism(1)
            .handle_signals(false)
            .checkpointing(Checkpointing::to_dir(dir).interval(Duration::from_millis(200)))
            .build()
            .unwrap();
        p.source(
            KafkaSource::new(config(bootstrap), [input], name)
                .start_offset(StartOffset::Earliest)
                .batch_size(50),
        )
        .map(|r: KafkaRecord| {
            // Slow enough that the kill lands mid-run with a transaction open.
            if r.offset % 5 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            (r.key_str().unwrap_or_default().to_owned(), r.value_str().unwrap().to_owned())
        })
        .sink(DieInCommit {
            sink: KafkaSink::with_encoder(config(bootstrap), output, |r: &(String, String), out| {
                out.extend_from_slice(r.1.as_bytes());
                Ok(())
            })
            .key_by(|r: &(String, String)| r.0.clone())
            .exactly_once(name)
            .transaction_timeout(TRANSACTION_TIMEOUT),
            n: die.parse().unwrap(),
            commits: Default::default(),
        });
        p.run().await.unwrap();
    });
}

fn output_high(b: &str, topic: &str) -> i64 {
    (0..3).map(|p| lso_and_high(b, topic, p).1).sum()
}

#[test]
fn a_killed_exactly_once_copier_restarted_outputs_every_record_once() {
    copy_kill_restart(0);
}

#[test]
fn a_copier_dying_between_a_complete_checkpoint_and_its_commit_loses_nothing() {
    copy_kill_restart(3);
}

/// Copies with a child killed past 30 % (or dying in its `die`-th commit), then restarted.
fn copy_kill_restart(die: u64) {
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

    let mut first = spawn(&CHILD, format!("{arg}|{die}"));
    let at = RECORDS as i64 * 3 / 10 + rng.below(RECORDS as u64 / 3) as i64;
    if die == 0 {
        wait_until(Duration::from_secs(120), "the copier to pass 30 %", || {
            assert!(first.try_wait().unwrap().is_none(), "the copier ended");
            output_high(&b, &output) >= at
        });
        first.kill().unwrap();
    }
    let status = first.wait().unwrap();
    assert!(!status.success(), "the first copier died: {status}");
    let high_at_kill: Vec<i64> = (0..3).map(|p| lso_and_high(&b, &output, p).1).collect();
    let open = (0..3).any(|p| lso_and_high(&b, &output, p).0 < high_at_kill[p as usize]);
    eprintln!(
        "killed at {} output offsets; a transaction was open: {open}",
        high_at_kill.iter().sum::<i64>()
    );

    let started = Instant::now();
    let mut second = spawn(&CHILD, format!("{arg}|0"));
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
        let (lso, high) =
            (0..3).map(|p| lso_and_high(&b, &output, p)).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
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
    assert_eq!(
        values.len(),
        RECORDS,
        "missing: {:?}",
        weir_testkit::missing(&(0..RECORDS).collect::<Vec<_>>(), &values)
    );
    let uncommitted = read_all(&b, &output, "read_uncommitted").len();
    eprintln!(
        "read_committed {} records, read_uncommitted {uncommitted}; resolved after {aborted_after:?}",
        committed_rows.len()
    );
    if open {
        assert!(
            uncommitted > RECORDS,
            "the aborted transaction's records are visible to read_uncommitted readers"
        );
    }
}
