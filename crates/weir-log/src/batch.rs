//! The record batch: the unit of writing, checksumming and reading.
//!
//! Layout (all integers little-endian; see the crate docs for the full on-disk format):
//!
//! ```text
//! offset size field
//!      0    8 base_offset      offset of the first record
//!      8    4 length           bytes that follow this field (12 + length = whole batch)
//!     12    4 crc              CRC-32C of bytes [0, 12) and [16, end): everything but itself
//!     16    1 magic            format version, 1
//!     17    1 attributes       reserved, 0
//!     18    4 record_count     > 0; offsets are base_offset .. base_offset + record_count
//!     22    8 first_timestamp  ms since the epoch; record timestamps are deltas from it
//!     30    8 max_timestamp    largest record timestamp in the batch
//!     38    … records
//! ```
//!
//! A record is `varint length` followed by `length` bytes: `u8 attributes (0)`,
//! `varint timestamp_delta`, `varint offset_delta`, `varint key_length (-1 = no key)`, key,
//! `varint value_length`, value, `varint header_count`, then per header `varint name_length`,
//! name (UTF-8), `varint value_length (-1 = no value)`, value. Varints are zigzag LEB128, as in
//! Kafka's RecordBatch v2.

use bytes::Bytes;

use crate::record::{Header, Record, StoredRecord};

/// Size of the fixed batch header.
pub(crate) const HEADER_LEN: usize = 38;
/// The only format version written and read.
pub(crate) const MAGIC: u8 = 1;

/// The fixed header of a batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) base_offset: u64,
    pub(crate) length: u32,
    pub(crate) crc: u32,
    pub(crate) magic: u8,
    pub(crate) attributes: u8,
    pub(crate) record_count: u32,
    pub(crate) first_timestamp: i64,
    pub(crate) max_timestamp: i64,
}

impl BatchHeader {
    /// Parses the first [`HEADER_LEN`] bytes of `buf`; `None` if `buf` is shorter.
    pub(crate) fn parse(buf: &[u8]) -> Option<BatchHeader> {
        let h = buf.get(..HEADER_LEN)?;
        Some(BatchHeader {
            base_offset: u64::from_le_bytes(h[0..8].try_into().ok()?),
            length: u32::from_le_bytes(h[8..12].try_into().ok()?),
            crc: u32::from_le_bytes(h[12..16].try_into().ok()?),
            magic: h[16],
            attributes: h[17],
            record_count: u32::from_le_bytes(h[18..22].try_into().ok()?),
            first_timestamp: i64::from_le_bytes(h[22..30].try_into().ok()?),
            max_timestamp: i64::from_le_bytes(h[30..38].try_into().ok()?),
        })
    }

    /// Bytes of the whole batch, header included.
    pub(crate) fn total_len(&self) -> usize {
        12 + self.length as usize
    }

    /// The offset after the batch's last record.
    pub(crate) fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Checks what can be checked without the body: magic, reserved attributes, a non-empty
    /// record count that the length can hold (a record takes at least 7 bytes), timestamps in
    /// order. Every batch the writer produced passes; random bytes almost never do. Returns the
    /// reason on failure.
    pub(crate) fn check_shape(&self) -> Result<(), &'static str> {
        if self.magic != MAGIC {
            return Err("unknown batch format version");
        }
        if self.attributes != 0 {
            return Err("unknown batch attributes");
        }
        if self.record_count == 0 {
            return Err("batch with no records");
        }
        if (self.length as usize) < HEADER_LEN - 12 {
            return Err("batch length shorter than its header");
        }
        if u64::from(self.record_count) * MIN_RECORD_LEN > u64::from(self.length) - (HEADER_LEN as u64 - 12) {
            return Err("more records than the batch length can hold");
        }
        if self.max_timestamp < self.first_timestamp {
            return Err("max timestamp before the first record's");
        }
        Ok(())
    }
}

/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const MIN_RECORD_LEN: u64 = 7;

/// CRC-32C of a whole encoded batch, skipping the CRC field itself.
pub(crate) fn batch_crc(batch: &[u8]) -> u32 {
    let head = crc32c::crc32c(&batch[..12]);
    crc32c::crc32c_append(head, &batch[16..])
}

