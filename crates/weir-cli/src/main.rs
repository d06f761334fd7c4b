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
                let _ = cli::output::note(format_args!("weir: error: {e:#}"));
            }
            code
        }
    }
}
