//! Signal handling is the embedding program's choice: a pipeline built with the defaults leaves
//! Ctrl-C to its host; one built with `handle_signals(true)` drains and stops on it.
//!
//! Each test runs itself again as a child process (the variable [`CHILD`] names the test), waits
//! until the child's pipeline has data flowing, sends it SIGINT and checks how it ended.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use weir_runtime::{DiscardSink, Pipeline};

/// Set in the child to the name of the test it runs.
const CHILD: &str = "WEIR_SIGNALS_TEST_CHILD";
/// What the child prints once its first record passed the pipeline.
const READY: &str = "pipeline running";
/// What the child prints when its pipeline returned.
const STOPPED: &str = "pipeline stopped gracefully";

/// In the child: runs an endless pipeline (with `handle_signals(handle)` when given) and
/// prints [`STOPPED`] if it ever returns.
fn child(handle: Option<bool>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut builder = Pipeline::builder("signals").parallelism(1);
        if let Some(handle) = handle {
            builder = builder.handle_signals(handle);
        }
        let p = builder.build().unwrap();
        let announced = AtomicBool::new(false);
        p.source(common::Endless)
            .inspect(move |_| {
                if !announced.swap(true, Ordering::Relaxed) {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{READY}").unwrap();
                    out.flush().unwrap();
                }
            })
            .sink(DiscardSink);
        p.run().await.unwrap();
        println!("{STOPPED}");
    });
}

/// In the parent: runs test `name` as a child, sends it SIGINT once its pipeline runs, and
/// returns how it ended and what it printed.
fn interrupt_child(name: &str) -> (ExitStatus, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.ends_with(READY) {
            break;
        }
    }
    assert!(printed.contains(READY), "the child never ran its pipeline: {printed}");
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    for line in lines {
        printed.push_str(&line.unwrap());
        printed.push('\n');
    }
    (child.wait().unwrap(), printed)
}

#[test]
fn a_pipeline_built_with_the_defaults_leaves_ctrl_c_to_its_host() {
    const NAME: &str = "a_pipeline_built_with_the_defaults_leaves_ctrl_c_to_its_host";
    if std::env::var(CHILD).as_deref() == Ok(NAME) {
        return child(None);
    }
    let (status, printed) = interrupt_child(NAME);
    assert_eq!(status.signal(), Some(2), "the child was not killed by SIGINT: {status}; {printed}");
    assert!(!printed.contains(STOPPED), "{printed}");
}

#[test]
fn a_pipeline_that_handles_signals_stops_gracefully_on_ctrl_c() {
    const NAME: &str = "a_pipeline_that_handles_signals_stops_gracefully_on_ctrl_c";
    if std::env::var(CHILD).as_deref() == Ok(NAME) {
        return child(Some(true));
    }
    let (status, printed) = interrupt_child(NAME);
    assert!(status.success(), "{status}; {printed}");
    assert!(printed.contains(STOPPED), "{printed}");
}
