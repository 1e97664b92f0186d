//! The evacuation of one upstream, EMQX's node evacuation as a state machine:
//! `waiting_health_check → evicting_conns → waiting_takeover → evicting_sessions →
//! prohibiting`, driven by a tokio task that takes its eviction slots from
//! `sluice_core`'s pacer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::admin::{EvacuationStatus, field};
use sluice_core::engine::{EvacuationState, EvacuationStats, EvictionPace};
use sluice_core::pacer::Pacer;
use sluice_core::spec::{
    DEFAULT_SESS_EVICT_RATE, DEFAULT_WAIT_HEALTH_CHECK, DEFAULT_WAIT_TAKEOVER, MAX_RATE,
    MAX_SECONDS,
};
use tokio::task::AbortHandle;

use crate::body::{BadRequest, Fields};
use crate::cli::{EvictMode, WsEvict, check_host_port};
use crate::metrics::Metrics;
use crate::registry::{Eviction, Upstream, lock};

/// The parameters of one evacuation (the POST body, defaults filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct EvacParams {
    /// Connections evicted per second.
    pub conn_evict_rate: u32,
    /// Sessions forgotten per second.
    pub sess_evict_rate: u32,
    /// Seconds between the last connection gone and session eviction.
    pub wait_takeover: u32,
    /// Seconds of still accepting before evicting.
    pub wait_health_check: u32,
    /// Server Reference sent to MQTT 5 clients with 0x9C.
    pub server_reference: Option<String>,
    /// What MQTT 5 clients are sent.
    pub mqtt5_evict: EvictMode,
    /// How WebSocket connections are closed.
    pub ws_evict: WsEvict,
    /// The instances that receive the evicted clients (EMQX's `migrate_to`),
    /// reported back in the status.
    pub migrate_to: Vec<String>,
    /// Seconds from the start of `evicting_conns` after which connections
    /// still open (idle HTTP keep-alive ones waiting for a request) are closed.
    pub deadline: u32,
}

/// The default of [`EvacParams::deadline`]: generous, since an idle HTTP
/// connection closed before its next request risks that request.
pub const DEFAULT_DEADLINE: u32 = 300;

impl EvacParams {
    /// Reads a `POST …/evacuation` body. Only `conn_evict_rate` is required; the
    /// rest default to `sluice_core`'s EMQX-like defaults and the proxy's flags.
    pub fn from_body(
        bytes: &[u8],
        default_mode: EvictMode,
        default_ws: WsEvict,
        default_reference: Option<&str>,
    ) -> Result<EvacParams, BadRequest> {
        let mut f = Fields::parse(bytes, field::EVACUATION_REQUEST)?;
        let rate = |f: &mut Fields, name| f.int(name, 1, MAX_RATE.into());
        let secs = |f: &mut Fields, name| f.int(name, 0, MAX_SECONDS.into());
        // The ranges above fit in u32, so the conversions cannot fail.
        let small = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let conn_evict_rate = rate(&mut f, field::CONN_EVICT_RATE)?.ok_or_else(|| {
            BadRequest::field(
                field::CONN_EVICT_RATE,
                format!(
                    "`{}` is required: connections to evict per second, from 1 to {MAX_RATE}",
                    field::CONN_EVICT_RATE
                ),
            )
        })?;
        let sess_evict_rate =
            rate(&mut f, field::SESS_EVICT_RATE)?.unwrap_or(DEFAULT_SESS_EVICT_RATE.into());
        let wait_takeover =
            secs(&mut f, field::WAIT_TAKEOVER)?.unwrap_or(DEFAULT_WAIT_TAKEOVER.into());
        let wait_health_check =
            secs(&mut f, field::WAIT_HEALTH_CHECK)?.unwrap_or(DEFAULT_WAIT_HEALTH_CHECK.into());
        let mut server_reference = None;
        // `redirect_to` is EMQX's name for the same thing.
        for name in [field::SERVER_REFERENCE, field::REDIRECT_TO] {
            if let Some(r) = f.string(name)? {
                check_host_port(&r)
                    .map_err(|e| BadRequest::field(name, format!("`{name}`: {e}")))?;
                server_reference = Some(r);
            }
        }
        let mqtt5_evict = {
            use sluice_api::admin::mqtt5_evict::{CLOSE, DISCONNECT_8B, DISCONNECT_9C};
            let spellings = [DISCONNECT_9C, DISCONNECT_8B, CLOSE];
            choice(&mut f, field::MQTT5_EVICT, &spellings, EvictMode::parse)?
        }
        .unwrap_or(default_mode);
        let ws_evict = {
            use sluice_api::admin::ws_evict::{INJECT, LOSSLESS};
            choice(&mut f, field::WS_EVICT, &[INJECT, LOSSLESS], WsEvict::parse)?
        }
        .unwrap_or(default_ws);
        let migrate_to = f.strings(field::MIGRATE_TO)?.unwrap_or_default();
        let deadline = secs(&mut f, field::DEADLINE)?.unwrap_or(DEFAULT_DEADLINE.into());
        Ok(EvacParams {
            deadline: small(deadline),
            conn_evict_rate: small(conn_evict_rate),
            sess_evict_rate: small(sess_evict_rate),
            wait_takeover: small(wait_takeover),
            wait_health_check: small(wait_health_check),
            server_reference: server_reference.or_else(|| default_reference.map(str::to_owned)),
            mqtt5_evict,
            ws_evict,
            migrate_to,
        })
    }
}

