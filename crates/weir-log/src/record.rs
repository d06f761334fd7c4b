//! Records as producers hand them in and as consumers get them back.

use bytes::Bytes;

/// A header: a name and an optional value, carried with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value; `None` is distinct from an empty value.
    pub value: Option<Bytes>,
}

/// A record to append.
///
/// Cloning is cheap: keys and values are reference-counted [`Bytes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The key; records with equal keys go to the same partition (see
    /// [`partition_for_key`](crate::partition_for_key)).
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Event time in milliseconds since the Unix epoch. `None` is replaced by the wall clock at
    /// append time.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A keyless record with the given value and no timestamp.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Record { value: value.into(), ..Record::default() }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value });
        self
    }
}

/// A record read back from a partition, with the offset and timestamp the log stored.
///
/// `key` and `value` share the buffer the batch was read into: holding one keeps that buffer
/// alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's offset in its partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch (the producer's or the append time).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Vec<Header>,
}
