//! Checksummed metadata files: the JSON files (`topic.json`, `groups/<group>.json`) and the
//! recorded offsets (`log-start-offset`, `end-offset`).
//!
//! A JSON file is the pretty-printed object with one more member, `"crc32c"`: the CRC-32C of the
//! object's canonical form without that member (compact JSON, members sorted by name at every
//! level, no whitespace), so the checksum does not depend on layout or member order. An offset
//! file is `<decimal offset> crc32c=<8 lowercase hex digits>\n`, the CRC-32C of the decimal
//! digits.
//!
//! Invariant: a file whose checksum does not match its contents is never used; a file without a
//! checksum (written before checksums existed: a JSON object without `"crc32c"`, or a bare
//! decimal number) is accepted as it is, and gets one the next time it is written. Every file is
//! replaced atomically ([`fsutil::write_atomic`]).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fsutil;

/// The member of a JSON metadata file that holds its checksum.
const CRC_FIELD: &str = "crc32c";

/// `value` as a checksummed JSON file (see the module docs).
pub(crate) fn to_json<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Sealed<'a, T> {
        #[serde(flatten)]
        value: &'a T,
        crc32c: u32,
    }
    let error = |e: serde_json::Error| Error::Metadata { path: path.to_owned(), reason: e.to_string() };
    let crc32c = crc32c::crc32c(&canonical(&serde_json::to_value(value).map_err(error)?));
    serde_json::to_vec_pretty(&Sealed { value, crc32c }).map_err(error)
}

/// Writes `value` to `path` as a checksummed JSON file, atomically.
pub(crate) fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    fsutil::write_atomic(path, &to_json(value, path)?)
}

/// Parses a JSON metadata file read from `path`, verifying its checksum if it has one.
/// [`Error::Metadata`] naming `path` if it does not parse or its checksum does not match.
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    let error = |reason: String| Error::Metadata { path: path.to_owned(), reason };
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| error(e.to_string()))?;
    if let Some(map) = value.as_object_mut()
        && let Some(stored) = map.remove(CRC_FIELD)
    {
        let stored = stored
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| error(format!("`{CRC_FIELD}` is not a 32-bit checksum: {stored}")))?;
        let computed = crc32c::crc32c(&canonical(&value));
        if stored != computed {
            return Err(error(format!(
                "checksum mismatch: the file says {CRC_FIELD} {stored:#010x}, its contents have {computed:#010x}"
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| error(e.to_string()))
}

/// The canonical form of a JSON value: compact, object members sorted by name.
fn canonical(value: &Value) -> Vec<u8> {
    fn write(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (name, member)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(&Value::String(name.clone()), out);
                    out.push(b':');
                    write(member, out);
                }
                out.push(b'}');
            }
            // Scalars: serde_json's own compact rendering (cannot fail for a `Value`).
            scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
        }
    }
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// The contents of an offset file recording `offset` (see the module docs).
pub(crate) fn offset_text(offset: u64) -> String {
    let digits = offset.to_string();
    format!("{digits} crc32c={:08x}\n", crc32c::crc32c(digits.as_bytes()))
}

/// Writes an offset file recording `offset` to `path`, atomically.
pub(crate) fn write_offset(path: &Path, offset: u64) -> Result<()> {
    fsutil::write_atomic(path, offset_text(offset).as_bytes())
}

/// The offset an offset file records: exactly [`offset_text`] of it, or (a file written before
/// checksums) a bare decimal number. `None` for anything else (a damaged file).
pub(crate) fn parse_offset(text: &str) -> Option<u64> {
    match text.split_once(' ') {
        Some((digits, _)) => digits.parse().ok().filter(|&offset| offset_text(offset) == text),
        None => text.trim().parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        count: u64,
        limit: Option<u64>,
    }

    #[test]
    fn checksummed_json_round_trips_and_legacy_json_is_accepted() {
        let path = Path::new("sample.json");
        let sample = Sample { name: "orders".to_owned(), count: 42, limit: None };
        let bytes = to_json(&sample, path).unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains("\"crc32c\""));
        assert_eq!(from_json::<Sample>(&bytes, path).unwrap(), sample);
        let legacy = serde_json::to_vec_pretty(&sample).unwrap();
        assert_eq!(from_json::<Sample>(&legacy, path).unwrap(), sample);
        // Layout does not matter, contents do.
        let compact = String::from_utf8(bytes).unwrap().replace(['\n', ' '], "");
        assert_eq!(from_json::<Sample>(compact.as_bytes(), path).unwrap(), sample);
        let changed = compact.replace("42", "43");
        assert!(matches!(from_json::<Sample>(changed.as_bytes(), path), Err(Error::Metadata { .. })));
    }

    #[test]
    fn offset_files_round_trip_and_bare_numbers_are_accepted() {
        for offset in [0, 7, 1234, u64::MAX] {
            assert_eq!(parse_offset(&offset_text(offset)), Some(offset));
        }
        assert_eq!(parse_offset("230\n"), Some(230));
        assert_eq!(parse_offset(&offset_text(230).replace("230", "231")), None);
        assert_eq!(parse_offset("230 crc32c=zz\n"), None);
    }
}
