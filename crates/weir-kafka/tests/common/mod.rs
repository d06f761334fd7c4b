//! What the Kafka tests share: the broker, topics, producing input and reading output.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir_kafka::KafkaConfig;

/// The broker's bootstrap address, or `None` (the test returns; it printed why). Outside CI
/// without Java, Maven or OpenSSL the tests skip; in CI they fail (see `weir_testkit::kafka`).
pub fn bootstrap() -> Option<String> {
    weir_testkit::kafka::broker().map(|b| b.bootstrap.clone())
}

/// Starts the child test `child` with `arg`, on this process's broker.
pub fn spawn(child: &weir_testkit::ChildTest, arg: impl AsRef<std::ffi::OsStr>) -> std::process::Child {
    let mut cmd = child.command(arg);
    if let Some(kafka) = weir_testkit::kafka::broker() {
        cmd.envs(kafka.env());
    }
    cmd.spawn().unwrap()
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap)
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Creates `topic` with `partitions` partitions.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]);
}

/// Creates `topic` with `partitions` partitions and the topic configs `configs`.
pub fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut new_topic =
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    for (name, value) in configs {
        new_topic = new_topic.set(name, value);
    }
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    // On a thread of its own: the caller may be inside a runtime.
    let results = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(admin.create_topics(
                // Records carry event time (2023 in tests): time-based retention would delete
                // them as soon as the broker checks.
                &[new_topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
        })
        .join()
        .unwrap()
    })
    .unwrap();
    for r in results {
        r.unwrap();
    }
    // Wait until the metadata shows every partition with a leader.
    let consumer: BaseConsumer = client(bootstrap).create().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
        let t = &m.topics()[0];
        if t.error().is_none()
            && t.partitions().len() == partitions as usize
            && t.partitions().iter().all(|p| p.leader() >= 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "topic {topic} did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `(key, value)` records (Java's murmur2 partitioner), waiting for every ack.
pub fn produce(bootstrap: &str, topic: &str, records: &[(String, String)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client(bootstrap).set("partitioner", "murmur2_random").set("linger.ms", "5").create().unwrap();
    for (k, v) in records {
        loop {
            match producer.send(BaseRecord::to(topic).key(k).payload(v)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(e.to_string().contains("Queue full"), "{e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
}

/// Every record of `topic` up to its current end, read with `isolation`
/// (`read_committed` or `read_uncommitted`). Under `read_committed` it waits until no
/// transaction is open (the LSO reaches the high watermark) for up to `wait`.
pub fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> Vec<Read> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let m = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in m.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        ends.insert(p.id(), consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap().1);
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut eof = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < ends.len() {
        assert!(Instant::now() < deadline, "reading {topic} ({isolation}) did not reach its end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Read {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                let pos = consumer.position().unwrap();
                let at = pos.find_partition(topic, p).and_then(|e| e.offset().to_raw()).unwrap_or(0);
                if at >= ends[&p] || isolation == "read_committed" {
                    eof.insert(p);
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The partition's last stable offset (what a `read_committed` reader can reach) and high
/// watermark.
pub fn lso_and_high(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    // librdkafka asks for the end offset at the client's isolation level: the LSO when
    // reading committed, the high watermark when not.
    let end = |isolation: &str| {
        let consumer: BaseConsumer = client(bootstrap).set("isolation.level", isolation).create().unwrap();
        consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1
    };
    (end("read_committed"), end("read_uncommitted"))
}

/// The committed offsets of `group` on `topic`, per partition (with their metadata). Retries
/// for up to 30 s while the broker answers with an error Kafka calls retriable (the group's
/// coordinator moving or still loading: `NOT_COORDINATOR`, `COORDINATOR_LOAD_IN_PROGRESS`), as
/// Kafka's clients do.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, (i64, String)> {
    let consumer: BaseConsumer = client(bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets of {group}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets of {group} on {topic}: {e}"),
        }
    };
    c.elements()
        .iter()
        .filter_map(|e| {
            Some((e.partition(), (e.offset().to_raw().filter(|o| *o >= 0)?, e.metadata().to_owned())))
        })
        .collect()
}

/// Waits until `cond` holds, polling every 100 ms, for at most `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a child process does first: it exits when its parent (the test) is gone, so a failed
/// test leaves no process behind; it logs to stderr as `WEIR_LOG` says (e.g.
/// `WEIR_LOG=weir_kafka=debug`).
pub fn child_setup() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(1);
            }
        }
    });
    if let Ok(filter) = std::env::var("WEIR_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Child processes killed (SIGKILL) when dropped, so a failing test leaves none behind.
#[derive(Default)]
pub struct Children(pub Vec<std::process::Child>);

impl Children {
    /// Fails if any child ended.
    pub fn check_running(&mut self) {
        for c in &mut self.0 {
            if let Some(status) = c.try_wait().unwrap() {
                panic!("a child process ended: {status}");
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Per member of the consumer group `group`, how many partitions it is assigned; empty while
/// the group is not stable.
pub fn assigned(bootstrap: &str, group: &str) -> Vec<usize> {
    let consumer: BaseConsumer = client(bootstrap).create().unwrap();
    let Ok(list) = consumer.fetch_group_list(Some(group), Duration::from_secs(10)) else { return Vec::new() };
    list.groups()
        .iter()
        .filter(|g| g.state() == "Stable")
        .flat_map(|g| g.members())
        .map(|m| m.assignment().map_or(0, partitions_in))
        .collect()
}

/// The partition count of a consumer-protocol assignment: a version (i16), topics (i32), each
/// a name (i16 length, bytes) and its partitions (i32 count, an i32 each), then user data.
fn partitions_in(a: &[u8]) -> usize {
    let int = |at: usize, n: usize| {
        a.get(at..at + n).map(|b| b.iter().fold(0i64, |v, x| v << 8 | i64::from(*x)).max(0) as usize)
    };
    let (mut at, mut n) = (6, 0);
    for _ in 0..int(2, 4).unwrap_or(0) {
        let Some(name) = int(at, 2) else { break };
        at += 2 + name;
        let Some(parts) = int(at, 4) else { break };
        at += 4 + 4 * parts;
        n += parts;
    }
    n
}
