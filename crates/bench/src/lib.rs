//! `sluice bench`: the load generator and recorder.
//!
//! Users judge an upgrade by what their clients saw. This crate plays those
//! clients at scale (a light MQTT client built on `sluice-wire`, and a raw
//! TCP client), lets each reconnect by itself like real clients do, counts
//! every disconnect per client with its cause, samples a timeline of
//! connected clients and of connections per instance (from the evacuators'
//! `/metrics`), and writes a summary as text, JSON and a self-contained HTML
//! report.
//!
//! Library use (`sluice demo`): build a [`ConnConfig`], call
//! [`run_conn_until`] (or [`run_conn`]) to get a [`Summary`], and write one
//! or more summaries as a report with [`report::html::write`] /
//! [`report::html::render`]. A summary written with `--json` reads back with
//! [`report::json::read`].

pub mod cli;
mod client;
pub mod config;
mod fleet;
pub mod procinfo;
mod progress;
pub mod recorder;
pub mod report;
mod runner;
pub mod scrape;
mod sink;
pub mod summary;
mod timeline;
pub mod workers;

use std::path::PathBuf;

pub use cli::{BenchCommand, ConnArgs, ReportArgs};
pub use config::{ConnConfig, MqttVersion, Protocol, ReconnectPolicy, SourceIps};
pub use fleet::Slice;
pub use runner::{resolve, run_conn, run_conn_until};
pub use summary::{Summary, TimelineSample};

/// What can stop a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag's value cannot be used; names the flag.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, as the user typed it (`-h/--host`).
        flag: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A worker process could not start, or died.
    #[error("bench worker: {0}")]
    Worker(String),
    /// Reading or writing a file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// JSON could not be read or written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Runs a bench subcommand: the entry point of `sluice bench`.
pub async fn run(cmd: BenchCommand) -> Result<(), BenchError> {
    match cmd {
        BenchCommand::Conn(args) => run_conn_command(args).await,
        BenchCommand::Report(args) => report_command(&args),
        BenchCommand::Sink(args) => sink::run(args).await,
        BenchCommand::Worker => workers::worker_main().await,
    }
}

async fn run_conn_command(args: ConnArgs) -> Result<(), BenchError> {
    for (flag, path) in [("--json", &args.json), ("--report", &args.report)] {
        check_writable(flag, path.as_ref())?;
    }
    let summary = run_conn_until(args.config(), args.title.as_deref(), shutdown_signal()).await?;
    print!("{}", summary.to_text());
    if let Some(path) = &args.json {
        report::json::write(path, &summary)?;
        println!("  json               {}", path.display());
    }
    if let Some(path) = &args.report {
        report::html::write(path, std::slice::from_ref(&summary))?;
        println!("  report             {}", path.display());
    }
    Ok(())
}

fn report_command(args: &ReportArgs) -> Result<(), BenchError> {
    check_writable("--out", Some(&args.out))?;
    let runs = args
        .runs
        .iter()
        .map(|path| report::json::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    report::html::write(&args.out, &runs)?;
    println!("report {}", args.out.display());
    Ok(())
}

/// Fails early, before a long run, when an output file's folder is missing.
fn check_writable(flag: &'static str, path: Option<&PathBuf>) -> Result<(), BenchError> {
    let Some(path) = path else { return Ok(()) };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(d) if !d.is_dir() => Err(BenchError::Flag {
            flag,
            message: format!("folder {} does not exist; create it first", d.display()),
        }),
        _ => Ok(()),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Completes once `stop` is true (or its sender is gone). Unlike
/// `wait_for`, it holds no borrow of the value, so the futures that await it
/// stay `Send`.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
