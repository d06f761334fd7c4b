//! Helpers shared by the example programs, which live beside this directory, one per file (or
//! directory).

use std::io::IsTerminal;

/// Installs a `tracing` subscriber that writes to stderr, filtered by `RUST_LOG` (else by
/// `default_filter`, e.g. `"warn"`), in colour only when stderr is a terminal: a redirected
/// stderr gets plain text, without ANSI escapes.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A topic for [`create_topics`]: its name, partition count, and whether it keeps its records
/// for ever (`retention.ms=-1`: a repartition topic, whose records carry event time, which
/// time-based retention would judge old).
#[cfg(feature = "kafka")]
#[derive(Debug, Clone, Copy)]
pub struct NewTopic<'a> {
    /// The name.
    pub name: &'a str,
    /// Its partitions.
    pub partitions: i32,
    /// Keep records for ever.
    pub keep: bool,
}

/// Creates the Kafka topics that do not exist yet (one replica each).
#[cfg(feature = "kafka")]
pub async fn create_topics(bootstrap: &str, topics: &[NewTopic<'_>]) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;

    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let new: Vec<rdkafka::admin::NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = rdkafka::admin::NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(1));
            if t.keep { topic.set("retention.ms", "-1") } else { topic }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(30)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => anyhow::bail!("creating topic {topic} on {bootstrap}: {e}"),
        }
    }
    Ok(())
}

/// The partition count of `topic`; an error if it does not exist.
#[cfg(feature = "kafka")]
pub fn partition_count(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let m = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(30))?;
    match m.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        _ => anyhow::bail!("topic {topic} does not exist on {bootstrap}"),
    }
}

/// SplitMix64: a well-mixed 64-bit hash of `x`, the synthetic data's source of randomness
/// (line `i` of a synthetic input is a pure function of `i`).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
