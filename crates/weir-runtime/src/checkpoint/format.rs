//! The on-disk formats of a checkpoint: one *part file* per part (a source, operator or sink
//! subtask) and one JSON *manifest* listing them.
//!
//! # Part file
//!
//! | offset     | size | content                                                    |
//! |------------|------|------------------------------------------------------------|
//! | 0          | 8    | magic `b"WEIRPART"`                                        |
//! | 8          | 4    | format version, u32 little-endian ([`FORMAT_VERSION`])     |
//! | 12         | 8    | body length `n`, u64 little-endian                         |
//! | 20         | `n`  | body: the postcard encoding of a [`PartSnapshot`]          |
//! | 20 + `n`   | 4    | CRC-32C of every preceding byte, u32 little-endian         |
//!
//! Decoding checks, in this order: the magic, the version (a file of another version is
//! [`FormatError::Version`], which callers refuse rather than treat as corrupt, since a later
//! version may lay the file out differently), the length, the checksum, and that the body
//! decodes with no byte left over. Any damage is an error, never a panic.
//!
//! # Manifest
//!
//! A [`Manifest`], pretty-printed JSON, names the checkpoint and each of its part files with
//! the file's size and CRC-32C (of every byte but the trailer: the value in the trailer, which
//! tells one checkpoint's part from another's). Its `format_version` is read first: another
//! version is [`FormatError::Version`]; JSON that does not parse is corrupt.

use serde::{Deserialize, Serialize};

/// The version of both formats this build writes and reads.
///
/// - 1: the first format (key groups by std's `DefaultHasher`, operator ids by position).
/// - 2: key groups by [`key_hash`](crate::key_hash) (CRC-32C of the key's postcard bytes);
///   operator ids chosen with `Stream::uid` or derived from what is upstream; file sink
///   paths absolute; file sink markers keep a history of commits. Checkpoints of version 1 are
///   refused (their key groups and ids mean something else).
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The first bytes of every part file.
const MAGIC: &[u8; 8] = b"WEIRPART";
/// Magic, version and body length.
const HEADER_LEN: usize = 8 + 4 + 8;
/// The CRC-32C after the body.
const TRAILER_LEN: usize = 4;

/// What one part (a source, operator or sink subtask) saved in a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct PartSnapshot {
    /// Keyed state by key group: (key group, that group's entries, concatenated postcard values).
    pub(crate) keyed: Vec<(u16, Vec<u8>)>,
    /// Operator-wide state (e.g. a window operator's watermark), postcard; empty if none.
    pub(crate) meta: Vec<u8>,
    /// Source positions: (split, position bytes).
    pub(crate) positions: Vec<(u32, Vec<u8>)>,
    /// A sink's pre-committed transactions, oldest first, made visible when the checkpoint
    /// completes: the one of this checkpoint, after those of failed checkpoints before it
    /// (their output is carried forward, never dropped).
    pub(crate) committables: Vec<Vec<u8>>,
}

/// Why bytes are not a readable part file or manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormatError {
    /// The file does not start with the part file magic.
    #[error("not a Weir checkpoint part file (bad magic)")]
    NotAPart,
    /// Written in another format version: refused, not corrupt.
    #[error("written in checkpoint format version {found}; this build reads version {supported}")]
    Version {
        /// The version the file says it is in.
        found: u32,
        /// The version this build reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// The file's length is not what its header says (cut short, or bytes appended).
    #[error("truncated: the file has {found} bytes, its header says {expected}")]
    Truncated {
        /// The length the header implies (saturating).
        expected: u64,
        /// The length of the file.
        found: u64,
    },
    /// The CRC-32C stored in the file does not match its contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The CRC in the file's trailer.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// The checksum is fine but the contents do not decode (a bug, or a hand-edited manifest).
    #[error("undecodable: {0}")]
    Undecodable(String),
}

