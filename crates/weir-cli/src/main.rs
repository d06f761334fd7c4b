//! The `weir` command-line tool: create and inspect topics, append lines from stdin, print
//! records, and inspect consumer groups, on one log directory. `weir --help` has the details;
//! the `cli` module documents the output formats and exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_tracing(args.log_format);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit_code(&e);
            if code != ExitCode::SUCCESS {
                // If stderr is gone too, the exit code still says what happened.
                let _ = cli::output::note(format_args!("weir: error: {}", causes(&e)));
            }
            code
        }
    }
}

/// The error and its causes, `: `-separated, each said once: an error whose message already
/// ends with its cause's (as the runtime's connector errors do) does not repeat it.
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}
