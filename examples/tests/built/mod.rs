//! The example programs as built binaries, for the tests that run them as a user does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built example `name`, in the profile directory this test runs from. `cargo test` builds
/// the examples; a filtered run (`--test ...`) builds a missing one here. With `features` (e.g.
/// `kafka`) it is always built here, once per test process, since a workspace build may have
/// left one without them.
pub(crate) fn example(name: &str, features: Option<&str>) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("a profile directory");
    let path = profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if (features.is_some() || !path.exists()) && !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "weir-examples", "--example", name]);
        if let Some(features) = features {
            build.args(["--features", features]);
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo");
        assert!(status.success(), "cargo build --example {name} (features {features:?}): {status}");
        built.push(name.to_owned());
    }
    path
}