/// Reads the field `name`, one of `spellings`, with `parse`; the error lists
/// the spellings.
fn choice<T>(
    f: &mut Fields,
    name: &str,
    spellings: &[&str],
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, BadRequest> {
    let Some(s) = f.string(name)? else {
        return Ok(None);
    };
    parse(&s).map(Some).ok_or_else(|| {
        let quoted: Vec<String> = spellings.iter().map(|s| format!("{s:?}")).collect();
        let list = match quoted.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        BadRequest::field(name, format!("`{name}` must be {list} (got {s:?})"))
    })
}

/// The shared part of an upstream's evacuation, read by the admin API and the
/// accept path, written by the driver task.
#[derive(Debug, Default)]
pub struct Evacuation {
    /// The current state.
    pub state: EvacuationState,
    /// The running (or finished, while prohibiting) evacuation's parameters.
    pub params: Option<EvacParams>,
    initial_connected: usize,
    initial_sessions: usize,
    /// The pace of this evacuation's connection evictions, by the pacer's clock.
    pace: EvictionPace,
    task: Option<AbortHandle>,
    /// Bumped by every start and stop, so that a driver task being aborted
    /// cannot overwrite the state of a later evacuation (or of none).
    generation: u64,
}

/// A second start while one runs.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream} is already evacuating (state {}); stop it with DELETE first", state.as_str())]
pub struct AlreadyRunning {
    /// Which upstream.
    pub upstream: String,
    /// Its state.
    pub state: EvacuationState,
}

/// Waits shorter than this are slept precisely (see [`Clock::sleep_until`]).
const PRECISE_SLEEP_BELOW: Duration = Duration::from_millis(5);

/// The process clock the pacer is driven by: time since the proxy started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    fn now(self) -> Duration {
        self.0.elapsed()
    }

    /// Sleeps until `at`. tokio's timer has millisecond resolution and wakes up to
    /// a millisecond late; at 1000 evictions/s and more that is a whole slot, which
    /// the pacer makes up with a second slot at once: no lost rate, but pairs
    /// instead of an even spread. Short waits therefore sleep on a blocking
    /// thread (`nanosleep`, microsecond precision); long ones on tokio's timer.
    async fn sleep_until(self, at: Duration) {
        let wait = at.saturating_sub(self.now());
        if wait >= PRECISE_SLEEP_BELOW {
            tokio::time::sleep_until((self.0 + at).into()).await;
        } else if !wait.is_zero() {
            // The task only sleeps; a join error can only mean the runtime is
            // shutting down, when the evacuation ends anyway.
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
        }
    }
}

