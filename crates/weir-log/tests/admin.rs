//! Administration of a log: setting a group's committed offsets, deleting a group, changing a
//! topic's retention.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use weir_log::{ConsumerConfig, Durability, Error, Log, LogOptions, Record, TopicConfig};

fn options() -> LogOptions {
    LogOptions::default().durability(Durability::None)
}

fn committed(log: &Log, group: &str) -> Vec<Option<u64>> {
    log.describe_group(group).unwrap().partitions.iter().map(|p| p.committed).collect()
}

#[test]
fn commit_offsets_sets_only_the_partitions_given_backwards_too_and_clamps_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let topic = log.create_topic("t", TopicConfig::with_partitions(3)).unwrap();
    for p in 0..3 {
        topic.append(p, &[Record::new("a"), Record::new("b"), Record::new("c")]).unwrap();
    }
    log.commit_offsets("g", "t", [(0, 3), (1, 3), (2, 3)]).unwrap();
    log.commit_offsets("g", "t", [(1, 0), (2, 99)]).unwrap();
    assert_eq!(committed(&log, "g"), [Some(3), Some(0), Some(3)]);
    assert!(matches!(log.commit_offsets("g", "t", [(3, 0)]), Err(Error::UnknownPartition { .. })));
    assert!(matches!(log.commit_offsets("g", "nope", [(0, 0)]), Err(Error::UnknownTopic(_))));
    drop(log);
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(committed(&log, "g"), [Some(3), Some(0), Some(3)]);
}

#[test]
fn delete_group_removes_its_offsets_but_not_while_it_has_members() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    log.create_topic("t", TopicConfig::with_partitions(1)).unwrap();
    log.commit_offsets("g", "t", [(0, 0)]).unwrap();
    let member = log.consumer(ConsumerConfig::new("t").group("g")).unwrap();
    assert!(matches!(log.delete_group("g"), Err(Error::GroupActive { members: 1, .. })));
    drop(member);
    log.delete_group("g").unwrap();
    assert!(matches!(log.describe_group("g"), Err(Error::UnknownGroup(_))));
    assert!(log.list_groups().unwrap().is_empty());
    assert!(matches!(log.delete_group("g"), Err(Error::UnknownGroup(_))));
    drop(log);
    assert!(Log::open(dir.path(), options()).unwrap().list_groups().unwrap().is_empty());
}

#[test]
fn set_topic_retention_takes_effect_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    let config = TopicConfig { segment_bytes: 4096, ..TopicConfig::with_partitions(1) };
    let topic = log.create_topic("t", config).unwrap();
    for _ in 0..100 {
        topic.append(0, &[Record::new(vec![b'x'; 200])]).unwrap();
    }
    assert_eq!(log.enforce_retention().unwrap(), 0);
    let changed = log.set_topic_retention("t", Some(8192), None).unwrap();
    assert_eq!((changed.retention_bytes, changed.segment_bytes), (Some(8192), 4096));
    assert_eq!(topic.config().retention_bytes, Some(8192));
    assert!(log.enforce_retention().unwrap() > 0);
    assert!(topic.start_offset(0).unwrap() > 0);
    let err = log.set_topic_retention("t", Some(0), None).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "retention_bytes", .. }), "{err}");
    drop((topic, log));
    let log = Log::open(dir.path(), options()).unwrap();
    assert_eq!(log.topic("t").unwrap().config().retention_bytes, Some(8192));
}