/// Encodes a part file (see the module docs for the layout).
pub(crate) fn encode_part(part: &PartSnapshot) -> Vec<u8> {
    // Cannot fail: postcard only refuses sequences of unknown length, and every sequence here
    // is a `Vec`; writing to a `Vec` never runs out of room.
    let body = postcard::to_stdvec(part).expect("a PartSnapshot always encodes");
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The CRC-32C a manifest records for a part file: over everything but the part's own trailing
/// CRC, so it identifies the content. (A CRC over the whole file, trailer included, is the same
/// constant for every intact part, and would not tell one checkpoint's part from another's.)
pub(crate) fn content_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(&bytes[..bytes.len().saturating_sub(TRAILER_LEN)])
}

/// Decodes and verifies a part file written by [`encode_part`].
pub(crate) fn decode_part(bytes: &[u8]) -> std::result::Result<PartSnapshot, FormatError> {
    let found = bytes.len() as u64;
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::NotAPart);
    }
    let (Some(version), Some(body_len)) = (le_u32(bytes, 8), le_u64(bytes, 12)) else {
        return Err(FormatError::Truncated { expected: (HEADER_LEN + TRAILER_LEN) as u64, found });
    };
    if version != FORMAT_VERSION {
        return Err(FormatError::Version { found: version, supported: FORMAT_VERSION });
    }
    let expected = body_len.saturating_add((HEADER_LEN + TRAILER_LEN) as u64);
    if expected != found {
        return Err(FormatError::Truncated { expected, found });
    }
    let (covered, trailer) = bytes.split_at(bytes.len() - TRAILER_LEN);
    let stored = le_u32(trailer, 0).unwrap_or_default();
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    match postcard::take_from_bytes::<PartSnapshot>(&covered[HEADER_LEN..]) {
        Ok((part, [])) => Ok(part),
        Ok((_, rest)) => Err(FormatError::Undecodable(format!("{} bytes after the snapshot", rest.len()))),
        Err(e) => Err(FormatError::Undecodable(e.to_string())),
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A checkpoint's manifest: what it is and which part files make it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The format version of the manifest and its part files ([`FORMAT_VERSION`]).
    pub(crate) format_version: u32,
    /// The pipeline's name.
    pub(crate) pipeline: String,
    /// The checkpoint's id (ids rise over a job's life, across restarts).
    pub(crate) id: u64,
    /// Wall clock when the checkpoint completed, ms since the epoch.
    pub(crate) created_ms: i64,
    /// The pipeline's parallelism when it was taken.
    pub(crate) parallelism: u32,
    /// The number of key groups, the highest parallelism it can be restored at.
    pub(crate) max_parallelism: u32,
    /// Whether every source had ended when it was taken (the job's last checkpoint).
    pub(crate) finished: bool,
    /// Its part files.
    pub(crate) parts: Vec<PartEntry>,
}

/// One part file of a checkpoint, as listed in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartEntry {
    /// The operator's stable id, e.g. "window#0" or "source#1".
    pub(crate) uid: String,
    /// The subtask of the operator that wrote it.
    pub(crate) subtask: u32,
    /// The file's name inside the checkpoint's directory.
    pub(crate) file: String,
    /// The file's length in bytes.
    pub(crate) size: u64,
    /// The CRC-32C of the file but its trailer (`content_crc`): the value in the trailer.
    pub(crate) crc32c: u32,
}

/// The one field read before the rest, so that a later version's manifest is recognised as such
/// even if its other fields changed.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

