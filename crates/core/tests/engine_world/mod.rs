//! A simulated world for the engine: instances that become ready after a delay,
//! an evacuator per instance that walks EMQX's states and drains at the configured
//! rates, clients that connect to the least-connected serving instance and reconnect
//! when evicted, failures injected at chosen times, and a fake clock stepped in
//! 100 ms ticks. Each tick: the world moves, the engine decides (from the status as
//! it was published, i.e. through JSON), the actions are applied, invariants are
//! checked and any breach is recorded in `violations`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice_core::engine::{
    Action, Decision, EvacuationState, EvacuationStats, Instance, Load, NodeEvacuationStatus,
    Observed, Phase, Spec, Status, decide,
};
use sluice_core::rolling::Budget;
use sluice_core::spec::{EvacuationStrategy, StrategyType, UpdateStrategy};
use sluice_core::time::Timestamp;

/// One step of the fake clock.
pub const TICK: Duration = Duration::from_millis(100);

/// How long an instance of `revision` (the `serial`-th created) takes to become
/// ready; `None`: never.
pub type ReadyFn = Box<dyn Fn(&str, u64) -> Option<Duration>>;

/// An evacuator's progress on one instance.
#[derive(Debug, Clone)]
pub struct Evac {
    pub strategy: EvacuationStrategy,
    pub state: EvacuationState,
    /// When `state` was entered.
    pub since: Duration,
    pub initial_connected: u64,
    pub initial_sessions: u64,
    /// Evicted in the current evicting state.
    pub done: u64,
}

/// A simulated instance.
#[derive(Debug, Clone)]
pub struct Sim {
    pub name: String,
    pub revision: String,
    pub created_at: Duration,
    pub ready_at: Option<Duration>,
    pub ready: bool,
    pub serving: bool,
    pub failed: bool,
    pub clients: BTreeSet<usize>,
    pub sessions: u64,
    pub evac: Option<Evac>,
    pub evac_starts: u32,
    /// Peak connection count, to tell "had clients" from "empty".
    pub peak: usize,
    /// Its evacuator cannot be read (answers 500 or garbage): reported as
    /// unknown, calls to it fail; it keeps running (and evacuating) meanwhile.
    pub blind: bool,
}

/// A client and what happened to it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub on: Option<String>,
    /// Disconnected by an evacuation.
    pub evictions: u32,
    /// Disconnected because its instance failed.
    pub drops: u32,
    /// Disconnected because its instance was deleted while it held the client
    /// (only the comparison-only `Naive` strategy does that).
    pub cuts: u32,
}

/// The world.
pub struct World {
    pub now: Duration,
    pub tick: u64,
    pub spec: Spec,
    /// The status as published: JSON, like a CRD status.
    pub status_json: Option<String>,
    pub abort: bool,
    pub instances: BTreeMap<String, Sim>,
    pub deleted: Vec<Sim>,
    pub clients: Vec<Client>,
    ready: ReadyFn,
    serial: u64,
    /// Every applied action with its time.
    pub actions: Vec<(Duration, Action)>,
    /// Phases seen, consecutive duplicates removed.
    pub phases: Vec<Phase>,
    /// `Progressing` reasons seen, consecutive duplicates removed.
    pub reasons: Vec<String>,
    pub violations: Vec<String>,
    /// Connections evicted per instance per tick: (tick, count).
    pub evicted: BTreeMap<String, Vec<(u64, u64)>>,
    /// Fewest ready serving instances after any decision since `mark()`.
    pub min_serving: usize,
    pub last: Option<Decision>,
    /// Record the observed world with each decision (for restart tests).
    pub keep_observed: bool,
    pub observed: Option<Observed>,
}

/// A strategy with short waits, for quick simulations.
pub fn strategy(kind: StrategyType) -> UpdateStrategy {
    let mut s = UpdateStrategy {
        kind,
        initial_delay_seconds: 5,
        progress_deadline_seconds: 30,
        ..UpdateStrategy::default()
    };
    s.evacuation_strategy = EvacuationStrategy {
        conn_evict_rate: 500,
        sess_evict_rate: 100,
        wait_takeover: 2,
        wait_health_check: 1,
    };
    s
}

