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
        // `weir consume … | head`: the reader went away, which is how such a pipeline ends.
        Err(e) if cli::output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
