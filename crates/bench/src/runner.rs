//! A whole `bench conn` run: the clients (in this process or spread over
//! workers), the timeline, the progress line, and the summary.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::BenchError;
use crate::config::ConnConfig;
use crate::fleet::{self, Slice};
use crate::recorder::{Aggregate, Counters};
use crate::scrape::MetricsUrl;
use crate::summary::Summary;
use crate::workers::{self, Worker};
use crate::{progress, timeline};

/// Resolves the config's host, preferring IPv4 when binding to IPv4 source
/// addresses.
pub async fn resolve(cfg: &ConnConfig) -> Result<SocketAddr, BenchError> {
    let resolve_error = |reason: String| BenchError::Flag {
        flag: "-h/--host",
        message: format!("cannot resolve '{}': {reason}", cfg.host),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .collect();
    let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
    match (cfg.source_ips, v4) {
        (Some(_), Some(a)) => Ok(a),
        (Some(_), None) => Err(resolve_error(
            "--source-ips are IPv4 but the host has no IPv4 address".into(),
        )),
        (None, _) => v4
            .or(addrs.first().copied())
            .ok_or_else(|| resolve_error("no address".into())),
    }
}

/// Checks what the flags could not: metrics URLs, and a per-process client
/// count the open-files limit allows.
fn validate(cfg: &ConnConfig, workers: u32) -> Result<Vec<MetricsUrl>, BenchError> {
    let urls = cfg
        .metrics
        .iter()
        .map(|u| {
            u.parse().map_err(|message| BenchError::Flag {
                flag: "--metrics",
                message,
            })
        })
        .collect::<Result<Vec<MetricsUrl>, _>>()?;
    let per_process = u64::from(cfg.count).div_ceil(u64::from(workers));
    let allowed = workers::clients_per_process();
    if per_process > allowed {
        return Err(BenchError::Flag {
            flag: "--workers",
            message: format!(
                "{workers} worker(s) would hold {per_process} clients each but a process may hold about \
                 {allowed} (open-files limit); use --workers {} or leave it out",
                workers::auto_workers(cfg.count)
            ),
        });
    }
    Ok(urls)
}

/// The clients of a run, wherever they live.
enum Clients {
    /// All in this process.
    Local {
        counters: Arc<Counters>,
        task: tokio::task::JoinHandle<Aggregate>,
    },
    /// Spread over worker processes.
    Workers(Vec<Worker>),
}

/// Runs `cfg` until its duration passes or `stop` completes, and returns
/// the summary. `title` names the run in the summary and the report.
///
/// This is the library entry point: `sluice demo` calls it in-process. The
/// worker processes, when the run needs them, are started from
/// `std::env::current_exe()` as `… bench worker`, so the calling binary
/// must be `sluice`.
pub async fn run_conn_until(
    cfg: ConnConfig,
    title: Option<&str>,
    stop: impl Future<Output = ()>,
) -> Result<Summary, BenchError> {
    let workers = cfg
        .workers
        .unwrap_or_else(|| workers::auto_workers(cfg.count))
        .min(cfg.count);
    let urls = validate(&cfg, workers)?;
    let target = resolve(&cfg).await?;
    let cfg = Arc::new(cfg);
    let (tx, rx) = watch::channel(false);
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let clients = if workers == 1 {
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(fleet::run_slice(
            cfg.clone(),
            target,
            Slice::ALL,
            counters.clone(),
            rx.clone(),
        ));
        Clients::Local { counters, task }
    } else {
        let exe = std::env::current_exe().map_err(|e| {
            BenchError::Worker(format!("cannot find the sluice binary for workers: {e}"))
        })?;
        let mut list = Vec::with_capacity(workers as usize);
        for index in 0..workers {
            let slice = Slice { index, of: workers };
            list.push(Worker::spawn(&exe, &cfg, slice, failed_tx.clone()).await?);
        }
        Clients::Workers(list)
    };
    let counters: Vec<Arc<Counters>> = match &clients {
        Clients::Local { counters, .. } => vec![counters.clone()],
        Clients::Workers(list) => list.iter().map(|w| w.counters.clone()).collect(),
    };
    let latest = timeline::spawn_scrapers(&urls, &rx);
    let recorder = tokio::spawn(timeline::record(
        start,
        cfg.protocol.counts_requests(),
        counters.clone(),
        latest,
        rx.clone(),
    ));
    let progress =
        (!cfg.quiet).then(|| tokio::spawn(progress::run(counters, cfg.count, start, rx.clone())));
    let duration = cfg.duration_secs.map(Duration::from_secs_f64);
    let mut failure = None;
    tokio::select! {
        _ = stop => {}
        _ = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4)), if duration.is_some() => {}
        Some(e) = failed_rx.recv() => failure = Some(e),
    }
    let elapsed = start.elapsed().as_secs_f64();
    let agg = match clients {
        Clients::Local { counters, task } => {
            let connected = fleet::stop(&counters, &tx);
            let mut agg = task
                .await
                .map_err(|e| BenchError::Worker(format!("clients failed: {e}")))?;
            agg.connected_at_stop = connected;
            agg
        }
        Clients::Workers(mut list) => {
            let _ = tx.send(true);
            list.iter_mut().for_each(Worker::stop);
            let mut agg = Aggregate::default();
            for worker in list {
                match worker.finish().await {
                    Ok(a) => agg.merge(a),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            agg
        }
    };
    if let Some(e) = failure {
        return Err(e);
    }
    let recording = recorder.await.unwrap_or_default();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let timeline = recording.finish(&urls);
    let mut summary = Summary::build(&cfg, title, agg, timeline.samples, elapsed);
    summary.revisions = timeline.revisions;
    summary.instances = timeline.instances;
    Ok(summary)
}

/// Runs `cfg` until its duration passes, or forever without one.
pub async fn run_conn(cfg: ConnConfig) -> Result<Summary, BenchError> {
    run_conn_until(cfg, None, std::future::pending()).await
}
