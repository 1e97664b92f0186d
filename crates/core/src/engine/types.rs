//! The engine's inputs and outputs: what a platform observes, the actions it
//! applies, and the status it publishes (the `GracefulSet` CRD status on Kubernetes).
//!
//! Times are absolute [`Timestamp`]s (milliseconds since the UNIX epoch, RFC 3339
//! in JSON, as Kubernetes conditions carry them); the platform passes `now` in.
//! Durations (`requeueAfter`) are seconds as a JSON number.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{EvacuationStrategy, UpdateStrategy};
use crate::time::Timestamp;

/// What the user asked for: how many instances of which revision, and how to get there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The set's name (the fleet's, the `GracefulSet`'s): every instance name
    /// starts with it, so two sets with the same template never collide.
    pub name: String,
    /// Bumped by the platform whenever the spec changes (Kubernetes'
    /// `metadata.generation`); echoed as the status' `observedGeneration`.
    #[serde(default)]
    pub generation: i64,
    /// Desired number of instances (a negative number is treated as 0).
    pub replicas: i32,
    /// The desired revision: a hash of the instance template and version. Any change
    /// starts an update; the same value again never retries an aborted one.
    pub revision: String,
    /// How the fleet moves from one revision to the next.
    pub strategy: UpdateStrategy,
}

/// A snapshot of the world, as the platform sees it when it calls [`super::decide`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Every instance that exists, failed ones included, in any order.
    pub instances: Vec<Instance>,
    /// The status the engine returned last time (as published), `None` on first run.
    #[serde(default)]
    pub last_status: Option<Status>,
    /// The user asked to abort the update in progress (an annotation, a control API
    /// call). Level-triggered: platforms clear it when a decision says so
    /// ([`Decision::clear_abort_request`]), otherwise it also aborts the next
    /// update.
    #[serde(default)]
    pub abort_requested: bool,
}

/// One instance (a process behind its `sluice proxy`, or a pod) as observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Unique name, as given in [`Action::Create`].
    pub name: String,
    /// The revision it runs.
    pub revision: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Passes its readiness probe.
    pub ready: bool,
    /// Member of the serving set: the front (or Service) sends new connections to
    /// instances that are `ready` and `serving`. New instances start not serving.
    pub serving: bool,
    /// What its evacuator reported: connections, sessions, evacuation — or that
    /// it could not be read, which is never read as "empty".
    pub load: Load,
    /// The process exited or the pod failed: it will never serve again.
    #[serde(default)]
    pub failed: bool,
}

impl Instance {
    /// An instance as it looks right after [`Action::Create`]: not ready, not
    /// serving, empty.
    pub fn new(
        name: impl Into<String>,
        revision: impl Into<String>,
        created_at: Timestamp,
    ) -> Instance {
        Instance {
            name: name.into(),
            revision: revision.into(),
            created_at,
            ready: false,
            serving: false,
            load: Load::EMPTY,
            failed: false,
        }
    }

    /// Connections it holds now; `None` when unknown.
    pub fn connections(&self) -> Option<u64> {
        self.load.connections()
    }

    /// Its evacuator's report while an evacuation runs; `None` when none runs or
    /// when unknown.
    pub fn evacuation(&self) -> Option<&NodeEvacuationStatus> {
        match &self.load {
            Load::Known { evacuation, .. } => evacuation.as_ref(),
            Load::Unknown { .. } => None,
        }
    }

    /// Why its evacuator could not be read, when it could not.
    pub fn unknown(&self) -> Option<&str> {
        match &self.load {
            Load::Known { .. } => None,
            Load::Unknown { reason } => Some(reason),
        }
    }

    /// Its evacuator runs: it reports a state other than `disabled`. (Unknown:
    /// false; the engine then goes by the status' `evacuations`.)
    pub fn evacuating(&self) -> bool {
        self.evacuation()
            .is_some_and(|e| e.state != EvacuationState::Disabled)
    }

    /// Its evacuation is finished: `prohibiting` with no connection left.
    pub fn evacuated(&self) -> bool {
        self.evacuation().is_some_and(|e| {
            e.state == EvacuationState::Prohibiting && e.stats.current_connected == 0
        })
    }

