//! The control loop of `sluice up`: observe every instance, call
//! `sluice_core::engine::decide`, apply its actions, publish the status. It
//! decides nothing itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sluice_api::admin::EvacuationRequest;
use sluice_api::control::InstanceView;
use sluice_api::metrics::{
    EVICTIONS, READY_INSTANCES, SERVING_INSTANCES, UPSTREAM_CONNECTIONS,
    label::{PROTOCOL, REVISION, UPSTREAM},
};
use sluice_core::engine::{self, Action, Observed, Status};
use sluice_core::spec::StrategyType;
use sluice_core::time::Timestamp;
use tokio::task::JoinSet;

use super::front::Table;
use super::instance::Inst;
use super::{Shared, stamp};
use crate::fleet::Fleet;

/// The longest time between two ticks (observation is cheap on loopback).
pub(crate) const MAX_TICK: Duration = Duration::from_millis(200);

/// The runner's own state.
pub(crate) struct Runner {
    pub shared: Arc<Shared>,
    pub table: Table,
    pub instances: BTreeMap<String, Inst>,
    /// Deleted instances being stopped.
    pub stopping: JoinSet<()>,
    pub run_dir: PathBuf,
    pub exe: PathBuf,
    pub started: Instant,
    last_status: Option<Status>,
}