/// Starts evacuating `upstream`; 409 material if one already runs.
pub fn start(
    upstream: &Arc<Upstream>,
    params: EvacParams,
    clock: Clock,
    metrics: &Arc<Metrics>,
) -> Result<(), AlreadyRunning> {
    let mut evac = lock(&upstream.evacuation);
    if evac.state != EvacuationState::Disabled {
        return Err(AlreadyRunning {
            upstream: upstream.name.clone(),
            state: evac.state,
        });
    }
    evac.generation += 1;
    let generation = evac.generation;
    evac.initial_connected = upstream.live();
    evac.initial_sessions = upstream.sessions();
    evac.pace = EvictionPace::default();
    evac.params = Some(params.clone());
    evac.state = EvacuationState::WaitingHealthCheck;
    metrics.set_evacuation_state(&upstream.name, EvacuationState::WaitingHealthCheck);
    tracing::info!(
        upstream = %upstream.name,
        conn_evict_rate = params.conn_evict_rate,
        connections = evac.initial_connected,
        "evacuation started"
    );
    let task = tokio::spawn(drive(
        Arc::clone(upstream),
        params,
        clock,
        Arc::clone(metrics),
        generation,
    ));
    evac.task = Some(task.abort_handle());
    Ok(())
}

/// Stops the evacuation (if any): the upstream accepts again. Connections already
/// asked to leave still leave.
pub fn stop(upstream: &Upstream, metrics: &Metrics) {
    let mut evac = lock(&upstream.evacuation);
    if let Some(task) = evac.task.take() {
        task.abort();
    }
    if evac.state != EvacuationState::Disabled {
        tracing::info!(upstream = %upstream.name, "evacuation stopped");
    }
    evac.generation += 1;
    evac.state = EvacuationState::Disabled;
    evac.params = None;
    metrics.set_evacuation_state(&upstream.name, EvacuationState::Disabled);
}

/// Moves the evacuation of `generation` to `state`; false if it was stopped.
fn set_state(
    upstream: &Upstream,
    metrics: &Metrics,
    generation: u64,
    state: EvacuationState,
) -> bool {
    let mut evac = lock(&upstream.evacuation);
    if evac.generation != generation {
        return false;
    }
    evac.state = state;
    if state == EvacuationState::Prohibiting {
        evac.task = None;
    }
    metrics.set_evacuation_state(&upstream.name, state);
    tracing::info!(upstream = %upstream.name, state = state.as_str(), "evacuation");
    true
}

/// How often the driver looks again when it waits for connections that are
/// closing (or being established) rather than for a pacer slot.
const SETTLE_POLL: Duration = Duration::from_millis(20);

