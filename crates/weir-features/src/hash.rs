//! The stable 64-bit hash of category values.
//!
//! A value is encoded with postcard (a specified format) and the bytes hashed with a fixed
//! multiply-xorshift hash, so a value hashes alike in every run, process and build: hashes
//! are kept in checkpoints and in HyperLogLog sketches.

use serde::Serialize;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's encoding buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    SCRATCH.with(|s| {
        let mut buf = std::mem::take(&mut *s.borrow_mut());
        let r = f(&mut buf);
        *s.borrow_mut() = buf;
        r
    })
}

/// The hash of `value`'s postcard encoding, encoded into `scratch`. A value postcard cannot
/// encode (a sequence of unknown length) hashes as the empty encoding.
pub(crate) fn hash_value<V: Serialize + ?Sized>(scratch: &mut Vec<u8>, value: &V) -> u64 {
    let mut buf = std::mem::take(scratch);
    buf.clear();
    let bytes = postcard::to_extend(value, buf).unwrap_or_default();
    let h = hash_bytes(&bytes);
    *scratch = bytes;
    h
}

/// SplitMix64's finalizer: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of `bytes`: each 8-byte little-endian word (the last zero-padded) mixed into
/// the state, then the length.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(w)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    mix(h ^ bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_hash_alike_in_every_build() {
        // Pinned: hashes live in checkpoints, so a change here must be a format change.
        assert_eq!(with_scratch(|s| hash_value(s, "m3")), 0xf187_7ebd_6cb9_26c4_u64);
        assert_ne!(hash_bytes(b"a"), hash_bytes(b"a\0"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
    }
}