    /// Not serving and known to hold nothing: deleting it disconnects nobody.
    pub fn idle(&self) -> bool {
        !self.serving
            && matches!(
                self.load,
                Load::Known {
                    connections: 0,
                    sessions: 0,
                    ..
                }
            )
    }
}

/// What an instance holds, as its evacuator reported it — or that nobody knows.
///
/// `Unknown` is not zero: an instance whose evacuator could not be read (no
/// answer, an error status, a body that does not parse) may hold every one of
/// its clients. The engine never deletes it (unless it `failed`: the process or
/// pod is gone) and never starts an evacuation on it; it says so in the
/// `InstancesKnown` condition and waits until the evacuator answers again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "load",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Load {
    /// The evacuator answered.
    Known {
        /// Connections it holds now.
        connections: u64,
        /// Sessions it holds now (MQTT persistent sessions; 0 for stateless
        /// protocols).
        sessions: u64,
        /// Its evacuator's report, `None` when no evacuation runs (`disabled`).
        #[serde(default)]
        evacuation: Option<NodeEvacuationStatus>,
    },
    /// The evacuator could not be read this time.
    Unknown {
        /// Why, for the condition that names the instance.
        reason: String,
    },
}

impl Load {
    /// Known to hold nothing, no evacuation (a new instance).
    pub const EMPTY: Load = Load::Known {
        connections: 0,
        sessions: 0,
        evacuation: None,
    };

    /// The evacuator answered.
    pub fn known(&self) -> bool {
        matches!(self, Load::Known { .. })
    }

    /// Connections held; `None` when unknown.
    pub fn connections(&self) -> Option<u64> {
        match self {
            Load::Known { connections, .. } => Some(*connections),
            Load::Unknown { .. } => None,
        }
    }

    /// Known, from an evacuator's report (`disabled` reads as no evacuation).
    pub fn from_report(report: NodeEvacuationStatus) -> Load {
        Load::Known {
            connections: report.stats.current_connected,
            sessions: report.stats.current_sessions,
            evacuation: (report.state != EvacuationState::Disabled).then_some(report),
        }
    }
}

/// One thing for the platform to do. A decision's actions are applied in order;
/// each is idempotent from the platform's side (deleting a missing instance, starting
/// an evacuation that runs, or setting a flag to its value is a no-op).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "action",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Action {
    /// Create an instance of `revision` named `name` (not serving until told).
    Create {
        /// The name the engine picked (`{revision prefix}-{lowest free index}`).
        name: String,
        /// The revision to run: the spec's, or during an abort the status'
        /// `currentRevision`, so platforms keep that revision's template around.
        revision: String,
    },
    /// Add an instance to (or remove it from) the set that receives new connections.
    SetServing {
        /// The instance.
        name: String,
        /// Whether it receives new connections.
        serving: bool,
    },
    /// Start the instance's evacuator: it moves through `waiting_health_check →
    /// evicting_conns → waiting_takeover → evicting_sessions → prohibiting`, evicting
    /// at the given rates. The instance has been taken out of serving before.
    StartEvacuation {
        /// The instance.
        name: String,
        /// Rates and waits.
        evacuation: EvacuationStrategy,
        /// The instances that receive its clients: the target revision's ready,
        /// serving instances, by name (EMQX's `migrate_to`). Platforms whose
        /// evacuator moves sessions pass it on; new connections go there anyway
        /// (see [`Status::target_revision`]).
        migrate_to: Vec<String>,
    },
    /// Stop the instance's evacuator (also a pause: the instance stays out of serving
    /// and keeps the connections it still has).
    StopEvacuation {
        /// The instance.
        name: String,
    },
    /// Delete the instance. Issued only for failed instances and ones that hold no
    /// connection and no session, or whose evacuation finished — except under the
    /// comparison-only [`crate::spec::StrategyType::Naive`], which deletes old
    /// instances with their clients.
    Delete {
        /// The instance.
        name: String,
    },
}

impl Action {
    /// The instance the action is about.
    pub fn name(&self) -> &str {
        match self {
            Action::Create { name, .. }
            | Action::SetServing { name, .. }
            | Action::StartEvacuation { name, .. }
            | Action::StopEvacuation { name }
            | Action::Delete { name } => name,
        }
    }
}

