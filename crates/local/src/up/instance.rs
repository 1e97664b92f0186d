//! One instance of the fleet: the app process and its evacuator (`sluice proxy
//! --accept-unix`), both supervised, and what was last observed of them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_api::admin::EvacuationRequest;
use sluice_api::control::InstanceView;
use sluice_api::evacuator::{Evacuator, EvacuatorError};
use sluice_core::engine::{self, Load, NodeEvacuationStatus};
use sluice_core::time::Timestamp;
use sluice_http::evacuator::ProxyEvacuator;

use crate::fleet::{Fleet, InstanceVars};
use crate::process::{Probe, ProbeError, SpawnSpec, Supervised, free_port};

/// How long one admin call to an evacuator may take.
const ADMIN_TIMEOUT: Duration = Duration::from_millis(800);
/// How often a ready app is probed again (a not yet ready one: every tick).
const REPROBE_READY: Duration = Duration::from_secs(1);
/// How long an evacuator gets to drain on SIGTERM before SIGKILL (its own
/// `--drain-timeout` is shorter).
const EVACUATOR_GRACE: Duration = Duration::from_secs(15);
/// The evacuator's `--drain-timeout`.
const EVACUATOR_DRAIN_TIMEOUT: &str = "10";

/// A running (or failed) instance.
#[derive(Debug)]
pub(crate) struct Inst {
    pub name: String,
    pub revision: String,
    pub created_at: Timestamp,
    pub port: u16,
    pub admin: SocketAddr,
    pub socket: PathBuf,
    pub app: Option<Supervised>,
    pub evacuator: Option<Supervised>,
    pub app_pid: Option<u32>,
    pub evacuator_pid: Option<u32>,
    probe: Option<Probe>,
    grace: Duration,
    pub serving: bool,
    app_ready: bool,
    last_probe: Option<Instant>,
    /// What its evacuator last reported (or why it could not be read). Empty
    /// until the first report: a new instance serves nobody before it is ready.
    pub load: Load,
    /// The last report succeeded (part of readiness).
    evacuator_ok: bool,
    /// Why it failed, once it has.
    pub failure: Option<String>,
}

/// What one observation of an instance found (gathered concurrently, then
/// applied).
#[derive(Debug)]
pub(crate) struct Seen {
    pub name: String,
    report: Result<NodeEvacuationStatus, EvacuatorError>,
    probe: Option<Result<(), ProbeError>>,
}

impl Inst {
    /// Starts the app and its evacuator. A failure to start is not an error of
    /// `sluice up`: the instance is reported failed and the engine replaces it.
    pub(crate) async fn start(
        fleet: &Fleet,
        name: &str,
        revision: &str,
        created_at: Timestamp,
        run_dir: &Path,
        exe: &Path,
    ) -> Inst {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ports = (|| {
            let port = free_port(loopback)?;
            let admin = free_port(loopback)?;
            let probe = if fleet.app.uses_probe_port() {
                Some(free_port(loopback)?)
            } else {
                None
            };
            std::io::Result::Ok((port, admin, probe))
        })();
        let socket = socket_path(run_dir, name);
        let mut inst = Inst {
            name: name.to_owned(),
            revision: revision.to_owned(),
            created_at,
            port: 0,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            socket,
            app: None,
            evacuator: None,
            app_pid: None,
            evacuator_pid: None,
            probe: None,
            grace: Duration::from_secs(
                u64::try_from(fleet.app.termination_grace_period_seconds).unwrap_or(0),
            ),
            serving: false,
            app_ready: false,
            last_probe: None,
            load: Load::EMPTY,
            evacuator_ok: false,
            failure: None,
        };
        let (port, admin_port, probe_port) = match ports {
            Ok(p) => p,
            Err(e) => {
                inst.failure = Some(format!("no free port: {e}"));
                return inst;
            }
        };
        inst.port = port;
        inst.admin = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
        let vars = InstanceVars {
            port,
            probe_port,
            instance: name.to_owned(),
            revision: revision.to_owned(),
        };
        inst.probe = Some(fleet.app.probe(&vars));
        let rendered = match fleet.app.render(&vars) {
            Ok(r) => r,
            Err(e) => {
                inst.failure = Some(format!("{}: {}", e.field, e.problem));
                return inst;
            }
        };
        // `sluice` as the program is this very binary, so the built-in broker
        // works without sluice on PATH.
        let program = if rendered.program == "sluice" {
            exe.display().to_string()
        } else {
            rendered.program
        };
        let app = SpawnSpec {
            program,
            args: rendered.args,
            env: rendered.env,
            log_file: run_dir.join(format!("{name}.log")),
        };
        match Supervised::spawn(&app).await {
            Ok(p) => {
                inst.app_pid = Some(p.pid());
                inst.app = Some(p);
            }
            Err(e) => {
                inst.failure = Some(format!("cannot start the app: {e}"));
                return inst;
            }
        }
        let protocol = fleet.protocol.as_str();
        let evacuator = SpawnSpec {
            program: exe.display().to_string(),
            args: [
                "proxy",
                "--accept-unix",
                &inst.socket.display().to_string(),
                "--upstream",
                &format!("{name}=127.0.0.1:{port}"),
                "--admin",
                &inst.admin.to_string(),
                "--protocol",
                protocol,
                "--drain-delay",
                "0",
                "--drain-timeout",
                EVACUATOR_DRAIN_TIMEOUT,
            ]
            .map(str::to_owned)
            .to_vec(),
            env: Default::default(),
            log_file: run_dir.join(format!("{name}.evacuator.log")),
        };
        match Supervised::spawn(&evacuator).await {
            Ok(p) => {
                inst.evacuator_pid = Some(p.pid());
                inst.evacuator = Some(p);
            }
            Err(e) => inst.failure = Some(format!("cannot start its evacuator: {e}")),
        }
        inst
    }

