//! [`LogOptions::retention_check_interval`] promises that retention "also runs whenever a segment
//! rolls": a partition that keeps rolling never grows far past its size limit, whatever the
//! check interval.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use weir_log::{Durability, Log, LogOptions, Record, TopicConfig};

#[test]
fn retention_runs_when_a_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    // The default check interval (5 minutes) never comes up during the test.
    let log = Log::open(dir.path(), LogOptions::default().durability(Durability::None)).unwrap();
    let config = TopicConfig { segment_bytes: 4096, retention_bytes: Some(4096), ..TopicConfig::default() };
    let topic = log.create_topic("t", config).unwrap();
    for i in 0..400u64 {
        topic.append(0, &[Record::new(vec![b'x'; 100]).with_timestamp(i as i64)]).unwrap();
    }
    let info = topic.describe().partitions[0];
    assert!(info.segments >= 1 && info.start_offset > 0, "no segment was deleted on roll: {info:?}");
    // Retention keeps at least 4096 bytes without the oldest segment: at most two full segments
    // and the active one remain.
    assert!(info.segments <= 3, "retention did not keep up with rolls: {info:?}");
}