/// What [`super::decide`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Apply these, in order.
    pub actions: Vec<Action>,
    /// Publish this, and pass it back as [`Observed::last_status`] next time.
    pub status: Status,
    /// Call again after this long at the latest (sooner on any event).
    #[serde(with = "secs")]
    pub requeue_after: Duration,
    /// The abort request ([`Observed::abort_requested`]) is dealt with (the fleet
    /// is at rest): clear it — remove the annotation, reset the flag — so that it
    /// does not abort the next update.
    #[serde(default)]
    pub clear_abort_request: bool,
}

/// Where the fleet is. `Stable` and `Aborted` are at rest; the others move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// No update in progress: all instances on `currentRevision` (missing ones are
    /// being created, failed ones replaced, extra ones evacuated).
    #[default]
    Stable,
    /// BlueGreen: creating the new set and waiting until all of it is ready; the old
    /// set still serves.
    Provisioning,
    /// BlueGreen: traffic switched to the new set; waiting `initialDelaySeconds`
    /// before the first evacuation.
    WaitingInitialDelay,
    /// BlueGreen: evacuating old instances one at a time, most-connected first.
    Evacuating,
    /// Rolling: replacing instances within `maxSurge`/`maxUnavailable`.
    Rolling,
    /// Returning to `currentRevision`: the new revision's instances are evacuated
    /// and deleted (see the `Progressing` condition for why).
    Aborting,
    /// Back on `currentRevision`; the update to `updateRevision` is abandoned until
    /// the spec's revision changes.
    Aborted,
}

impl Phase {
    /// `Stable` or `Aborted`: no update moves (there is nothing to abort).
    pub fn at_rest(self) -> bool {
        matches!(self, Phase::Stable | Phase::Aborted)
    }
}

/// The published status. Besides counts and conditions it carries the few facts
/// the engine needs to stay stateless (times, the evacuation order).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// The spec's `generation` this status was decided from (Kubernetes'
    /// `observedGeneration`).
    pub observed_generation: i64,
    /// Where the fleet is.
    pub phase: Phase,
    /// The revision the fleet was last entirely on (the one an abort returns to).
    pub current_revision: String,
    /// The spec's revision.
    pub update_revision: String,
    /// Instances that exist and have not failed.
    pub replicas: i32,
    /// Of those, ready.
    pub ready_replicas: i32,
    /// Of those, ready and serving.
    pub serving_replicas: i32,
    /// Instances on `updateRevision` (not failed).
    pub updated_replicas: i32,
    /// Of those, ready.
    pub updated_ready_replicas: i32,
    /// When the update to `updateRevision` started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_started_at: Option<Timestamp>,
    /// BlueGreen: when new connections were switched to which revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_switch: Option<TrafficSwitch>,
    /// Since when the update waits for new instances to become ready with nothing
    /// else moving; `progressDeadlineSeconds` counts from here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Instances whose evacuation the engine started and which still exist; a
    /// paused one is resumed before any other is started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evacuations: Vec<String>,
    /// The running evacuations as their evacuators report them (EMQX's shape).
    pub node_evacuations_status: Vec<NodeEvacuationStatus>,
    /// `Available`, `Progressing` and `InstancesKnown`, Kubernetes style.
    pub conditions: Vec<Condition>,
}