impl World {
    /// An empty world that will converge to `replicas` instances of "blue".
    pub fn new(replicas: i32, strategy: UpdateStrategy, ready: ReadyFn) -> World {
        World {
            now: Duration::ZERO,
            tick: 0,
            spec: Spec {
                name: "w".into(),
                generation: 1,
                replicas,
                revision: "blue".into(),
                strategy,
            },
            status_json: None,
            abort: false,
            instances: BTreeMap::new(),
            deleted: Vec::new(),
            clients: Vec::new(),
            ready,
            serial: 0,
            actions: Vec::new(),
            phases: Vec::new(),
            reasons: Vec::new(),
            violations: Vec::new(),
            evicted: BTreeMap::new(),
            min_serving: usize::MAX,
            last: None,
            keep_observed: false,
            observed: None,
        }
    }

    /// `new`, then run until the blue fleet is up, then connect `clients` clients and
    /// give every instance `sessions` offline sessions.
    pub fn started(
        replicas: i32,
        strategy: UpdateStrategy,
        ready: ReadyFn,
        clients: usize,
        sessions: u64,
    ) -> World {
        let mut w = World::new(replicas, strategy, ready);
        assert!(
            w.run_until(Duration::from_secs(60), World::converged),
            "blue never came up"
        );
        w.connect(clients);
        for i in w.instances.values_mut() {
            i.sessions = sessions;
        }
        w
    }

    /// `now` as the absolute time the engine is given.
    pub fn clock(&self) -> Timestamp {
        Timestamp::EPOCH + self.now
    }

    /// The last published status.
    pub fn status(&self) -> Status {
        serde_json::from_str(self.status_json.as_deref().expect("no status yet")).unwrap()
    }

    /// Starts tracking the fewest serving instances.
    pub fn mark(&mut self) {
        self.min_serving = usize::MAX;
    }

    /// Ready, serving and not failed.
    pub fn serving(&self) -> usize {
        self.instances
            .values()
            .filter(|i| i.ready && i.serving && !i.failed)
            .count()
    }

    /// The strategy's floor: BlueGreen `replicas`, Rolling `replicas − maxUnavailable`,
    /// Naive `replicas − 1`.
    pub fn floor(&self) -> usize {
        let r = self.spec.replicas;
        let floor = match self.spec.strategy.kind {
            StrategyType::BlueGreen => r,
            StrategyType::Rolling => {
                Budget::new(r, &self.spec.strategy.rolling_update).min_available()
            }
            StrategyType::Naive => (r - 1).max(0),
        };
        usize::try_from(floor).unwrap()
    }

    /// Live instances of `revision`.
    pub fn on(&self, revision: &str) -> Vec<&Sim> {
        self.instances
            .values()
            .filter(|i| i.revision == revision && !i.failed)
            .collect()
    }

    /// Names of instances whose evacuation runs (any state but prohibiting).
    pub fn evacuating(&self) -> Vec<String> {
        self.instances
            .values()
            .filter(|i| {
                i.evac
                    .as_ref()
                    .is_some_and(|e| e.state != EvacuationState::Prohibiting)
            })
            .map(|i| i.name.clone())
            .collect()
    }

    /// The instance in `evicting_conns`, if any.
    pub fn evicting(&self) -> Option<String> {
        self.instances
            .values()
            .find(|i| {
                i.evac
                    .as_ref()
                    .is_some_and(|e| e.state == EvacuationState::EvictingConns)
            })
            .map(|i| i.name.clone())
    }

    /// At rest: `Stable` or `Aborted`, exactly `replicas` instances, all on the
    /// status' current revision, ready, serving, none evacuating or failed.
    pub fn converged(&self) -> bool {
        let Some(json) = &self.status_json else {
            return false;
        };
        let s: Status = serde_json::from_str(json).unwrap();
        s.phase.at_rest()
            && self.last.as_ref().is_some_and(|d| d.actions.is_empty())
            && self.instances.len() == usize::try_from(self.spec.replicas).unwrap()
            && self.instances.values().all(|i| {
                i.revision == s.current_revision
                    && i.ready
                    && i.serving
                    && !i.failed
                    && i.evac.is_none()
            })
    }

