//! `weir sql`: runs a file of streaming SQL statements, or one query.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use weir::log::{Log, LogOptions};
use weir::sql::{Script, ScriptOptions, StreamContext};

/// Arguments of `weir sql`.
#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// A file of statements: CREATE SOURCE, CREATE SINK ... AS SELECT, EXPLAIN, queries.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A query (or EXPLAIN) to run after the file's statements; its rows print as tables.
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    execute: Option<String>,
    /// Subtasks per operator.
    #[arg(long, default_value_t = 2)]
    parallelism: usize,
    /// With -e: keep reading log sources as they grow instead of stopping at their current end.
    #[arg(long)]
    follow: bool,
}

/// Runs `weir sql`.
pub(crate) fn run(dir: &std::path::Path, args: &SqlArgs) -> Result<()> {
    let mut text = match &args.file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        None => String::new(),
    };
    if let Some(q) = &args.execute {
        text.push_str(";\n");
        text.push_str(q);
    }
    if text.trim().is_empty() {
        bail!("nothing to run: give -f FILE and/or -e SQL");
    }
    let script = Script::parse(&text)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let log = Log::open(dir, LogOptions::default())?;
        let mut ctx = StreamContext::with_log(log);
        let options = ScriptOptions {
            name: "sql".into(),
            parallelism: args.parallelism,
            bounded: args.execute.is_some() && !args.follow,
            metrics: None,
        };
        let (explained, report) = script.run(&mut ctx, &options).await?;
        for e in explained {
            println!("{e}");
        }
        if let Some(report) = report.filter(|r| r.dead_letters > 0 || r.late_records > 0) {
            eprintln!(
                "weir: {} dead letters (weir --dir {} consume sql.dlq), {} late records",
                report.dead_letters,
                dir.display(),
                report.late_records
            );
        }
        Ok(())
    })
}
