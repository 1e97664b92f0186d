//! `sluice demo`: a whole graceful upgrade under load on one machine, measured
//! against the five promises.
//!
//! For each strategy (`--strategy all`: blue-green, rolling, then the
//! comparison-only naive restart) it starts a fleet of MQTT brokers with
//! `sluice up` (a child process, driven through its control API), connects
//! `--clients` MQTT 5 clients with the bench (in this process), waits until they
//! are settled, upgrades v1 → v2, waits until the fleet is stable on v2 and the
//! clients settled again, and stops everything. It then prints a table of the
//! promises (figure and PASS/FAIL per strategy), writes `DIR/summary.json` and
//! `DIR/report.html` (the bench's charts, one section per strategy). See
//! `docs/demo.md`.

#![forbid(unsafe_code)]

pub mod fleet;
pub mod http;
pub mod output;
pub mod promises;
pub mod run;
pub mod up;

use std::path::PathBuf;
use std::time::Instant;

use fleet::{AppKind, Strategy};
use sluice_bench::config::Protocol;

/// Flags of `sluice demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// MQTT clients to connect (they stay connected through the upgrade).
    #[arg(long, default_value_t = 3000)]
    pub clients: u32,
    /// Instances in the fleet.
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Which upgrade to run; `all` runs blue-green, rolling and naive one after
    /// the other (naive is the plain Kubernetes StatefulSet restart, for
    /// comparison: it is supposed to fail).
    #[arg(long, value_enum, default_value_t = StrategyArg::All)]
    pub strategy: StrategyArg,
    /// Connections (and sessions) evicted per second from an old instance
    /// (`connEvictRate`, `sessEvictRate`).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// What each instance runs: sluice's built-in broker, mosquitto (Debian
    /// package `mosquitto`), or sluice's built-in HTTP server (`sluice
    /// serve-http`) with HTTP/1.1 keep-alive request loops (`http`), WebSocket
    /// echo loops (`ws`) or gRPC-shaped calls over h2c (`grpc`) as clients.
    #[arg(long, value_enum, default_value_t = AppArg::Builtin)]
    pub app: AppArg,
    /// Folder for report.html, summary.json and each strategy's fleet files and logs.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Print summary.json's content instead of the table (progress still goes
    /// to stderr).
    #[arg(long)]
    pub json: bool,
    /// Fault injection (tests): SIGKILL one new instance's app in the middle of
    /// the evacuation.
    #[arg(long, hide = true)]
    pub kill_green_during_evacuation: bool,
    /// Fault injection (tests): v2 runs a command that never becomes ready, with
    /// a 5 s progress deadline.
    #[arg(long, hide = true)]
    pub break_green: bool,
    /// Spread the clients' source addresses over this range (e.g.
    /// `127.0.0.2-127.0.0.40`): one source address has about 28,000 ephemeral
    /// ports towards the front, so past ~25k clients the demo needs several.
    #[arg(long, value_name = "FIRST-LAST")]
    pub source_ips: Option<sluice_bench::config::SourceIps>,
}

/// `--strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    /// A full new set, one switch, old instances evacuated one at a time.
    BlueGreen,
    /// One new instance at a time (maxSurge 1, maxUnavailable 0), each old one evacuated.
    Rolling,
    /// For comparison only: delete an old instance, start its replacement, next.
    Naive,
    /// blue-green, rolling, naive, one after the other.
    All,
}

impl StrategyArg {
    fn strategies(self) -> Vec<Strategy> {
        match self {
            StrategyArg::BlueGreen => vec![Strategy::BlueGreen],
            StrategyArg::Rolling => vec![Strategy::Rolling],
            StrategyArg::Naive => vec![Strategy::Naive],
            StrategyArg::All => Strategy::ALL.to_vec(),
        }
    }
}

/// `--app`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppArg {
    /// `sluice broker` (embedded rumqttd): nothing to install.
    Builtin,
    /// mosquitto, when installed.
    Mosquitto,
    /// `sluice serve-http` with HTTP/1.1 keep-alive clients.
    Http,
    /// `sluice serve-http` with WebSocket clients (messages and their echoes).
    Ws,
    /// `sluice serve-http` with HTTP/2 cleartext clients (gRPC-shaped calls).
    Grpc,
}

impl AppArg {
    /// The flag's spelling, also `summary.json`'s `app`.
    fn label(self) -> &'static str {
        match self {
            AppArg::Builtin => "builtin",
            AppArg::Mosquitto => "mosquitto",
            AppArg::Http => "http",
            AppArg::Ws => "ws",
            AppArg::Grpc => "grpc",
        }
    }

    /// The protocol the demo's clients speak.
    fn client_protocol(self) -> Protocol {
        match self {
            AppArg::Builtin | AppArg::Mosquitto => Protocol::Mqtt,
            AppArg::Http => Protocol::Http,
            AppArg::Ws => Protocol::Ws,
            AppArg::Grpc => Protocol::H2,
        }
    }
}