impl Runner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        table: Table,
        run_dir: PathBuf,
        exe: PathBuf,
        started: Instant,
    ) -> Runner {
        Runner {
            shared,
            table,
            instances: BTreeMap::new(),
            stopping: JoinSet::new(),
            run_dir,
            exe,
            started,
            last_status: None,
        }
    }

    /// One round: observe, decide, apply, publish. Returns when to look again.
    pub(crate) async fn tick(&mut self) -> Duration {
        while self.stopping.try_join_next().is_some() {}
        self.observe().await;
        let (fleet, generation, naive, abort_requested) = {
            let c = self.shared.lock();
            (c.fleet.clone(), c.generation, c.naive, c.abort_requested)
        };
        let mut strategy = fleet.update_strategy.clone();
        if naive {
            strategy.kind = StrategyType::Naive;
        }
        let spec = engine::Spec {
            name: fleet.name.clone(),
            generation,
            replicas: fleet.replicas,
            revision: fleet.revision(),
            strategy,
        };
        let observed = Observed {
            instances: self.instances.values().map(Inst::observed).collect(),
            last_status: self.last_status.clone(),
            abort_requested,
        };
        let now = Timestamp::from_system_time(SystemTime::now());
        let decision = engine::decide(&spec, &observed, now);
        self.report_phase(&decision.status);
        for action in &decision.actions {
            self.apply(action, now).await;
        }
        let status = decision.status;
        for inst in self.instances.values() {
            self.table.set_eligible(
                &inst.name,
                inst.ready() && inst.serving,
                inst.revision == status.target_revision(),
            );
        }
        self.publish(&status, &fleet, decision.clear_abort_request);
        self.last_status = Some(status);
        decision.requeue_after.min(MAX_TICK)
    }

    /// Refreshes every instance: processes alive, evacuator status, readiness.
    async fn observe(&mut self) {
        let marks = self.table.marks();
        let mut asks = JoinSet::new();
        for inst in self.instances.values_mut() {
            Self::check_alive(inst, self.started);
            if !inst.failed() {
                asks.spawn(inst.observation());
            }
        }
        while let Some(seen) = asks.join_next().await {
            let Ok(seen) = seen else { continue };
            if let Some(inst) = self.instances.get_mut(&seen.name) {
                inst.update(seen);
                if let (Some(&mark), Some(connections)) =
                    (marks.get(&inst.name), inst.connections())
                {
                    self.table.polled(&inst.name, connections, mark);
                }
            }
        }
        for inst in self.instances.values_mut() {
            Self::check_alive(inst, self.started);
        }
    }

    /// Notes (and prints) an instance whose process exited by itself.
    fn check_alive(inst: &mut Inst, started: Instant) {
        let was = inst.failed();
        inst.check_alive();
        if !was && let Some(why) = &inst.failure {
            println!("{} instance {} failed: {why}", stamp(started), inst.name);
        }
    }

    fn report_phase(&self, status: &Status) {
        let last = self.last_status.as_ref();
        let changed = last.is_none_or(|l| {
            l.phase != status.phase
                || l.update_revision != status.update_revision
                || l.current_revision != status.current_revision
        });
        if !changed {
            return;
        }
        let why = status
            .condition(engine::PROGRESSING)
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        println!(
            "{} phase {:?}: current revision {}, update revision {}{why}",
            stamp(self.started),
            status.phase,
            status.current_revision,
            status.update_revision
        );
    }

    /// Applies one action; failures are logged (the engine asks again).
    async fn apply(&mut self, action: &Action, now: Timestamp) {
        let t = stamp(self.started);
        match action {
            Action::Create { name, revision } => {
                if self.instances.contains_key(name) {
                    return;
                }
                let fleet = {
                    let c = self.shared.lock();
                    c.fleets.get(revision).cloned()
                };
                let Some(fleet) = fleet else {
                    println!("{t} create {name}: revision {revision} is unknown; skipped");
                    return;
                };
                let inst = Inst::start(&fleet, name, revision, now, &self.run_dir, &self.exe).await;
                match &inst.failure {
                    None => println!(
                        "{t} create {name} (revision {revision}): app pid {} on port {}, evacuator pid {} admin {}",
                        inst.app_pid.unwrap_or_default(),
                        inst.port,
                        inst.evacuator_pid.unwrap_or_default(),
                        inst.admin
                    ),
                    Some(why) => println!("{t} create {name} (revision {revision}) failed: {why}"),
                }
                self.table.insert(name, inst.socket.clone());
                self.instances.insert(name.clone(), inst);
            }
            Action::SetServing { name, serving } => {
                if let Some(inst) = self.instances.get_mut(name)
                    && inst.serving != *serving
                {
                    inst.serving = *serving;
                    println!("{t} serving {name} = {serving}");
                }
            }
            Action::StartEvacuation {
                name,
                evacuation,
                migrate_to,
            } => {
                let Some(inst) = self.instances.get(name) else {
                    return;
                };
                let request = EvacuationRequest::new(evacuation, migrate_to.clone());
                match inst.start_evacuation(&request).await {
                    Ok(()) => println!(
                        "{t} evacuate {name}: {} connections at {}/s to {}",
                        inst.connections()
                            .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                        evacuation.conn_evict_rate,
                        migrate_to.join(", ")
                    ),
                    Err(e) => println!("{t} evacuate {name} failed: {e}"),
                }
            }
            Action::StopEvacuation { name } => {
                let Some(inst) = self.instances.get(name) else {
                    return;
                };
                match inst.stop_evacuation().await {
                    Ok(()) => println!("{t} stop evacuation of {name}"),
                    Err(e) => println!("{t} stop evacuation of {name} failed: {e}"),
                }
            }
            Action::Delete { name } => {
                let Some(inst) = self.instances.remove(name) else {
                    return;
                };
                self.table.remove(name);
                println!(
                    "{t} delete {name} ({} connections{})",
                    inst.connections()
                        .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                    if inst.failed() { ", failed" } else { "" }
                );
                // A naive restart stops the instance as a plain rolling update
                // would, app first; the strategies evacuate before deleting.
                let naive = self.shared.lock().naive;
                self.stopping.spawn(inst.stop(naive));
            }
        }
    }

    /// Publishes the status, the instance table and the metrics text.
    fn publish(&self, status: &Status, fleet: &Fleet, clear_abort_request: bool) {
        let views: Vec<InstanceView> = self.instances.values().map(Inst::view).collect();
        let protocol = fleet.protocol.as_str();
        let live = || self.instances.values().filter(|i| !i.failed());
        let mut m = String::new();
        let _ = writeln!(
            m,
            "# HELP {UPSTREAM_CONNECTIONS} Connections each instance holds.\n\
             # TYPE {UPSTREAM_CONNECTIONS} gauge"
        );
        // An instance whose count is unknown has no sample (not a 0).
        for i in live() {
            if let Some(connections) = i.connections() {
                let _ = writeln!(
                    m,
                    "{UPSTREAM_CONNECTIONS}{{{UPSTREAM}=\"{}\",{REVISION}=\"{}\",{PROTOCOL}=\"{protocol}\"}} {connections}",
                    i.name, i.revision
                );
            }
        }
        let _ = writeln!(
            m,
            "# HELP {EVICTIONS} Connections each instance's evacuator evicted.\n\
             # TYPE {EVICTIONS} counter"
        );
        // Only while its evacuator reports the count (an evacuation runs).
        for i in live() {
            if let Some(n) = i.evicted() {
                let _ = writeln!(
                    m,
                    "{EVICTIONS}{{{UPSTREAM}=\"{}\",{REVISION}=\"{}\"}} {n}",
                    i.name, i.revision
                );
            }
        }
        let serving = live().filter(|i| i.ready() && i.serving).count();
        let ready = live().filter(|i| i.ready()).count();
        for (name, help, value) in [
            (SERVING_INSTANCES, "Instances ready and serving.", serving),
            (READY_INSTANCES, "Instances ready.", ready),
        ] {
            let _ = writeln!(
                m,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let mut c = self.shared.lock();
        if clear_abort_request {
            c.abort_requested = false;
        }
        c.status = Some(status.clone());
        c.instances = views;
        c.metrics = m;
    }

    /// Takes every instance out (for shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<Inst> {
        std::mem::take(&mut self.instances).into_values().collect()
    }
}