async fn drive(
    upstream: Arc<Upstream>,
    params: EvacParams,
    clock: Clock,
    metrics: Arc<Metrics>,
    generation: u64,
) {
    let set = |state| set_state(&upstream, &metrics, generation, state);
    tokio::time::sleep(Duration::from_secs(params.wait_health_check.into())).await;
    if !set(EvacuationState::EvictingConns) {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(params.deadline.into());
    let eviction = Eviction {
        mode: params.mqtt5_evict,
        server_reference: params.server_reference.as_deref().map(Arc::from),
        ws_evict: params.ws_evict,
        deadline: Some(deadline),
    };
    // Past the deadline, the slots also close connections asked to leave that
    // still wait idle for a request, longest idle first (the least likely to
    // be sending one now), at the same pace: the deadline is no burst.
    let past_deadline = || tokio::time::Instant::now() >= deadline;
    let mut pacer = Pacer::new(params.conn_evict_rate.into(), clock.now());
    // The previous eviction, while connections have been pending ever since.
    let mut previous: Option<Duration> = None;
    loop {
        if upstream.pending() == 0 && !(past_deadline() && upstream.has_idle_marked()) {
            previous = None;
            // Connections asked to leave are closing (or waiting for their
            // next request, or the deadline); ones accepted just before the
            // state changed are being established and will show up pending.
            if upstream.live() == 0 {
                break;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        } else if pacer.try_acquire(clock.now()) {
            if past_deadline() && upstream.close_longest_idle() {
                // The slot went to an idle close: the next eviction's interval
                // starts afresh.
                previous = None;
            } else {
                let now = clock.now();
                if !upstream.evict_oldest(&eviction) {
                    previous = None;
                } else if let Some(at) = previous.replace(now) {
                    record_pace(&upstream, generation, now.saturating_sub(at));
                }
            }
        } else {
            clock.sleep_until(pacer.next_slot()).await;
        }
    }
    if !set(EvacuationState::WaitingTakeover) {
        return;
    }
    tokio::time::sleep(Duration::from_secs(params.wait_takeover.into())).await;
    if !set(EvacuationState::EvictingSessions) {
        return;
    }
    let mut pacer = Pacer::new(params.sess_evict_rate.into(), clock.now());
    while upstream.sessions() > 0 {
        if pacer.try_acquire(clock.now()) {
            upstream.forget_one_session();
        } else {
            clock.sleep_until(pacer.next_slot()).await;
        }
    }
    set(EvacuationState::Prohibiting);
}

/// Adds one timed eviction to the evacuation of `generation` (none if it was
/// stopped meanwhile).
fn record_pace(upstream: &Upstream, generation: u64, since_previous: Duration) {
    let mut evac = lock(&upstream.evacuation);
    if evac.generation == generation {
        evac.pace.record(since_previous);
    }
}

/// EMQX's evacuation status shape for `GET …/evacuation`.
pub fn status(upstream: &Upstream) -> EvacuationStatus {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let (current_connected, current_sessions) =
        (count(upstream.live()), count(upstream.sessions()));
    let evac = lock(&upstream.evacuation);
    let p = evac.params.as_ref();
    let running = evac.state != EvacuationState::Disabled;
    let rate = |f: fn(&EvacParams) -> u32| p.map_or(0, |p| u64::from(f(p)));
    EvacuationStatus {
        upstream: upstream.name.clone(),
        state: evac.state,
        connection_eviction_rate: rate(|p| p.conn_evict_rate),
        session_eviction_rate: rate(|p| p.sess_evict_rate),
        wait_takeover: rate(|p| p.wait_takeover),
        wait_health_check: rate(|p| p.wait_health_check),
        server_reference: p.and_then(|p| p.server_reference.clone()),
        mqtt5_evict: p.map(|p| p.mqtt5_evict.as_str().to_owned()),
        ws_evict: p.map(|p| p.ws_evict.as_str().to_owned()),
        migrate_to: p.map(|p| p.migrate_to.clone()).unwrap_or_default(),
        deadline: p.map(|p| u64::from(p.deadline)),
        stats: EvacuationStats {
            initial_connected: if running {
                count(evac.initial_connected)
            } else {
                current_connected
            },
            current_connected,
            initial_sessions: if running {
                count(evac.initial_sessions)
            } else {
                current_sessions
            },
            current_sessions,
            evicted_connections: Some(upstream.evicted()),
            eviction_pace: running.then_some(evac.pace),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use sluice_api::admin::{EvacuationRequest, mqtt5_evict, ws_evict};

    fn parse(body: &Value) -> Result<EvacParams, BadRequest> {
        EvacParams::from_body(
            body.to_string().as_bytes(),
            EvictMode::Disconnect8b,
            WsEvict::Inject,
            Some("d:1"),
        )
    }

    fn request(r: &EvacuationRequest) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn emqx_body_with_defaults_from_core() {
        let p = parse(&request(&EvacuationRequest::at_rate(200))).unwrap();
        assert_eq!(p.conn_evict_rate, 200);
        assert_eq!(p.sess_evict_rate, DEFAULT_SESS_EVICT_RATE as u32);
        assert_eq!(p.wait_takeover, DEFAULT_WAIT_TAKEOVER as u32);
        assert_eq!(p.wait_health_check, DEFAULT_WAIT_HEALTH_CHECK as u32);
        assert_eq!(p.server_reference.as_deref(), Some("d:1"));
        assert_eq!(p.mqtt5_evict, EvictMode::Disconnect8b);
        assert_eq!(p.ws_evict, WsEvict::Inject);
        assert!(p.migrate_to.is_empty());
        let p = parse(&request(&EvacuationRequest {
            sess_evict_rate: Some(20),
            wait_takeover: Some(5),
            wait_health_check: Some(0),
            server_reference: Some("host:1883".into()),
            mqtt5_evict: Some(mqtt5_evict::CLOSE.into()),
            ws_evict: Some(ws_evict::LOSSLESS.into()),
            migrate_to: vec!["b".into(), "c".into()],
            deadline: Some(30),
            ..EvacuationRequest::at_rate(200)
        }))
        .unwrap();
        assert_eq!(p.deadline, 30);
        assert_eq!((p.sess_evict_rate, p.wait_takeover), (20, 5));
        assert_eq!(p.server_reference.as_deref(), Some("host:1883"));
        assert_eq!(p.mqtt5_evict, EvictMode::Close);
        assert_eq!(p.ws_evict, WsEvict::Lossless);
        assert_eq!(p.migrate_to, ["b", "c"]);
    }

    #[test]
    fn bad_bodies_name_the_field() {
        use field::{
            CONN_EVICT_RATE, MIGRATE_TO, MQTT5_EVICT, SERVER_REFERENCE, WAIT_TAKEOVER, WS_EVICT,
        };
        let typo = &CONN_EVICT_RATE[..CONN_EVICT_RATE.len() - 1];
        for (body, field, says) in [
            (json!({}), CONN_EVICT_RATE, "required"),
            (
                json!({ CONN_EVICT_RATE: 0 }),
                CONN_EVICT_RATE,
                "from 1 to 1000000 (got 0)",
            ),
            (
                json!({ CONN_EVICT_RATE: "x" }),
                CONN_EVICT_RATE,
                "whole number",
            ),
            (
                json!({ CONN_EVICT_RATE: 1, WAIT_TAKEOVER: -1 }),
                WAIT_TAKEOVER,
                "from 0 to 86400",
            ),
            (
                json!({ CONN_EVICT_RATE: 1, typo: 1 }),
                typo,
                "unknown field",
            ),
            (
                json!({ CONN_EVICT_RATE: 1, SERVER_REFERENCE: "nohost" }),
                SERVER_REFERENCE,
                "HOST:PORT",
            ),
            (
                json!({ CONN_EVICT_RATE: 1, MQTT5_EVICT: "kick" }),
                MQTT5_EVICT,
                mqtt5_evict::DISCONNECT_9C,
            ),
            (
                json!({ CONN_EVICT_RATE: 1, WS_EVICT: "drop" }),
                WS_EVICT,
                ws_evict::LOSSLESS,
            ),
            (
                json!({ CONN_EVICT_RATE: 1, MIGRATE_TO: "b" }),
                MIGRATE_TO,
                "list of strings",
            ),
        ] {
            let e = parse(&body).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{body}: {e}");
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn only_the_first_two_states_accept() {
        let accepting: Vec<EvacuationState> = EvacuationState::ALL
            .into_iter()
            .filter(|s| s.accepts())
            .collect();
        assert_eq!(
            accepting,
            [
                EvacuationState::Disabled,
                EvacuationState::WaitingHealthCheck
            ]
        );
    }
}