impl Manifest {
    /// The size of all its part files together.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// The manifest as pretty-printed JSON.
    pub(crate) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
    }

    /// Parses a manifest: [`FormatError::Version`] if it is of another format version,
    /// [`FormatError::Undecodable`] if it is not a manifest (e.g. truncated).
    pub(crate) fn from_json(bytes: &[u8]) -> std::result::Result<Manifest, FormatError> {
        let undecodable =
            |e: serde_json::Error| FormatError::Undecodable(format!("invalid manifest JSON: {e}"));
        let VersionOnly { format_version } = serde_json::from_slice(bytes).map_err(undecodable)?;
        if format_version != FORMAT_VERSION {
            return Err(FormatError::Version { found: format_version, supported: FORMAT_VERSION });
        }
        serde_json::from_slice(bytes).map_err(undecodable)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> PartSnapshot {
        PartSnapshot {
            keyed: vec![(3, vec![1, 2, 3]), (1023, vec![9; 40])],
            meta: vec![7, 7],
            positions: vec![(0, b"offset 42".to_vec())],
            committables: vec![b"txn-4".to_vec(), b"txn-5".to_vec()],
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            pipeline: "clicks".into(),
            id: 12,
            created_ms: 1_700_000_000_000,
            parallelism: 2,
            max_parallelism: 1024,
            finished: false,
            parts: vec![
                PartEntry {
                    uid: "window#0".into(),
                    subtask: 0,
                    file: "window_0-0.part".into(),
                    size: 100,
                    crc32c: 1,
                },
                PartEntry {
                    uid: "window#0".into(),
                    subtask: 1,
                    file: "window_0-1.part".into(),
                    size: 23,
                    crc32c: 2,
                },
            ],
        }
    }

    fn snapshots() -> impl Strategy<Value = PartSnapshot> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..48);
        (
            prop::collection::vec((any::<u16>(), bytes()), 0..6),
            bytes(),
            prop::collection::vec((any::<u32>(), bytes()), 0..4),
            prop::collection::vec(bytes(), 0..3),
        )
            .prop_map(|(keyed, meta, positions, committables)| PartSnapshot {
                keyed,
                meta,
                positions,
                committables,
            })
    }

    proptest! {
        #[test]
        fn parts_round_trip(part in snapshots()) {
            let bytes = encode_part(&part);
            prop_assert_eq!(&bytes[..8], MAGIC);
            prop_assert_eq!(decode_part(&bytes), Ok(part));
        }
    }

    #[test]
    fn every_truncation_fails_to_decode() {
        let bytes = encode_part(&sample());
        for n in 0..bytes.len() {
            let got = decode_part(&bytes[..n]);
            assert!(matches!(got, Err(FormatError::Truncated { .. })), "{n} bytes: {got:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode_part(&longer), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn a_flipped_byte_anywhere_fails() {
        let bytes = encode_part(&sample());
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= flip;
                let got = decode_part(&damaged);
                let expected = match i {
                    0..8 => matches!(got, Err(FormatError::NotAPart)),
                    8..12 => matches!(got, Err(FormatError::Version { .. })),
                    12..20 => matches!(got, Err(FormatError::Truncated { .. })),
                    _ => matches!(got, Err(FormatError::Checksum { .. })),
                };
                assert!(expected, "byte {i} ^ {flip:#x}: {got:?}");
            }
        }
    }

    #[test]
    fn another_version_is_a_version_error() {
        let mut bytes = encode_part(&sample());
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_part(&bytes), Err(FormatError::Version { found: 3, supported: FORMAT_VERSION }));
    }

    #[test]
    fn a_valid_checksum_over_a_bad_body_is_undecodable() {
        let mut bytes = encode_part(&PartSnapshot::default());
        // An empty snapshot's body is four zero bytes; now it claims 127 key groups.
        let end = bytes.len() - 4;
        bytes[HEADER_LEN] = 0xff;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_part(&bytes), Err(FormatError::Undecodable(_))));
    }

    #[test]
    fn manifests_round_trip_and_sum_their_parts() {
        let m = manifest();
        let json = m.to_json().unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\n  \"format_version\": 2"), "pretty JSON");
        assert_eq!(Manifest::from_json(&json), Ok(m.clone()));
        assert_eq!(m.total_bytes(), 123);
    }

    #[test]
    fn a_manifest_of_another_version_is_a_version_error() {
        let mut value = serde_json::to_value(manifest()).unwrap();
        value["format_version"] = 3.into();
        value["renamed_in_v3"] = value["parts"].take();
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(
            Manifest::from_json(&json),
            Err(FormatError::Version { found: 3, supported: FORMAT_VERSION })
        );
    }

    #[test]
    fn a_truncated_or_foreign_manifest_is_undecodable() {
        let json = manifest().to_json().unwrap();
        for n in 0..json.len() {
            let got = Manifest::from_json(&json[..n]);
            assert!(matches!(got, Err(FormatError::Undecodable(_))), "{n} bytes: {got:?}");
        }
        assert!(matches!(Manifest::from_json(b"{\"format_version\": 2}"), Err(FormatError::Undecodable(_))));
    }
}
