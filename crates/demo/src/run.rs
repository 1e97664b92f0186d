//! One strategy's run: fleet up, clients connected, v1 → v2, clients settled,
//! everything stopped, promises measured.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sluice_bench::{ConnConfig, Summary};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::fleet::{AppKind, FleetSpec, Strategy};
use crate::promises::{self, Promises};
use crate::up::{Up, sigkill};
use crate::{DemoError, Faults, progress};
use sluice_api::control::UpStatus;
use sluice_core::engine::{EvictionPace, PROGRESSING, Phase};

/// How often the status is polled during the upgrade.
const POLL: Duration = Duration::from_millis(100);
/// How long "all clients connected" must hold to count as settled.
const SETTLED_FOR: Duration = Duration::from_secs(1);
/// Seconds every instance takes to start (see [`FleetSpec::start_delay_seconds`]):
/// longer than the clients' reconnect period (1 s), as with real brokers, so that
/// the clients a naive restart cuts are back, on another old instance, before the
/// next one is cut.
pub const START_DELAY_SECONDS: u32 = 2;
/// The HTTP, WebSocket and h2 clients' think time between requests, ms:
/// thousands of clients at the bench's default 10 ms would saturate a small
/// machine (and the front with it, slowing its evictions); 100 ms keeps every connection busy
/// enough that a marked one leaves within about a tenth of a second.
const HTTP_INTERVAL_MS: u64 = 100;
/// The longest wait for clients to settle after the upgrade.
const SETTLE_AFTER: Duration = Duration::from_secs(15);

/// What the demo was asked to run, for one strategy.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The strategy.
    pub strategy: Strategy,
    /// Clients.
    pub clients: u32,
    /// Instances.
    pub replicas: u32,
    /// connEvictRate and sessEvictRate.
    pub rate: u32,
    /// The app.
    pub app: AppKind,
    /// The protocol the clients speak (the app's, or one `sluice serve-http`
    /// answers).
    pub client_protocol: sluice_bench::config::Protocol,
    /// The sluice binary.
    pub sluice: PathBuf,
    /// This strategy's folder (fleet files, logs).
    pub dir: PathBuf,
    /// Fault injection.
    pub faults: Faults,
    /// The clients' source addresses, when one is not enough.
    pub source_ips: Option<sluice_bench::config::SourceIps>,
}

/// Why an upgrade did not complete.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Aborted {
    /// The `Progressing` reason (`ProgressDeadlineExceeded`, …) or `Timeout`.
    pub reason: String,
    /// For people.
    pub message: String,
}

/// An injected fault and what it hit.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// `killGreenDuringEvacuation` or `breakGreen`.
    pub kind: String,
    /// The instance killed, if any.
    pub instance: Option<String>,
    /// Its connections when it was killed (the clients that see an extra disconnect).
    pub connections_at_kill: Option<u64>,
    /// Seconds after the apply.
    pub at_seconds: Option<f64>,
}

/// One strategy's result: the `summary.json` entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyResult {
    /// `blue-green`, `rolling` or `naive`.
    pub strategy: String,
    /// The fleet's name.
    pub fleet: String,
    /// Clients played.
    pub clients: u64,
    /// Instances.
    pub replicas: u32,
    /// Seconds from the apply of v2 until the fleet was Stable on it (or aborted).
    pub duration_seconds: f64,
    /// Seconds of the whole run (fleet start to fleet stopped).
    pub run_seconds: f64,
    /// The v1 and v2 revisions.
    pub from_revision: String,
    /// See `from_revision`.
    pub to_revision: String,
    /// Phases seen from the apply on, in order.
    pub phases: Vec<String>,
    /// Set when the upgrade did not complete; then every promise FAILs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Aborted>,
    /// Set when a fault was injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The five promises.
    pub promises: Promises,
    /// Index n: clients that saw n disconnects.
    pub disconnect_histogram: Vec<u64>,
    /// Disconnects by cause.
    pub disconnect_causes: BTreeMap<String, u64>,
    /// Where the fleet files and `sluice up`'s log are.
    pub dir: PathBuf,
    /// The bench's summary, for the report (not in summary.json).
    #[serde(skip)]
    pub bench: Option<Summary>,
}

