//! Test support shared by Weir's crash tests and benchmarks. Not published; other crates take
//! it as a dev-dependency (the benchmarks, which are not published either, as a dependency).
//!
//! - [`Rng`]: a small seeded generator (SplitMix64), so a failure reproduces from its seed.
//! - [`ChildTest`]: part of a test run in a child process — the test binary started again,
//!   running one test — so that the parent can kill it with SIGKILL at a chosen moment and
//!   check what survived.
//! - [`newest_checkpoint`] and [`missing`]: what crash tests of checkpointed jobs look at.
//! - [`kafka::broker`]: a real Apache Kafka broker, one per test process, or a printed reason to
//!   skip (outside CI).
//! - [`prometheus::Scrape`]: the samples of a scrape of `/metrics`, by name and labels.

#![allow(clippy::unwrap_used)] // Test support fails loudly by design.

pub mod kafka;
pub mod prometheus;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command};

/// The wall clock in milliseconds since the Unix epoch, as the log and the runtime stamp
/// records.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_millis() as i64)
}

/// A small deterministic generator (SplitMix64): every seed, 0 included, gives a good sequence.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The generator seeded from the environment variable `var` if it holds a number, else from
    /// the clock; prints the seed and how to repeat it, so a failing run can be rerun.
    pub fn from_env_or_clock(var: &str) -> Rng {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("seed {seed} ({var}={seed} repeats it)");
        Rng(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Part of a test that runs in a child process: the current test binary started again with
/// `--exact <test>` and the environment variable `env` set.
///
/// The child's half is an ordinary `#[test]` function named `test` that starts with
/// `let Some(value) = CHILD.value() else { return };`: in a normal run it returns at once; in
/// the child it does the work (runs a job, appends records) until it ends or is killed.
#[derive(Debug, Clone, Copy)]
pub struct ChildTest {
    test: &'static str,
    env: &'static str,
}

impl ChildTest {
    /// The child is the test function `test`; it finds its argument in `env`.
    pub const fn new(test: &'static str, env: &'static str) -> ChildTest {
        ChildTest { test, env }
    }

    /// In the child: the value the parent passed. `None` in a normal test run.
    pub fn value(&self) -> Option<String> {
        std::env::var(self.env).ok()
    }

    /// Whether this process is the child.
    pub fn is_child(&self) -> bool {
        self.value().is_some()
    }

    /// The command that starts the child with `value`; add environment variables before
    /// spawning it.
    ///
    /// # Panics
    ///
    /// The path of the test binary is unknown.
    pub fn command(&self, value: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", self.test, "--nocapture", "--test-threads", "1"]).env(self.env, value);
        cmd
    }

    /// Starts the child with `value`.
    ///
    /// # Panics
    ///
    /// The child cannot be started.
    pub fn spawn(&self, value: impl AsRef<OsStr>) -> Child {
        self.command(value).spawn().unwrap()
    }
}

/// Waits for `child` to end.
///
/// # Panics
///
/// The child failed (its test failed), or it cannot be waited for.
pub fn run_to_end(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "the child process failed: {status}");
}

/// The id of the newest complete checkpoint (one with a manifest) under `dir/checkpoints`; 0 if
/// none.
pub fn newest_checkpoint(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("_manifest.json").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Up to 5 items of `a` not in `b` (both sorted): what an assertion message shows of a
/// difference.
pub fn missing<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().filter(|x| b.binary_search(x).is_err()).take(5).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_numbers_and_bounds_hold() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<u64> = (0..100).map(|_| a.below(10)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(10)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 10));
        assert!((0..100).all(|_| (3..=5).contains(&a.range(3, 5))));
        assert_ne!(Rng(0).next_u64(), 0, "seed 0 works");
    }

    #[test]
    fn missing_lists_what_the_first_has_and_the_second_lacks() {
        assert_eq!(missing(&[1, 2, 3, 4], &[2, 4]), [1, 3]);
    }
}
