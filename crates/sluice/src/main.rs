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
    /// The evacuating proxy: forwards TCP/MQTT connections and moves them off an
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
    /// The Kubernetes operator for the GracefulSet resource (`run`, `crd`).
    #[command(subcommand)]
    Operator(sluice_operator::OperatorCommand),
    /// The kubectl plugin (`kubectl sluice status|abort|promote NAME` when this
    /// binary is installed as `kubectl-sluice`).
    Kubectl(sluice_operator::KubectlArgs),
}

/// `kubectl-sluice`: the same binary under a kubectl plugin's name.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl sluice",
    version,
    about = "Follow, abort or resume a GracefulSet upgrade"
)]
struct PluginCli {
    #[command(flatten)]
    args: sluice_operator::KubectlArgs,
}

fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let parsed = if invoked_as.as_deref() == Some("kubectl-sluice") {
        PluginCli::try_parse().map(|p| Cli {
            command: Command::Kubectl(p.args),
        })
    } else {
        Cli::try_parse()
    };
    let cli = match parsed {
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
    init_logging();
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
        Command::Operator(cmd) => {
            print!("{}", runtime()?.block_on(sluice_operator::run(cmd))?);
            Ok(())
        }
        Command::Kubectl(args) => {
            print!(
                "{}",
                runtime()?.block_on(sluice_operator::kubectl::run(args))?
            );
            Ok(())
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The log filter without `RUST_LOG`: sluice's own info lines, but only
/// warnings from the embedded broker, which logs every connection at info (a
/// cost at 100k clients).
const DEFAULT_LOG: &str = "info,rumqttd=warn";

/// Logs of every subcommand go to stderr (stdout stays for results such as
/// `--json`), filtered by `RUST_LOG` (see docs/cli.md).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
