//! The first program of any message queue: a producer sends `key` / `Hello, Weir!` to
//! `test_topic`, then a consumer in group `test_group` (reading from the earliest offset) prints
//! every record it has not consumed before, and commits.
//!
//! ```text
//! cargo run --release --example quickstart           # data in ./weir-data (or $WEIR_DIR)
//! cargo run --release --example quickstart -- DIR    # data in DIR
//! ```
//!
//! Run it twice: the second run prints only the new record, because the group committed its
//! position the first time. `weir consume test_topic --from-beginning` shows them all.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weir::prelude::*;

#[derive(Debug, Parser)]
#[command(about = "Sends one record to a topic of the embedded log, then consumes what is new")]
struct Args {
    /// The log directory.
    #[arg(default_value = "weir-data", env = "WEIR_DIR")]
    dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { dir } = Args::parse();
    weir_examples::init_tracing("warn");
    let log = Log::open(&dir, LogOptions::default())?;

    // Producer.
    let topic = log.topic_or_create("test_topic", TopicConfig::with_partitions(1))?;
    let sent = topic.send(&[Record::new("Hello, Weir!").with_key("key")])?;
    println!("sent to {}/{} at offset {}", topic.name(), sent[0].partition, sent[0].offset);

    // Consumer.
    let config =
        ConsumerConfig::new("test_topic").group("test_group").auto_offset_reset(AutoOffsetReset::Earliest);
    let mut consumer = log.consumer(config)?;
    loop {
        let batches = consumer.poll(Duration::from_millis(500)).await?;
        if batches.is_empty() {
            break;
        }
        for batch in &batches {
            for r in &batch.records {
                let key = r.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                println!(
                    "{}/{} offset {}: key={key} value={}",
                    batch.topic,
                    batch.partition,
                    r.offset,
                    String::from_utf8_lossy(&r.value)
                );
            }
        }
        consumer.commit()?;
    }
    println!("data in {}", dir.display());
    Ok(())
}