/// A free port on 127.0.0.1 right now.
fn free_addr() -> Result<SocketAddr, DemoError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| DemoError::Io {
            what: "finding a free port on 127.0.0.1".into(),
            source,
        })
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// Runs one strategy end to end.
pub async fn run(plan: &Plan) -> Result<StrategyResult, DemoError> {
    let label = plan.strategy.label();
    let say = |msg: String| progress(label, &msg);
    let started = Instant::now();
    std::fs::create_dir_all(&plan.dir).map_err(|source| DemoError::Io {
        what: format!("creating {}", plan.dir.display()),
        source,
    })?;
    let listen = free_addr()?;
    let admin = free_addr()?;
    let spec = FleetSpec {
        strategy: plan.strategy,
        replicas: plan.replicas,
        listen,
        app: plan.app.clone(),
        rate: plan.rate,
        initial_delay_seconds: 2,
        progress_deadline_seconds: if plan.faults.break_green { 5 } else { 120 },
        wait_takeover: 1,
        start_delay_seconds: START_DELAY_SECONDS,
    };
    let v1 = spec.yaml("v1", false);
    let v2 = spec.yaml("v2", plan.faults.break_green);
    let v1_path = plan.dir.join("fleet.yaml");
    write(&v1_path, &v1)?;
    write(&plan.dir.join("fleet-v2.yaml"), &v2)?;

    let mut up = Up::start(
        &plan.sluice,
        &v1_path,
        admin,
        spec.strategy.up_flags(),
        &plan.dir.join("up.log"),
    )?;
    up.wait_healthy(Duration::from_secs(20)).await?;
    let before = wait_stable(&mut up, plan.replicas, Duration::from_secs(60)).await?;
    let old: BTreeSet<String> = before.instances.iter().map(|i| i.name.clone()).collect();
    say(format!(
        "fleet {} up: {} instances of {} behind {listen}",
        spec.name(),
        old.len(),
        before.status.current_revision
    ));

    // The clients, in this process.
    let mut cfg = ConnConfig::new(listen.ip().to_string(), listen.port(), plan.clients);
    cfg.interval_ms = 1.0;
    cfg.max_connecting = 32;
    cfg.client_id = format!("sluice_demo_{label}_%i");
    cfg.metrics = vec![up.metrics_url()];
    cfg.evict_rate = Some(f64::from(plan.rate));
    cfg.protocol = plan.client_protocol;
    if cfg.protocol.counts_requests() {
        cfg.http_interval_ms = HTTP_INTERVAL_MS;
    }
    cfg.source_ips = plan.source_ips;
    let title = format!(
        "{label}: {} clients, {} replicas, connEvictRate {}/s",
        plan.clients, plan.replicas, plan.rate
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let bench = tokio::spawn(async move {
        sluice_bench::run_conn_until(cfg, Some(&title), async {
            let _ = stop_rx.await;
        })
        .await
    });
    let clients = u64::from(plan.clients);
    let connect_limit = Duration::from_secs(30 + u64::from(plan.clients) / 200);
    if !settle(&mut up, clients, connect_limit, &say).await? {
        let _ = stop_tx.send(());
        let _ = bench.await;
        let _ = up.stop(Duration::from_secs(30)).await;
        return Err(DemoError::Fleet(format!(
            "the {clients} clients did not all connect within {connect_limit:?}; see {}",
            plan.dir.join("up.log").display()
        )));
    }
    if bench.is_finished() {
        return Err(bench_failed(bench).await);
    }

    // The upgrade.
    let applied = Instant::now();
    let revision = up.put_spec(&v2).await?;
    say(format!(
        "upgrading v1 → v2 (revision {} → {revision})",
        before.status.current_revision
    ));
    let watch = watch_upgrade(&mut up, plan, &revision, applied, &say).await?;
    let duration = applied.elapsed().as_secs_f64();
    match &watch.aborted {
        None => say(format!("upgrade done in {duration:.1} s")),
        Some(a) => say(format!("upgrade aborted: {} ({})", a.reason, a.message)),
    }

    // Clients settle again, then everything stops.
    let settled = settle(&mut up, clients, SETTLE_AFTER, &say).await?;
    if !settled {
        say(format!(
            "clients did not all reconnect within {SETTLE_AFTER:?}"
        ));
    }
    let end = up.status().await.ok();
    let end_connections = up.connections().await.unwrap_or_default();
    let _ = stop_tx.send(());
    let summary = match bench.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(DemoError::Fleet(format!("the bench task failed: {e}"))),
    };
    // The clients' record with its timeline: `sluice bench report` redraws it.
    sluice_bench::report::json::write(&plan.dir.join("bench.json"), &summary)?;
    up.stop(Duration::from_secs(60)).await?;
    say(format!(
        "fleet stopped; {:.1} s in all",
        started.elapsed().as_secs_f64()
    ));

    // The promises.
    let target = if watch.aborted.is_some() {
        before.status.current_revision.clone()
    } else {
        revision.clone()
    };
    let new_instances: BTreeMap<String, u64> = end
        .iter()
        .flat_map(|e| e.instances.iter())
        .filter(|i| i.revision == target && !i.failed && !old.contains(&i.name))
        // An instance whose count is unknown at the end is left out, not zero.
        .filter_map(|i| {
            let n = end_connections.get(&i.name).copied().or(i.connections)?;
            Some((i.name.clone(), n))
        })
        .collect();
    let mut promises = Promises {
        paced: if plan.strategy.evacuates() {
            promises::paced(&watch.paces, &old, f64::from(plan.rate))
        } else {
            promises::cut(&summary.timeline, &old, f64::from(plan.rate))
        },
        once: promises::once(&summary.disconnect_histogram),
        capacity: promises::capacity(watch.min_serving, i64::from(plan.replicas)),
        balanced: promises::balanced(new_instances),
        nothing_lost: match (summary.non2xx, summary.socket_errors) {
            (Some(non2xx), Some(errors)) => {
                promises::nothing_lost_http(summary.connected_at_end, clients, non2xx, errors)
            }
            _ => promises::nothing_lost(summary.connected_at_end, clients),
        },
    };
    if watch.aborted.is_some() {
        promises = promises.failed();
    }
    Ok(StrategyResult {
        strategy: label.to_owned(),
        fleet: spec.name(),
        clients,
        replicas: plan.replicas,
        duration_seconds: (duration * 10.0).round() / 10.0,
        run_seconds: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        from_revision: before.status.current_revision,
        to_revision: revision,
        phases: watch.phases,
        aborted: watch.aborted,
        fault: watch.fault,
        promises,
        disconnect_histogram: summary.disconnect_histogram.clone(),
        disconnect_causes: summary.disconnect_causes.clone(),
        dir: plan.dir.clone(),
        bench: Some(summary),
    })
}