impl Status {
    /// The revision the fleet converges to: `currentRevision` while an abort
    /// returns to it, `updateRevision` otherwise. Platforms send new connections to
    /// serving instances of this revision first, so that a client moved off an old
    /// instance does not land on another old instance and get moved twice.
    pub fn target_revision(&self) -> &str {
        match self.phase {
            Phase::Aborting | Phase::Aborted => &self.current_revision,
            _ => &self.update_revision,
        }
    }

    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The moment new connections were switched to a revision (BlueGreen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSwitch {
    /// The revision that serves since.
    pub revision: String,
    /// When.
    pub at: Timestamp,
}

/// Condition type: enough instances serve (BlueGreen: `replicas`; Rolling:
/// `replicas − maxUnavailable`).
pub const AVAILABLE: &str = "Available";
/// Condition type: the update moves (`True`) or was abandoned (`False`).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: every live instance's evacuator could be read (`True`), or
/// some could not (`False`, the message names them and why).
pub const INSTANCES_KNOWN: &str = "InstancesKnown";

/// The `reason`s of the engine's conditions.
pub mod reason {
    /// `Available=True`.
    pub const MINIMUM_REPLICAS_SERVING: &str = "MinimumReplicasServing";
    /// `Available=False`: fewer instances serve than the strategy's floor.
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// `Progressing=True`, phase `Stable`: the fleet is on the spec's revision.
    pub const UPDATE_COMPLETE: &str = "UpdateComplete";
    /// `Progressing=True`, phase `Provisioning`.
    pub const PROVISIONING: &str = "Provisioning";
    /// `Progressing=True`, phase `WaitingInitialDelay`.
    pub const WAITING_INITIAL_DELAY: &str = "WaitingInitialDelay";
    /// `Progressing=True`, phase `Evacuating`.
    pub const EVACUATING: &str = "Evacuating";
    /// `Progressing=True`, phase `Rolling`.
    pub const ROLLING: &str = "Rolling";
    /// `Progressing=True`: evacuation paused because fewer instances serve than the
    /// floor (a new instance failed or turned unready); resumes when they are back.
    pub const EVACUATION_PAUSED: &str = "EvacuationPaused";
    /// `Progressing=False`: new instances did not become ready within
    /// `progressDeadlineSeconds`; the update is aborted.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// `Progressing=False`: the user aborted the update.
    pub const USER_ABORTED: &str = "UserAborted";
    /// `InstancesKnown=True`.
    pub const ALL_INSTANCES_KNOWN: &str = "AllInstancesKnown";
    /// `InstancesKnown=False`: some instance's evacuator could not be read; it is
    /// kept (not deleted) and the update waits for it.
    pub const EVACUATOR_UNKNOWN: &str = "EvacuatorUnknown";
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// [`AVAILABLE`], [`PROGRESSING`] or [`INSTANCES_KNOWN`].
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// One CamelCase word, from [`reason`].
    pub reason: String,
    /// For humans.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Timestamp,
}

/// A condition's truth value, spelled as Kubernetes does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Nobody knows yet.
    Unknown,
}

/// An evacuator's report on one node, in EMQX's shape and field names
/// (`GET /api/v5/load_rebalance/global_status`, the EMQX Operator's
/// `nodeEvacuationsStatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeEvacuationStatus {
    /// The node (instance) being evacuated.
    pub node: String,
    /// Where its evacuation is.
    pub state: EvacuationState,
    /// Connection and session counts.
    #[serde(default)]
    pub stats: EvacuationStats,
    /// Connections evicted per second.
    #[serde(default)]
    pub connection_eviction_rate: u64,
    /// Sessions evicted per second.
    #[serde(default)]
    pub session_eviction_rate: u64,
    /// EMQX: connections the node should end with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_goal: Option<u64>,
    /// EMQX: sessions the node should end with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_goal: Option<u64>,
    /// EMQX: the nodes that receive the evicted sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_recipients: Vec<String>,
}

/// The counts an evacuator reports (EMQX's `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct EvacuationStats {
    /// Connections when the evacuation started.
    pub initial_connected: u64,
    /// Connections now.
    pub current_connected: u64,
    /// Sessions when the evacuation started.
    pub initial_sessions: u64,
    /// Sessions now.
    pub current_sessions: u64,
    /// Connections the evacuator has asked to leave since it started (a
    /// counter; not in EMQX's shape, so `None` when the evacuator does not
    /// say). `sluice up` republishes it for the bench's eviction-rate chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_connections: Option<u64>,
    /// The pace this evacuation evicted connections at, timed by the
    /// evacuator's own clock (not in EMQX's shape, so `None` when the
    /// evacuator does not say). `sluice demo` measures promise 1 with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_pace: Option<EvictionPace>,
}

/// How fast an evacuator evicted, by its own clock: every eviction that
/// followed another one while connections were still waiting to be evicted,
/// and the time since that previous one, summed. A wait for connections that
/// showed up late (none pending) is not counted, so the ratio is the pace the
/// evacuator kept while it had work: `connEvictRate` when it kept up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct EvictionPace {
    /// Evictions timed.
    pub evictions: u64,
    /// Their summed time since the previous eviction, microseconds.
    pub micros: u64,
}