/// Verifies the CRC of a whole batch (`batch.len() == header.total_len()`).
pub(crate) fn verify(header: &BatchHeader, batch: &[u8]) -> Result<(), &'static str> {
    if batch_crc(batch) == header.crc { Ok(()) } else { Err("CRC-32C mismatch") }
}

/// A batch just encoded into a write buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodedBatch {
    /// Where the batch starts in the buffer.
    pub(crate) start: usize,
    pub(crate) base_offset: u64,
    pub(crate) record_count: u32,
    pub(crate) max_timestamp: i64,
}

/// Encodes `records` as one or more batches appended to `out`, numbering them from
/// `base_offset`. A batch is closed before it would grow past `max_batch_bytes`. Records get
/// `now_ms` as their timestamp when they have none, or every one of them under `log_append_time`
/// ([`TimestampType::LogAppendTime`](crate::TimestampType::LogAppendTime)).
///
/// Returns the encoded size of a record that alone exceeds `max_batch_bytes`; nothing of the
/// call is then left in `out`.
pub(crate) fn encode(
    records: &[Record],
    base_offset: u64,
    now_ms: i64,
    log_append_time: bool,
    max_batch_bytes: usize,
    out: &mut Vec<u8>,
    batches: &mut Vec<EncodedBatch>,
) -> Result<(), usize> {
    let Some(first) = records.first() else { return Ok(()) };
    let stamp = |r: &Record| if log_append_time { now_ms } else { r.timestamp.unwrap_or(now_ms) };
    let (initial_len, initial_batches) = (out.len(), batches.len());
    let mut batch = OpenBatch::start(out, base_offset, stamp(first));
    for (next, record) in (base_offset..).zip(records) {
        let ts = stamp(record);
        let mut size = record_size(record, ts.wrapping_sub(batch.first_timestamp), next - batch.base_offset);
        if out.len() - batch.start + framed_len(size) > max_batch_bytes {
            // The first record of a batch has zero deltas, so this is its size in a batch alone.
            let alone = HEADER_LEN + framed_len(record_size(record, 0, 0));
            if alone > max_batch_bytes {
                out.truncate(initial_len);
                batches.truncate(initial_batches);
                return Err(alone);
            }
            batches.push(batch.finish(out));
            batch = OpenBatch::start(out, next, ts);
            size = record_size(record, 0, 0);
        }
        write_record(out, record, size, ts.wrapping_sub(batch.first_timestamp), next - batch.base_offset);
        batch.add(ts);
    }
    batches.push(batch.finish(out));
    Ok(())
}

struct OpenBatch {
    start: usize,
    base_offset: u64,
    first_timestamp: i64,
    max_timestamp: i64,
    count: u32,
}

impl OpenBatch {
    fn start(out: &mut Vec<u8>, base_offset: u64, first_timestamp: i64) -> OpenBatch {
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        OpenBatch { start, base_offset, first_timestamp, max_timestamp: first_timestamp, count: 0 }
    }

    fn add(&mut self, ts: i64) {
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(ts);
    }