async fn bench_failed(
    bench: tokio::task::JoinHandle<Result<Summary, sluice_bench::BenchError>>,
) -> DemoError {
    match bench.await {
        Ok(Err(e)) => e.into(),
        Ok(Ok(_)) => DemoError::Fleet("the clients stopped early".into()),
        Err(e) => DemoError::Fleet(format!("the bench task failed: {e}")),
    }
}

/// Waits until the fleet is `Stable` with `replicas` instances ready and serving.
async fn wait_stable(up: &mut Up, replicas: u32, limit: Duration) -> Result<UpStatus, DemoError> {
    let end = Instant::now() + limit;
    loop {
        up.check_alive()?;
        if let Ok(s) = up.status().await
            && s.status.phase == Phase::Stable
            && i64::from(s.status.serving_replicas) == i64::from(replicas)
            && s.instances.iter().filter(|i| !i.failed).count() == replicas as usize
        {
            return Ok(s);
        }
        if Instant::now() > end {
            return Err(DemoError::Fleet(format!(
                "the fleet was not Stable with {replicas} serving instances within {limit:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the fleet holds `clients` connections for [`SETTLED_FOR`];
/// false after `limit`. Prints the count every second.
async fn settle(
    up: &mut Up,
    clients: u64,
    limit: Duration,
    say: &impl Fn(String),
) -> Result<bool, DemoError> {
    let start = Instant::now();
    let mut since: Option<Instant> = None;
    let mut last_print = start;
    loop {
        up.check_alive()?;
        // A failed scrape is not "0 connected": it just does not count as settled.
        let connected: Option<u64> = up.connections().await.ok().map(|m| m.values().sum());
        if let Some(c) = connected.filter(|c| *c >= clients) {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() >= SETTLED_FOR {
                say(format!("{c}/{clients} clients connected, settled"));
                return Ok(true);
            }
        } else {
            since = None;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let n = connected.map_or_else(|| "?".to_owned(), |c| c.to_string());
            say(format!("{n}/{clients} clients connected"));
        }
        if start.elapsed() > limit {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

struct Watch {
    min_serving: i64,
    /// Each instance's eviction pace, the last its evacuator reported.
    paces: BTreeMap<String, EvictionPace>,
    phases: Vec<String>,
    aborted: Option<Aborted>,
    fault: Option<Fault>,
}

/// Polls the status until the fleet is `Stable` on `revision` or `Aborted`.
async fn watch_upgrade(
    up: &mut Up,
    plan: &Plan,
    revision: &str,
    applied: Instant,
    say: &impl Fn(String),
) -> Result<Watch, DemoError> {
    // Generous: the evacuations take clients / rate seconds, plus waits per instance.
    let limit = Duration::from_secs(
        120 + 3 * u64::from(plan.clients) / u64::from(plan.rate.max(1))
            + 10 * u64::from(plan.replicas),
    );
    let mut w = Watch {
        min_serving: i64::MAX,
        paces: BTreeMap::new(),
        phases: Vec::new(),
        aborted: None,
        fault: plan.faults.break_green.then(|| Fault {
            kind: "breakGreen".into(),
            instance: None,
            connections_at_kill: None,
            at_seconds: None,
        }),
    };
    let mut last_print = Instant::now();
    let mut errors = 0;
    loop {
        up.check_alive()?;
        let s = match up.status().await {
            Ok(s) => {
                errors = 0;
                s
            }
            Err(e) => {
                errors += 1;
                if errors > 50 {
                    return Err(DemoError::Fleet(format!("status unavailable: {e}")));
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        for i in &s.instances {
            if let Some(p) = i.evacuation.as_ref().and_then(|e| e.stats.eviction_pace) {
                w.paces.insert(i.name.clone(), p);
            }
        }
        let applied_yet = s.status.update_revision == revision;
        let phase = s.status.phase;
        let progressing = s.status.condition(PROGRESSING);
        if applied_yet {
            w.min_serving = w.min_serving.min(i64::from(s.status.serving_replicas));
            let name = format!("{phase:?}");
            if w.phases.last() != Some(&name) {
                let why = progressing.map(|c| c.message.clone()).unwrap_or_default();
                say(format!("phase {name}: {why}"));
                w.phases.push(name);
            }
        }
        if plan.faults.kill_green && w.fault.is_none() && phase == Phase::Evacuating {
            w.fault = kill_green(&s, revision, plan, applied, say);
        }
        if applied_yet && phase == Phase::Stable && s.status.current_revision == revision {
            break;
        }
        if applied_yet && phase == Phase::Aborted {
            w.aborted = Some(Aborted {
                reason: progressing.map(|c| c.reason.clone()).unwrap_or_default(),
                message: progressing.map(|c| c.message.clone()).unwrap_or_default(),
            });
            break;
        }
        if applied.elapsed() > limit {
            w.aborted = Some(Aborted {
                reason: "Timeout".into(),
                message: format!("the upgrade did not finish within {limit:?}"),
            });
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let counts: Vec<String> = s
                .instances
                .iter()
                .filter(|i| !i.failed)
                .map(|i| {
                    let tag = if i.revision == revision { "v2" } else { "v1" };
                    let n = i
                        .connections
                        .map_or_else(|| "?".to_owned(), |n| n.to_string());
                    format!("{}({tag}) {n}", i.name)
                })
                .collect();
            say(format!(
                "{:.1} s {:?}: {} serving; {}",
                applied.elapsed().as_secs_f64(),
                phase,
                s.status.serving_replicas,
                counts.join(", ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    if w.min_serving == i64::MAX {
        w.min_serving = 0;
    }
    Ok(w)
}

/// The fault of `--kill-green-during-evacuation`: once the new instances hold
/// a good share of the clients, SIGKILL the most connected one's app.
fn kill_green(
    s: &UpStatus,
    revision: &str,
    plan: &Plan,
    applied: Instant,
    say: &impl Fn(String),
) -> Option<Fault> {
    let green: Vec<_> = s
        .instances
        .iter()
        .filter(|i| i.revision == revision && !i.failed && i.app_pid.is_some())
        .collect();
    let moved: u64 = green.iter().filter_map(|i| i.connections).sum();
    if moved < u64::from(plan.clients) / u64::from(plan.replicas.max(1)) / 2 {
        return None;
    }
    let victim = green.iter().max_by_key(|i| i.connections.unwrap_or(0))?;
    let pid = victim.app_pid?;
    if !sigkill(pid) {
        return None;
    }
    say(format!(
        "fault: SIGKILL to {} (pid {pid}, {} connections)",
        victim.name,
        victim
            .connections
            .map_or_else(|| "?".to_owned(), |n| n.to_string())
    ));
    Some(Fault {
        kind: "killGreenDuringEvacuation".into(),
        instance: Some(victim.name.clone()),
        connections_at_kill: victim.connections,
        at_seconds: Some((applied.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    })
}
