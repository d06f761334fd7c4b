//! Apache Kafka for Weir pipelines: read topics, write topics exactly once, and spread one
//! pipeline over several processes through a consumer group.
//!
//! - [`KafkaSource`]: reads topics with assigned partitions (a split per partition, so event
//!   time and idleness are per partition); offsets live in Weir's checkpoints and are committed
//!   to the consumer group when a checkpoint completes. Reads `read_committed`.
//! - [`KafkaSink`]: at-least-once (flush at every checkpoint barrier) or exactly-once (a Kafka
//!   transaction per checkpoint, whose commit is the point of no return; see [`sink`]).
//! - [`KafkaTasks`]: one pipeline per input partition, partitions spread over processes by a
//!   consumer group, state in a checkpoint directory every process reaches (see [`tasks`]).
//! - [`metrics`]: consumer lag (against the last stable offset) and committed offsets per
//!   partition, a task group's partitions and rebalances, transaction commits, aborts and
//!   fencings, exported into the application's registry when a connector is given it.
//! - [`KafkaConfig`]: bootstrap servers, TLS and SASL (PLAIN, SCRAM-SHA-256/512) with secrets
//!   from the environment or a file, and other librdkafka properties passed through; keys Weir
//!   owns are refused, naming them.
//!
//! # Guarantees
//!
//! | pipeline | output in Kafka after a crash and restart |
//! |---|---|
//! | `KafkaSource` → … → `KafkaSink` at-least-once, checkpointed | every record, some twice (those after the last checkpoint) |
//! | `KafkaSource` → … → `KafkaSink` exactly-once, checkpointed, parallelism 1 | every record once, for `read_committed` readers |
//! | [`KafkaTasks`] with exactly-once sinks, N processes, any killed | every record once, for `read_committed` readers |

pub mod config;
mod coordinator;
pub mod metrics;
pub mod sink;
pub mod source;
pub mod tasks;

pub use config::{KafkaConfig, Sasl, SaslMechanism, Secret, Tls};
pub use sink::{Delivery, KafkaSink, KafkaWriter};
pub use source::{KafkaReader, KafkaRecord, KafkaSource, StartOffset};
pub use tasks::{KafkaTasks, Task};