    fn finish(&self, out: &mut [u8]) -> EncodedBatch {
        let batch = &mut out[self.start..];
        let length = (batch.len() - 12) as u32;
        batch[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        batch[8..12].copy_from_slice(&length.to_le_bytes());
        batch[16] = MAGIC;
        batch[17] = 0;
        batch[18..22].copy_from_slice(&self.count.to_le_bytes());
        batch[22..30].copy_from_slice(&self.first_timestamp.to_le_bytes());
        batch[30..38].copy_from_slice(&self.max_timestamp.to_le_bytes());
        let crc = batch_crc(batch);
        batch[12..16].copy_from_slice(&crc.to_le_bytes());
        EncodedBatch {
            start: self.start,
            base_offset: self.base_offset,
            record_count: self.count,
            max_timestamp: self.max_timestamp,
        }
    }
}

fn framed_len(size: usize) -> usize {
    size + varint_len(size as i64)
}

fn opt_len(b: Option<&[u8]>) -> usize {
    b.map_or(1, |b| varint_len(b.len() as i64) + b.len())
}

/// Size of a record's body (everything after its length varint).
fn record_size(r: &Record, ts_delta: i64, offset_delta: u64) -> usize {
    let mut n = 1 + varint_len(ts_delta) + varint_len(offset_delta as i64);
    n += opt_len(r.key.as_deref());
    n += varint_len(r.value.len() as i64) + r.value.len();
    n += varint_len(r.headers.len() as i64);
    for h in &r.headers {
        n += varint_len(h.key.len() as i64) + h.key.len();
        n += opt_len(h.value.as_deref());
    }
    n
}

fn write_record(out: &mut Vec<u8>, r: &Record, size: usize, ts_delta: i64, offset_delta: u64) {
    // The fields before the value are a handful of varints: gather them on the stack and copy
    // them with the key and the value, three copies instead of one per field.
    out.reserve(size + 10);
    let mut prefix = Prefix::default();
    prefix.varint(size as i64);
    prefix.byte(0);
    prefix.varint(ts_delta);
    prefix.varint(offset_delta as i64);
    match &r.key {
        None => prefix.varint(-1),
        Some(key) => {
            prefix.varint(key.len() as i64);
            prefix.drain_into(out);
            out.extend_from_slice(key);
        }
    }
    prefix.varint(r.value.len() as i64);
    prefix.drain_into(out);
    out.extend_from_slice(&r.value);
    put_varint(out, r.headers.len() as i64);
    for h in &r.headers {
        put_varint(out, h.key.len() as i64);
        out.extend_from_slice(h.key.as_bytes());
        put_opt(out, h.value.as_deref());
    }
}

/// A few encoded varints on the stack (at most five of ten bytes, and the attributes byte).
struct Prefix {
    buf: [u8; 64],
    len: usize,
}

impl Default for Prefix {
    fn default() -> Self {
        Prefix { buf: [0; 64], len: 0 }
    }
}

impl Prefix {
    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn varint(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.byte((z as u8) | 0x80);
            z >>= 7;
        }
        self.byte(z as u8);
    }

    fn drain_into(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf[..self.len]);
        self.len = 0;
    }
}

fn put_opt(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// Bytes a zigzag varint of `v` takes.
pub(crate) fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes a zigzag LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A bounds-checked reader over a batch's record bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<i64, &'static str> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("record truncated inside a varint")?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits");
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn len(&mut self) -> Result<Option<usize>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            n if n >= 0 && (n as usize) <= self.buf.len() - self.pos => Ok(Some(n as usize)),
            _ => Err("record field length out of bounds"),
        }
    }

    fn take(&mut self, n: usize) -> std::ops::Range<usize> {
        let r = self.pos..self.pos + n;
        self.pos += n;
        r
    }
}

