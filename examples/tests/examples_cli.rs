//! The built example programs, run as a user runs them: `--help` prints help (and does
//! nothing else), and a redirected stderr gets no ANSI escapes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLES: [&str; 4] = ["quickstart", "monitoring", "log_analytics", "ml_features"];

mod built;

fn example(name: &str) -> PathBuf {
    built::example(name, None)
}

fn run(name: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(example(name));
    cmd.args(args).current_dir(cwd).env_remove("WEIR_DIR").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_example_prints_help_and_does_nothing_else() {
    for name in EXAMPLES {
        let cwd = tempfile::tempdir().unwrap();
        let out = run(name, &["--help"], cwd.path(), &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} --help: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Usage:") && stdout.contains("--help"), "{name} --help printed:\n{stdout}");
        let created: Vec<_> =
            std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(created.is_empty(), "{name} --help created {created:?}");
    }
}

#[test]
fn examples_write_no_ansi_escapes_to_a_redirected_stderr() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(
        "log_analytics",
        &["--events", "3000", "--dir", "data", "--out", "out", "--metrics-addr", "127.0.0.1:0", "--quiet"],
        cwd.path(),
        &[("RUST_LOG", "info")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "log_analytics: {}\n{stderr}", out.status);
    assert!(stderr.contains(" INFO "), "no log messages to check:\n{stderr}");
    assert!(!out.stderr.contains(&0x1b), "ANSI escapes in a redirected stderr:\n{stderr:?}");
    let url = stderr.lines().find_map(|l| l.strip_prefix("metrics        http://"));
    assert!(url.is_some_and(|u| u.starts_with("127.0.0.1:") && u.ends_with("/metrics")), "{stderr}");
    let out = run("quickstart", &["data"], cwd.path(), &[("RUST_LOG", "info")]);
    assert!(out.status.success(), "quickstart: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stderr.contains(&0x1b), "ANSI escapes in quickstart's stderr");
}

#[test]
fn log_analytics_prints_one_table_and_a_runnable_dead_letter_command() {
    let cwd = tempfile::tempdir().unwrap();
    let good = r#"10.0.0.1 - - [24/Nov/2026:00:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" "198.51.100.4""#;
    std::fs::write(cwd.path().join("in.log"), format!("{good}\n{good}\nnot a log line\n")).unwrap();
    let args = ["--input", "in.log", "--dir", "data", "--out", "out", "--metrics-addr", "127.0.0.1:0"];
    let out = run("log_analytics", &args, cwd.path(), &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches(" requests, 5xx ").count(), 1, "{stdout}");
    assert!(stdout.starts_with("2026-11-24T00:00Z – 00:01Z  2 requests, 5xx 0.0 %\n"), "{stdout}");
    assert!(stderr.contains("\nmalformed      1\n"), "{stderr}");
    let command = stderr
        .lines()
        .find(|l| l.contains(" consume access_stats.dlq"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let program = command.split_whitespace().next().unwrap();
    assert!(program == "cargo" || Path::new(program).is_file(), "not runnable: {command}");
    assert!(command.contains("--dir data consume access_stats.dlq"), "{command}");
}