    /// Steps until `done` holds (true) or `limit` more time has passed (false).
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&World) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Steps for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Connects `n` new clients, each to the least-connected serving instance.
    pub fn connect(&mut self, n: usize) {
        for _ in 0..n {
            self.clients.push(Client::default());
            self.reconnect(self.clients.len() - 1);
        }
    }

    /// Connects `n` new clients to `name`.
    pub fn connect_to(&mut self, name: &str, n: usize) {
        for _ in 0..n {
            let id = self.clients.len();
            self.clients.push(Client {
                on: Some(name.to_owned()),
                ..Client::default()
            });
            let inst = self.instances.get_mut(name).unwrap();
            inst.clients.insert(id);
            inst.peak = inst.peak.max(inst.clients.len());
        }
    }

    /// Its evacuator stops (or starts again) answering properly.
    pub fn blind(&mut self, name: &str, blind: bool) {
        if let Some(inst) = self.instances.get_mut(name) {
            inst.blind = blind;
        }
    }

    /// The instance fails: it stops being ready, its clients are dropped and
    /// reconnect, its evacuator and sessions are gone.
    pub fn fail(&mut self, name: &str) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        inst.failed = true;
        inst.ready = false;
        inst.evac = None;
        inst.sessions = 0;
        let dropped = std::mem::take(&mut inst.clients);
        for c in dropped {
            self.clients[c].drops += 1;
            self.clients[c].on = None;
            self.reconnect(c);
        }
    }

    fn reconnect(&mut self, c: usize) {
        let best = self
            .instances
            .values()
            .filter(|i| i.ready && i.serving && !i.failed)
            .min_by_key(|i| (i.clients.len(), i.name.clone()))
            .map(|i| i.name.clone());
        self.clients[c].on = best.clone();
        if let Some(name) = best {
            let inst = self.instances.get_mut(&name).unwrap();
            inst.clients.insert(c);
            inst.peak = inst.peak.max(inst.clients.len());
        }
    }

    /// One tick: the world moves, the engine decides, the actions are applied.
    pub fn step(&mut self) {
        self.now += TICK;
        self.tick += 1;
        self.advance();

        let observed = self.observe();
        let decision = decide(&self.spec, &observed, self.clock());
        if decide(&self.spec, &observed, self.clock()) != decision {
            self.violate("decide is not deterministic".into());
        }
        let json = serde_json::to_string(&decision.status).unwrap();
        if serde_json::from_str::<Status>(&json).unwrap() != decision.status {
            self.violate(format!("status does not survive JSON: {json}"));
        }

        let before = self.serving();
        for a in &decision.actions {
            self.apply(a);
        }
        self.check(before, &decision);
        if self.phases.last() != Some(&decision.status.phase) {
            self.phases.push(decision.status.phase);
        }
        if let Some(p) = decision.status.condition("Progressing")
            && self.reasons.last() != Some(&p.reason)
        {
            self.reasons.push(p.reason.clone());
        }
        if decision.clear_abort_request {
            self.abort = false;
        }
        self.status_json = Some(json);
        self.last = Some(decision);
        if self.keep_observed {
            self.observed = Some(observed);
        }
    }

    /// What a platform would report.
    pub fn observe(&self) -> Observed {
        Observed {
            instances: self.instances.values().map(report).collect(),
            last_status: self
                .status_json
                .as_deref()
                .map(|j| serde_json::from_str(j).unwrap()),
            abort_requested: self.abort,
        }
    }

    fn violate(&mut self, what: String) {
        let msg = format!("t={:.1}s: {what}", self.now.as_secs_f64());
        if self.violations.len() < 50 {
            self.violations.push(msg);
        }
    }

    /// Invariants after a decision was applied.
    fn check(&mut self, before: usize, decision: &Decision) {
        let after = self.serving();
        let floor = self.floor();
        self.min_serving = self.min_serving.min(after);
        // The engine never takes capacity below the floor (unless it already was, in
        // which case it does not lower it).
        if after < before.min(floor) {
            self.violate(format!(
                "serving went from {before} to {after} (floor {floor}): {:?}",
                decision.actions
            ));
        }
        // Below the floor, nothing is evicted (except by an evacuator that cannot
        // be reached to be stopped).
        let reachable: Vec<String> = self
            .evacuating()
            .into_iter()
            .filter(|n| !self.instances[n].blind)
            .collect();
        if after < floor && !reachable.is_empty() {
            self.violate(format!(
                "{after} serving < floor {floor}, yet evacuating {:?}",
                self.evacuating()
            ));
        }
        match self.spec.strategy.kind {
            StrategyType::BlueGreen if self.evacuating().len() > 1 => {
                self.violate(format!(
                    "blue-green evacuates {:?} at once",
                    self.evacuating()
                ));
            }
            StrategyType::Rolling => {
                let b = Budget::new(self.spec.replicas, &self.spec.strategy.rolling_update);
                let live = self.instances.values().filter(|i| !i.failed).count();
                if live > usize::try_from(b.max_pods()).unwrap() {
                    self.violate(format!("{live} instances > maxPods {}", b.max_pods()));
                }
            }
            StrategyType::Naive => {
                // One at a time, no surge.
                let live = self.instances.values().filter(|i| !i.failed).count();
                if live > usize::try_from(self.spec.replicas).unwrap() {
                    self.violate(format!("naive runs {live} instances (no surge)"));
                }
            }
            StrategyType::BlueGreen => {}
        }
    }

    fn apply(&mut self, action: &Action) {
        self.actions.push((self.now, action.clone()));
        let name = action.name().to_owned();
        if let Action::Create { name, revision } = action {
            if self.instances.contains_key(name) {
                self.violate(format!("create of existing {name}"));
                return;
            }
            self.serial += 1;
            let ready_at = (self.ready)(revision, self.serial).map(|d| self.now + d);
            self.instances.insert(
                name.clone(),
                Sim {
                    name: name.clone(),
                    revision: revision.clone(),
                    created_at: self.now,
                    ready_at,
                    ready: false,
                    serving: false,
                    failed: false,
                    clients: BTreeSet::new(),
                    sessions: 0,
                    evac: None,
                    evac_starts: 0,
                    peak: 0,
                    blind: false,
                },
            );
            return;
        }
        let now = self.now;
        if let Some(inst) = self.instances.get(&name).filter(|i| i.blind) {
            let failed = inst.failed;
            match action {
                Action::StartEvacuation { .. } => {
                    self.violate(format!("evacuation of {name} started while unknown"));
                }
                Action::Delete { .. } if !failed => {
                    self.violate(format!("deleted {name} while its load is unknown"));
                }
                _ => {}
            }
            if matches!(
                action,
                Action::StartEvacuation { .. } | Action::StopEvacuation { .. }
            ) {
                // The call fails: the evacuator does not answer properly.
                return;
            }
        }
        let Some(inst) = self.instances.get_mut(&name) else {
            self.violate(format!("{action:?} on a missing instance"));
            return;
        };
        match action {
            Action::Create { .. } => unreachable!(),
            Action::SetServing { serving, .. } => inst.serving = *serving,
            Action::StartEvacuation { evacuation, .. } => {
                let serving = inst.serving;
                inst.evac_starts += 1;
                inst.evac = Some(Evac {
                    strategy: evacuation.clone(),
                    state: EvacuationState::WaitingHealthCheck,
                    since: now,
                    initial_connected: inst.clients.len() as u64,
                    initial_sessions: inst.sessions,
                    done: 0,
                });
                if serving {
                    self.violate(format!("evacuation of {name} started while it serves"));
                }
            }
            Action::StopEvacuation { .. } => inst.evac = None,
            Action::Delete { .. } => {
                let inst = self.instances.remove(&name).unwrap();
                let naive = self.spec.strategy.kind == StrategyType::Naive;
                if !naive && !inst.failed && (!inst.clients.is_empty() || inst.sessions > 0) {
                    self.violate(format!(
                        "deleted {name} with {} connections and {} sessions",
                        inst.clients.len(),
                        inst.sessions
                    ));
                }
                for c in &inst.clients {
                    self.clients[*c].on = None;
                    if !inst.failed {
                        self.clients[*c].cuts += 1;
                    }
                }
                self.deleted.push(inst);
            }
        }
    }

    /// Readiness, evacuators, reconnects.
    fn advance(&mut self) {
        let now = self.now;
        for i in self.instances.values_mut() {
            if !i.failed && !i.ready && i.ready_at.is_some_and(|t| t <= now) {
                i.ready = true;
            }
        }
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            self.evacuate(&name);
        }
        for c in 0..self.clients.len() {
            if self.clients[c].on.is_none() {
                self.reconnect(c);
            }
        }
    }

    /// Moves one instance's evacuator as far as the clock allows.
    fn evacuate(&mut self, name: &str) {
        let now = self.now;
        loop {
            let inst = self.instances.get_mut(name).unwrap();
            let Some(e) = inst.evac.as_mut() else { return };
            let waited = now - e.since;
            let secs = |s: i32| Duration::from_secs(u64::try_from(s).unwrap());
            let allowed = |rate: i32| {
                u64::try_from(rate).unwrap() * u64::try_from(waited.as_millis()).unwrap() / 1000
            };
            match e.state {
                EvacuationState::WaitingHealthCheck
                    if waited >= secs(e.strategy.wait_health_check) =>
                {
                    e.state = EvacuationState::EvictingConns;
                    e.since = now;
                    e.done = 0;
                }
                EvacuationState::EvictingConns => {
                    let n = (allowed(e.strategy.conn_evict_rate) - e.done)
                        .min(inst.clients.len() as u64);
                    e.done += n;
                    let out: Vec<usize> = inst.clients.iter().take(n as usize).copied().collect();
                    for c in &out {
                        inst.clients.remove(c);
                    }
                    if inst.clients.is_empty() {
                        e.state = EvacuationState::WaitingTakeover;
                        e.since = now;
                    }
                    let done = inst.clients.is_empty();
                    if n > 0 {
                        self.evicted
                            .entry(name.to_owned())
                            .or_default()
                            .push((self.tick, n));
                        self.check_pace(name);
                    }
                    for c in out {
                        self.clients[c].evictions += 1;
                        self.clients[c].on = None;
                        self.reconnect(c);
                    }
                    if !done {
                        return;
                    }
                }
                EvacuationState::WaitingTakeover if waited >= secs(e.strategy.wait_takeover) => {
                    e.state = EvacuationState::EvictingSessions;
                    e.since = now;
                    e.done = 0;
                }
                EvacuationState::EvictingSessions => {
                    let n = (allowed(e.strategy.sess_evict_rate) - e.done).min(inst.sessions);
                    e.done += n;
                    inst.sessions -= n;
                    if inst.sessions == 0 {
                        e.state = EvacuationState::Prohibiting;
                    }
                    let done = inst.sessions == 0;
                    // Evicted sessions move to the least loaded serving instance.
                    let to = self
                        .instances
                        .values()
                        .filter(|i| i.ready && i.serving && !i.failed)
                        .min_by_key(|i| (i.sessions, i.name.clone()))
                        .map(|i| i.name.clone());
                    if let Some(to) = to {
                        self.instances.get_mut(&to).unwrap().sessions += n;
                    }
                    if !done {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Connections leaving one instance in any 1 s window: at most rate + 1.
    fn check_pace(&mut self, name: &str) {
        let rate = self.instances[name]
            .evac
            .as_ref()
            .unwrap()
            .strategy
            .conn_evict_rate;
        let window: u64 = self.evicted[name]
            .iter()
            .rev()
            .take_while(|(t, _)| self.tick - t < 10)
            .map(|(_, n)| n)
            .sum();
        if window > u64::try_from(rate).unwrap() + 1 {
            self.violate(format!("{name}: {window} evictions in 1 s at rate {rate}"));
        }
    }

    /// Applied actions of one kind, by a filter.
    pub fn count_actions(&self, f: impl Fn(&Action) -> bool) -> usize {
        self.actions.iter().filter(|(_, a)| f(a)).count()
    }

    /// Names in the order their evacuations were started.
    pub fn evacuation_order(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, Action::StartEvacuation { .. }))
            .map(|(_, a)| a.name().to_owned())
            .collect()
    }

    /// Every instance that ever existed (deleted ones included).
    pub fn all_instances(&self) -> impl Iterator<Item = &Sim> {
        self.instances.values().chain(self.deleted.iter())
    }
}

/// An instance as a platform reports it.
pub fn report(i: &Sim) -> Instance {
    let load = if i.blind && !i.failed {
        Load::Unknown {
            reason: "GET /evacuation answered 500".into(),
        }
    } else {
        Load::Known {
            connections: i.clients.len() as u64,
            sessions: i.sessions,
            evacuation: evacuation(i),
        }
    };
    Instance {
        name: i.name.clone(),
        revision: i.revision.clone(),
        created_at: Timestamp::EPOCH + i.created_at,
        ready: i.ready,
        serving: i.serving,
        load,
        failed: i.failed,
    }
}

/// Its evacuator's report, while one runs.
fn evacuation(i: &Sim) -> Option<NodeEvacuationStatus> {
    i.evac.as_ref().map(|e| NodeEvacuationStatus {
        node: i.name.clone(),
        state: e.state,
        stats: EvacuationStats {
            initial_connected: e.initial_connected,
            current_connected: i.clients.len() as u64,
            initial_sessions: e.initial_sessions,
            current_sessions: i.sessions,
            evicted_connections: None,
            eviction_pace: None,
        },
        connection_eviction_rate: u64::try_from(e.strategy.conn_evict_rate).unwrap(),
        session_eviction_rate: u64::try_from(e.strategy.sess_evict_rate).unwrap(),
        connection_goal: None,
        session_goal: None,
        session_recipients: Vec::new(),
    })
}

/// Every instance ready after `d`, whatever its revision.
pub fn ready_after(d: Duration) -> ReadyFn {
    Box::new(move |_, _| Some(d))
}