/// Decodes the records of a verified batch (`batch` is the whole batch, header included),
/// pushing those with offset `>= from_offset` onto `out`. Keys and values are slices of `batch`.
pub(crate) fn decode(
    header: &BatchHeader,
    batch: &Bytes,
    from_offset: u64,
    out: &mut Vec<StoredRecord>,
) -> Result<(), &'static str> {
    let mut c = Cursor { buf: batch, pos: HEADER_LEN };
    for i in 0..u64::from(header.record_count) {
        let len = c.len()?.ok_or("negative record length")?;
        let end = c.pos + len;
        let offset = header.base_offset + i;
        if offset < from_offset {
            c.pos = end;
            continue;
        }
        let mut r = Cursor { buf: &batch[..end], pos: c.pos };
        r.pos += 1; // attributes
        let ts_delta = r.varint()?;
        let offset_delta = r.varint()?;
        if offset_delta != i as i64 {
            return Err("record offset delta out of sequence");
        }
        let key = r.len()?.map(|n| batch.slice(r.take(n)));
        let value_len = r.len()?.ok_or("record without a value")?;
        let value = batch.slice(r.take(value_len));
        let header_count = r.varint()?;
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let n = r.len()?.ok_or("header without a name")?;
            let name = std::str::from_utf8(&batch[r.take(n)]).map_err(|_| "header name is not UTF-8")?;
            let value = r.len()?.map(|n| batch.slice(r.take(n)));
            headers.push(Header { key: name.to_owned(), value });
        }
        if r.pos != end {
            return Err("record length does not match its fields");
        }
        out.push(StoredRecord {
            offset,
            timestamp: header.first_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        });
        c.pos = end;
    }
    if c.pos != batch.len() {
        return Err("batch length does not match its records");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_sizes() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN, 1 << 40] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "length of {v}");
            let mut c = Cursor { buf: &out, pos: 0 };
            assert_eq!(c.varint(), Ok(v));
            assert_eq!(c.pos, out.len());
        }
        // Kafka's zigzag: 0 -> 0, -1 -> 1, 1 -> 2, 300 -> [0xd8, 0x04].
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xd8, 0x04]);
    }

    #[test]
    fn batch_round_trip_with_keys_headers_and_timestamps() {
        let records = vec![
            Record::new("a").with_key("k1").with_timestamp(1_000),
            Record::new("").with_timestamp(900),
            Record::new("ccc").with_header("h", Some(Bytes::from_static(b"v"))).with_header("n", None),
            Record::new(vec![7u8; 300]).with_key(""),
        ];
        let mut out = Vec::new();
        let mut batches = Vec::new();
        encode(&records, 42, 5_000, false, 1 << 20, &mut out, &mut batches).unwrap();
        assert_eq!(batches.len(), 1);
        let header = BatchHeader::parse(&out).unwrap();
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.record_count, 4);
        assert_eq!(header.total_len(), out.len());
        assert_eq!(header.max_timestamp, 5_000);
        verify(&header, &out).unwrap();

        let bytes = Bytes::from(out);
        let mut got = Vec::new();
        decode(&header, &bytes, 0, &mut got).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(got[0].timestamp, 1_000);
        assert_eq!(got[1].timestamp, 900);
        assert_eq!(got[1].key, None);
        assert_eq!(got[2].timestamp, 5_000);
        assert_eq!(got[2].headers[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(got[2].headers[1].value, None);
        assert_eq!(got[3].key.as_deref(), Some(&b""[..]));
        assert_eq!(got[3].value.len(), 300);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![42, 43, 44, 45]);

        let mut tail = Vec::new();
        decode(&header, &bytes, 44, &mut tail).unwrap();
        assert_eq!(tail.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![44, 45]);
    }

    #[test]
    fn batches_split_at_max_size_and_oversize_record_is_rejected() {
        let records: Vec<Record> = (0..100).map(|_| Record::new(vec![1u8; 100]).with_timestamp(1)).collect();
        let mut out = Vec::new();
        let mut batches = Vec::new();
        encode(&records, 0, 0, false, 1_000, &mut out, &mut batches).unwrap();
        assert!(batches.len() > 10, "{} batches", batches.len());
        let mut next = 0;
        for (i, b) in batches.iter().enumerate() {
            let end = batches.get(i + 1).map_or(out.len(), |n| n.start);
            assert!(end - b.start <= 1_000);
            let h = BatchHeader::parse(&out[b.start..]).unwrap();
            assert_eq!(h.base_offset, next);
            verify(&h, &out[b.start..end]).unwrap();
            next = h.next_offset();
        }
        assert_eq!(next, 100);

        let mut out = vec![9u8; 3];
        let mut batches = Vec::new();
        let err = encode(&[Record::new(vec![0u8; 2_000])], 0, 0, false, 1_000, &mut out, &mut batches);
        assert!(matches!(err, Err(n) if n > 2_000));
        assert_eq!(out, vec![9u8; 3], "a rejected call leaves the buffer as it was");
        assert!(batches.is_empty());
    }

    #[test]
    fn any_flipped_byte_fails_the_crc() {
        let mut out = Vec::new();
        encode(&[Record::new("hello").with_key("k")], 7, 1, false, 1 << 20, &mut out, &mut Vec::new())
            .unwrap();
        for i in (0..out.len()).filter(|i| !(12..16).contains(i)) {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            let stored = BatchHeader::parse(&out).unwrap().crc;
            assert_ne!(batch_crc(&bad), stored, "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn garbage_never_panics_the_decoder() {
        let mut out = Vec::new();
        encode(&[Record::new("hello").with_key("k")], 0, 1, false, 1 << 20, &mut out, &mut Vec::new())
            .unwrap();
        let header = BatchHeader::parse(&out).unwrap();
        for i in HEADER_LEN..out.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = out.clone();
                bad[i] = v;
                let _ = decode(&header, &Bytes::from(bad), 0, &mut Vec::new());
            }
        }
    }
}
