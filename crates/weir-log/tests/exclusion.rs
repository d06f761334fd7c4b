//! One process per log directory, whatever happens to the `.lock` file: the exclusion is an OS
//! lock on the directory itself, so deleting `.lock` (a common reflex with a stale-looking lock
//! file) while a writer lives does not let a second writer in.
//!
//! The processes are this test binary, run with only [`exclusion_child`] selected and
//! `WEIR_EXCLUSION_CHILD_DIR` set.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use weir_log::{Error, Log, LogOptions, Record, TopicConfig};

const CHILD_DIR_ENV: &str = "WEIR_EXCLUSION_CHILD_DIR";

/// The child: opens the log (printing `opened` or `locked`), appends one record, and, if it
/// opened, holds the log until its stdin closes.
#[test]
fn exclusion_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    println!();
    match Log::open(&dir, LogOptions::default()) {
        Ok(log) => {
            let topic = log.topic_or_create("t", TopicConfig::default()).unwrap();
            topic.append(0, &[Record::new("from a child")]).unwrap();
            println!("opened");
            std::io::stdout().flush().unwrap();
            let mut rest = Vec::new();
            std::io::stdin().read_to_end(&mut rest).unwrap();
        }
        Err(Error::Locked { .. }) => println!("locked"),
        Err(e) => println!("error {e}"),
    }
}

/// Starts a child on `dir` and returns it with its answer (`opened`, `locked`, `error …`); a
/// thread drains the rest of its output.
fn child(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "exclusion_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let answer = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l == "opened" || l == "locked" || l.starts_with("error"))
        .unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    (child, answer)
}

#[test]
fn deleting_the_lock_file_does_not_let_a_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let (mut owner, first) = child(dir.path());
    assert_eq!(first, "opened");
    std::fs::remove_file(dir.path().join(".lock")).unwrap();

    // Another process is refused, and so is this one.
    let (mut second, answer) = child(dir.path());
    assert_eq!(answer, "locked", "a second process opened the log after .lock was deleted");
    assert!(second.wait().unwrap().success());
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");

    // Once the owner is gone, the directory opens, with the owner's record only.
    drop(owner.stdin.take());
    assert!(owner.wait().unwrap().success());
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(log.topic("t").unwrap().end_offset(0).unwrap(), 1);
    assert!(dir.path().join(".lock").exists());
}

#[test]
fn the_lock_error_names_the_owning_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut owner, first) = child(dir.path());
    assert_eq!(first, "opened");
    let err = Log::open(dir.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { pid: Some(pid), .. } if pid == owner.id()), "{err:?}");
    assert!(err.to_string().contains(&format!("process {}", owner.id())), "{err}");
    drop(owner.stdin.take());
    assert!(owner.wait().unwrap().success());
}
