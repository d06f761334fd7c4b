//! Helpers shared by the example programs, which live beside this directory, one per file (or
//! directory).

use std::io::IsTerminal;

/// Installs a `tracing` subscriber that writes to stderr, filtered by `RUST_LOG` (else by
/// `default_filter`, e.g. `"warn"`), in colour only when stderr is a terminal: a redirected
/// stderr gets plain text, without ANSI escapes.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
