//! `sluice`: upgrade services that hold long-lived connections without a
//! reconnect storm. One binary, one subcommand per job.

mod plan;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Upgrade services with long-lived connections without a reconnect storm.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Estimate an upgrade before running it.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// The evacuating proxy: forwards TCP/MQTT/HTTP connections and moves them off an
    /// upstream at a chosen rate.
    Proxy(sluice_proxy::ProxyArgs),
    /// Load generator: play thousands of clients and record what they saw.
    #[command(subcommand)]
    Bench(sluice_bench::BenchCommand),
    /// A sample MQTT broker (MQTT 3.1.1 and 5 on one port, embedded rumqttd) for
    /// demos and tests, so they need nothing installed.
    Broker(sluice_local::BrokerArgs),
    /// A sample HTTP/1.1 keep-alive server (`200 ok NAME`) for demos and tests,
    /// so they need nothing installed.
    ServeHttp(sluice_local::HttpServerArgs),
    /// Run a fleet in the foreground: instances behind their evacuators and a front
    /// listener, upgraded by the engine when its spec changes.
    Up(sluice_local::UpArgs),
    /// Hand a changed fleet file to the running fleet (a new revision starts the upgrade).
    Apply(sluice_local::ApplyArgs),
    /// Print the running fleet's phase, revisions and instances.
    Status(sluice_local::StatusArgs),
    /// Stop the running upgrade and return traffic to the old revision.
    Abort(sluice_local::AbortArgs),
    /// Run a whole graceful upgrade under load on this machine and report the promises.
    Demo(sluice_demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the flag; clap's usage hint follows on stderr only
            // when asked for with --help.
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{first}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Plan(cmd) => {
            print!("{}", plan::run(cmd)?);
            Ok(())
        }
        Command::Proxy(args) => runtime()?
            .block_on(sluice_proxy::run(args))
            .map_err(Into::into),
        Command::Bench(cmd) => runtime()?
            .block_on(sluice_bench::run(cmd))
            .map_err(Into::into),
        Command::Broker(args) => runtime()?
            .block_on(sluice_local::serve_broker(args))
            .map_err(Into::into),
        Command::ServeHttp(args) => runtime()?
            .block_on(sluice_local::serve_http(args))
            .map_err(Into::into),
        Command::Up(args) => runtime()?
            .block_on(sluice_local::run_up(args))
            .map_err(Into::into),
        Command::Apply(args) => runtime()?
            .block_on(sluice_local::run_apply(args))
            .map_err(Into::into),
        Command::Status(args) => runtime()?
            .block_on(sluice_local::run_status(args))
            .map_err(Into::into),
        Command::Abort(args) => runtime()?
            .block_on(sluice_local::run_abort(args))
            .map_err(Into::into),
        Command::Demo(args) => runtime()?
            .block_on(sluice_demo::run(args))
            .map_err(Into::into),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