impl EvictionPace {
    /// Counts one eviction made `since_previous` after the one before it, while
    /// connections were waiting all along.
    pub fn record(&mut self, since_previous: Duration) {
        self.evictions += 1;
        self.micros += u64::try_from(since_previous.as_micros()).unwrap_or(u64::MAX);
    }

    /// Evictions per second; `None` before two evictions were timed apart.
    pub fn per_second(&self) -> Option<f64> {
        (self.micros > 0).then(|| self.evictions as f64 * 1e6 / self.micros as f64)
    }

    /// This pace and `other` pooled (evictions and time summed), e.g. over
    /// the instances of a set.
    pub fn plus(self, other: EvictionPace) -> EvictionPace {
        EvictionPace {
            evictions: self.evictions + other.evictions,
            micros: self.micros.saturating_add(other.micros),
        }
    }
}

/// The states of an evacuation, EMQX's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvacuationState {
    /// Still accepting, so load balancers notice it leaves (`waitHealthCheck`).
    WaitingHealthCheck,
    /// Evicting connections at `connEvictRate`.
    EvictingConns,
    /// Connections gone; waiting `waitTakeover` for clients to take their sessions.
    WaitingTakeover,
    /// Evicting the remaining sessions at `sessEvictRate`.
    EvictingSessions,
    /// Done: refuses new connections, holds nothing; ready to be deleted.
    Prohibiting,
    /// No evacuation.
    #[default]
    Disabled,
}

impl EvacuationState {
    /// Every state, in the order an evacuation moves through them (`disabled`
    /// first), e.g. for a metric with one series per state.
    pub const ALL: [EvacuationState; 6] = [
        EvacuationState::Disabled,
        EvacuationState::WaitingHealthCheck,
        EvacuationState::EvictingConns,
        EvacuationState::WaitingTakeover,
        EvacuationState::EvictingSessions,
        EvacuationState::Prohibiting,
    ];

    /// EMQX's spelling (the serde name), e.g. for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EvacuationState::Disabled => "disabled",
            EvacuationState::WaitingHealthCheck => "waiting_health_check",
            EvacuationState::EvictingConns => "evicting_conns",
            EvacuationState::WaitingTakeover => "waiting_takeover",
            EvacuationState::EvictingSessions => "evicting_sessions",
            EvacuationState::Prohibiting => "prohibiting",
        }
    }

    /// New connections are still let through: no evacuation, or one still
    /// waiting for load balancers to notice (EMQX's semantics).
    pub fn accepts(self) -> bool {
        matches!(
            self,
            EvacuationState::Disabled | EvacuationState::WaitingHealthCheck
        )
    }
}

/// `Duration` as seconds (a JSON number), millisecond resolution.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_f64(f64::deserialize(d)?).map_err(D::Error::custom)
    }

    /// Rounds to the millisecond, so that a value written by the engine reads back
    /// exactly.
    fn from_f64(seconds: f64) -> Result<Duration, String> {
        let millis = (seconds * 1000.0).round();
        if !(0.0..=1e15).contains(&millis) {
            return Err(format!(
                "expected a time in seconds from 0 to 1e12 (got {seconds})"
            ));
        }
        Ok(Duration::from_millis(millis as u64))
    }
}

#[cfg(test)]
mod eviction_pace_tests {
    use super::*;

    #[test]
    fn a_pace_is_timed_evictions_over_their_time_and_pools_by_time() {
        let mut p = EvictionPace::default();
        assert_eq!(p.per_second(), None);
        for _ in 0..499 {
            p.record(Duration::from_millis(2));
        }
        assert_eq!((p.evictions, p.micros), (499, 998_000));
        assert!((p.per_second().unwrap() - 500.0).abs() < 1e-9);
        // Pooled with a slower one: weighted by time, not one vote each.
        let slow = EvictionPace {
            evictions: 10,
            micros: 100_000,
        };
        let both = p.plus(slow);
        assert_eq!((both.evictions, both.micros), (509, 1_098_000));
        assert!((both.per_second().unwrap() - 509.0 / 1.098).abs() < 1e-9);
        // Absent in the JSON of an evacuator that does not say.
        let stats: EvacuationStats = serde_json::from_str(
            r#"{"initial_connected":1,"current_connected":0,"initial_sessions":0,"current_sessions":0}"#,
        )
        .unwrap();
        assert_eq!(stats.eviction_pace, None);
    }
}