    /// Whether its processes run; notes a failure when one exited by itself.
    pub(crate) fn check_alive(&mut self) {
        if self.failure.is_some() {
            return;
        }
        for (what, process) in [("app", &mut self.app), ("evacuator", &mut self.evacuator)] {
            let Some(p) = process else { continue };
            if let Ok(Some(status)) = p.try_status() {
                self.failure = Some(format!(
                    "its {what} exited by itself ({status}); see {}",
                    p.log_file().display()
                ));
                return;
            }
        }
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure.is_some()
    }

    pub(crate) fn ready(&self) -> bool {
        !self.failed() && self.app_ready && self.evacuator_ok
    }

    /// The driver of its evacuator.
    pub(crate) fn evacuator(&self) -> ProxyEvacuator {
        ProxyEvacuator::new(self.admin, ADMIN_TIMEOUT)
    }

    /// Connections it holds, if known.
    pub(crate) fn connections(&self) -> Option<u64> {
        self.load.connections()
    }

    /// Connections its evacuator has evicted since it started, while it
    /// reports an evacuation that says.
    pub(crate) fn evicted(&self) -> Option<u64> {
        match &self.load {
            engine::Load::Known {
                evacuation: Some(e),
                ..
            } => e.stats.evicted_connections,
            _ => None,
        }
    }

    /// What to ask this tick: the evacuator's status always, the app's readiness
    /// when not yet ready or not probed for a while. Runs without `self`.
    pub(crate) fn observation(&self) -> impl Future<Output = Seen> + Send + 'static {
        let name = self.name.clone();
        let evacuator = self.evacuator();
        let probe = self.probe.clone().filter(|_| {
            !self.app_ready || self.last_probe.is_none_or(|t| t.elapsed() >= REPROBE_READY)
        });
        async move {
            let probe = async {
                match &probe {
                    Some(p) => Some(p.check(Duration::from_millis(500)).await),
                    None => None,
                }
            };
            let (report, probe) = tokio::join!(evacuator.report(), probe);
            Seen {
                name,
                report,
                probe,
            }
        }
    }

    /// Applies what an observation found. An evacuator that could not be read
    /// makes the load unknown (never zero); the engine keeps the instance.
    pub(crate) fn update(&mut self, seen: Seen) {
        if let Some(result) = seen.probe {
            self.app_ready = result.is_ok();
            self.last_probe = Some(Instant::now());
        }
        self.evacuator_ok = seen.report.is_ok();
        self.load = match seen.report {
            Ok(report) => Load::from_report(NodeEvacuationStatus {
                node: self.name.clone(),
                ..report
            }),
            Err(e) => Load::Unknown {
                reason: e.to_string(),
            },
        };
    }

    /// The engine's view of it.
    pub(crate) fn observed(&self) -> engine::Instance {
        engine::Instance {
            name: self.name.clone(),
            revision: self.revision.clone(),
            created_at: self.created_at,
            ready: self.ready(),
            serving: self.serving,
            load: self.load.clone(),
            failed: self.failed(),
        }
    }

    /// The control API's view of it.
    pub(crate) fn view(&self) -> InstanceView {
        let (connections, sessions, evacuation, unknown) = match &self.load {
            Load::Known {
                connections,
                sessions,
                evacuation,
            } => (
                Some(*connections),
                Some(*sessions),
                evacuation.clone(),
                None,
            ),
            Load::Unknown { reason } => (None, None, None, Some(reason.clone())),
        };
        InstanceView {
            name: self.name.clone(),
            revision: self.revision.clone(),
            app_pid: self.app_pid,
            evacuator_pid: self.evacuator_pid,
            port: self.port,
            admin_addr: self.admin.to_string(),
            ready: self.ready(),
            serving: self.serving,
            failed: self.failed(),
            failure: self.failure.clone(),
            connections,
            sessions,
            evacuation,
            unknown,
        }
    }

    /// Starts its evacuation, sending clients to `migrate_to`.
    pub(crate) async fn start_evacuation(
        &self,
        request: &EvacuationRequest,
    ) -> Result<(), EvacuatorError> {
        self.evacuator().start_evacuation(request).await
    }

    /// Stops its evacuation.
    pub(crate) async fn stop_evacuation(&self) -> Result<(), EvacuatorError> {
        self.evacuator().stop_evacuation().await
    }

    /// Stops it for good: the evacuator first (SIGTERM: it evicts what is left
    /// at its drain rate and exits; SIGKILL after a grace), then the app
    /// (SIGTERM, `terminationGracePeriodSeconds`, SIGKILL). With `app_first`
    /// (the demo's naive restart, a plain rolling update) the app goes first:
    /// its connections end the way the app ends them, as they do when a pod
    /// without sluice is stopped, and the evacuator, stopped next, has nothing
    /// left to evict gracefully.
    pub(crate) async fn stop(mut self, app_first: bool) {
        let mut order = [
            (self.evacuator.take(), EVACUATOR_GRACE),
            (self.app.take(), self.grace),
        ];
        if app_first {
            order.reverse();
        }
        for (process, grace) in &mut order {
            if let Some(p) = process {
                let _ = p.stop(*grace).await;
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `<run dir>/<name>.sock`, or a shorter path under /tmp when that one would
/// not fit in a Unix socket address (108 bytes).
fn socket_path(run_dir: &Path, name: &str) -> PathBuf {
    let path = run_dir.join(format!("{name}.sock"));
    if path.as_os_str().len() < 100 {
        return path;
    }
    PathBuf::from(format!("/tmp/sluice-{}-{name}.sock", std::process::id()))
}
