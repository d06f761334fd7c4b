//! What Weir's benchmarks share: argument parsing, where data goes, target reporting. The
//! benchmarks themselves live beside this file, one per file; each prints what it measured.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A benchmark's command line: `[--quick] [FILTER]`.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// Run a tiny version (a smoke test; figures not meaningful).
    pub quick: bool,
    /// Only rows whose id contains this.
    pub filter: Option<String>,
}

impl Args {
    /// Parses the process's arguments; prints `usage` and exits on `--help`.
    ///
    /// # Errors
    ///
    /// An unknown flag or more than one filter.
    pub fn parse(usage: &str) -> Result<Args> {
        let mut args = Args::default();
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                // Cargo passes `--bench` to harness-less bench binaries.
                "--bench" => {}
                "--quick" => args.quick = true,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                flag if flag.starts_with('-') => bail!("unknown flag {flag}\n{usage}"),
                filter => {
                    if args.filter.replace(filter.to_owned()).is_some() {
                        bail!("more than one filter given\n{usage}");
                    }
                }
            }
        }
        Ok(args)
    }

    /// Whether the row `id` is selected by the filter.
    pub fn selects(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}

/// A target a figure is held against, and what was measured.
#[derive(Debug, Clone)]
pub struct Target {
    /// The row and the target, e.g. `"append/v100/b10000/none: ≥ 2,000,000 records/s"`.
    pub what: String,
    /// The figure, as printed.
    pub measured: String,
    /// Whether the target was met.
    pub met: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:<70} measured {}", pass(self.met), self.what, self.measured)
    }
}

/// `PASS` or `MISS`.
pub fn pass(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

/// The directory benchmark data goes to: `$WEIR_BENCH_DIR`, else `default` (created).
///
/// # Errors
///
/// The directory cannot be created.
pub fn bench_root(default: PathBuf) -> Result<PathBuf> {
    let root = std::env::var_os("WEIR_BENCH_DIR").map_or(default, PathBuf::from);
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    Ok(root.canonicalize()?)
}

/// The file system `path` is on, warning when it is in memory.
pub fn describe_fs(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "file system unknown".to_owned();
    };
    let found = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(target).then_some((target.len(), source, fstype))
        })
        .max_by_key(|(len, _, _)| *len);
    match found {
        Some((_, _, fstype)) if fstype == "tmpfs" || fstype == "ramfs" => {
            format!("{fstype}: WARNING, in memory; set WEIR_BENCH_DIR to a directory on a real disk")
        }
        Some((_, source, fstype)) => format!("{fstype} on {source}"),
        None => "file system unknown".to_owned(),
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A rate with a k/M/G suffix.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Prints the targets and the closing line every benchmark ends with.
pub fn print_summary(targets: &[Target], started: std::time::Instant) {
    if !targets.is_empty() {
        println!();
        println!("targets");
        for t in targets {
            println!("  {t}");
        }
    }
    println!();
    println!("total time {:.1} s; load average at end: {}", started.elapsed().as_secs_f64(), load_average());
}