/// Fault injection for the tests (hidden flags).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// `--kill-green-during-evacuation`.
    pub kill_green: bool,
    /// `--break-green`.
    pub break_green: bool,
}

/// What can stop a demo (the demo could not run; promises that fail are not errors).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A flag's value cannot be used; names the flag.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Reading or writing a file, or starting a process, failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The fleet (`sluice up`) could not be started, died, or did not answer.
    #[error("demo fleet: {0}")]
    Fleet(String),
    /// The clients could not run.
    #[error(transparent)]
    Bench(#[from] sluice_bench::BenchError),
    /// JSON could not be written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Prints a progress line to stderr.
pub(crate) fn progress(strategy: &str, msg: &str) {
    eprintln!("[{strategy}] {msg}");
}

fn validate(args: &DemoArgs) -> Result<(), DemoError> {
    let flag = |flag, message: &str| {
        Err(DemoError::Flag {
            flag,
            message: message.to_owned(),
        })
    };
    if !(1..=100_000).contains(&args.clients) {
        return flag("--clients", "must be from 1 to 100000");
    }
    if !(1..=50).contains(&args.replicas) {
        return flag("--replicas", "must be from 1 to 50");
    }
    if !(1..=1_000_000).contains(&args.rate) {
        return flag("--rate", "must be from 1 to 1000000 connections per second");
    }
    if args.kill_green_during_evacuation && args.replicas < 2 {
        return flag(
            "--kill-green-during-evacuation",
            "needs --replicas 2 or more",
        );
    }
    Ok(())
}

/// Finds mosquitto on PATH or in the sbin folders Debian installs it to.
fn find_mosquitto() -> Result<PathBuf, DemoError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .ok_or_else(|| DemoError::Flag {
            flag: "--app",
            message: "mosquitto was not found on PATH or in /usr/sbin; install it with \
                      `apt-get install mosquitto` (Debian package `mosquitto`), or use \
                      --app builtin"
                .into(),
        })
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    validate(&args)?;
    let started = Instant::now();
    let sluice = std::env::current_exe().map_err(|source| DemoError::Io {
        what: "finding the sluice binary".into(),
        source,
    })?;
    std::fs::create_dir_all(&args.out).map_err(|source| DemoError::Io {
        what: format!("creating --out folder {}", args.out.display()),
        source,
    })?;
    let out = std::fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
    let app = match args.app {
        AppArg::Builtin => AppKind::Builtin {
            sluice: sluice.clone(),
        },
        AppArg::Mosquitto => {
            let mosquitto = find_mosquitto()?;
            let config = out.join("mosquitto.conf");
            std::fs::write(&config, fleet::mosquitto_config()).map_err(|source| DemoError::Io {
                what: format!("writing {}", config.display()),
                source,
            })?;
            AppKind::Mosquitto { mosquitto, config }
        }
        AppArg::Http | AppArg::Ws | AppArg::Grpc => AppKind::Http {
            sluice: sluice.clone(),
        },
    };
    let faults = Faults {
        kill_green: args.kill_green_during_evacuation,
        break_green: args.break_green,
    };
    let strategies = args.strategy.strategies();
    eprintln!(
        "sluice demo: {} clients, {} replicas, connEvictRate {}/s, {}; {}",
        args.clients,
        args.replicas,
        args.rate,
        match args.app {
            AppArg::Builtin => "built-in broker",
            AppArg::Mosquitto => "mosquitto",
            AppArg::Http => "built-in HTTP server, HTTP/1.1 clients",
            AppArg::Ws => "built-in HTTP server, WebSocket clients",
            AppArg::Grpc => "built-in HTTP server, gRPC (h2c) clients",
        },
        strategies
            .iter()
            .map(|s| s.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut results = Vec::new();
    for strategy in strategies {
        let plan = run::Plan {
            strategy,
            clients: args.clients,
            replicas: args.replicas,
            rate: args.rate,
            app: app.clone(),
            client_protocol: args.app.client_protocol(),
            sluice: sluice.clone(),
            dir: out.join(strategy.label()),
            faults,
            source_ips: args.source_ips,
        };
        results.push(run::run(&plan).await?);
    }
    let summary = output::DemoSummary {
        clients: u64::from(args.clients),
        replicas: args.replicas,
        rate: args.rate,
        app: args.app.label().into(),
        total_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        strategies: results,
    };
    let json = serde_json::to_string_pretty(&summary)?;
    let json_path = out.join("summary.json");
    let report_path = out.join("report.html");
    output::write(&json_path, &format!("{json}\n"))?;
    output::write(&report_path, &output::report_html(&summary))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", output::table(&summary));
        println!("report   {}", report_path.display());
        println!("summary  {}", json_path.display());
    }
    Ok(())
}
