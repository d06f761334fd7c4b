//! Topic and group names.
//!
//! Names follow Kafka's rule: 1–249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
//! A valid name is therefore always a single, harmless path component; the log uses it as a
//! directory or file name only after this check.

use crate::error::{Error, Result};

/// Longest allowed name, as in Kafka.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a name against the rule; `kind` (`"topic"` or `"group"`) goes into the error.
pub(crate) fn validate(kind: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not allowed")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName { kind, name: name.to_owned(), reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_names() {
        for ok in ["a", "access", "access_stats.dlq", "A-b_c.9", "..a", &"x".repeat(249)] {
            assert!(validate("topic", ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn rejects_paths_and_odd_characters() {
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "ä", "a\0b", "a\\b", &"x".repeat(250)] {
            let err = validate("topic", bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { kind: "topic", .. }), "{bad:?}: {err}");
        }
    }
}
