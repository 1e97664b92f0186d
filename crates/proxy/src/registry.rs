//! The upstreams and the connections proxied to each: which upstream a new
//! connection goes to, which connection is evicted next, and the session
//! accounting of the evacuation status.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::cli::{EvictMode, UpstreamArg, WsEvict};
use sluice_core::balance::{Candidate, least_loaded};
use sluice_core::engine::EvacuationState;

use crate::evacuation::Evacuation;
use crate::metrics::{Metrics, Protocol, UpstreamMetrics};
use crate::mqtt::ConnectInfo;

// Every critical section here leaves the data consistent, so a panic elsewhere
// must not take the proxy down.
pub(crate) use sluice_core::sync::lock;

/// How one connection is asked to leave.
#[derive(Debug, Clone)]
pub struct Eviction {
    /// What an MQTT 5 client is sent.
    pub mode: EvictMode,
    /// The Server Reference for DISCONNECT 0x9C.
    pub server_reference: Option<Arc<str>>,
    /// How a WebSocket connection is closed.
    pub ws_evict: WsEvict,
    /// The evacuation's deadline: from then on, connections still waiting for
    /// their next exchange (idle HTTP keep-alive) are closed when the
    /// evacuation gives them their turn (longest idle first), and busy ones an
    /// evict grace later. `None` (only tests): the deadline is the mark itself.
    pub deadline: Option<tokio::time::Instant>,
}

/// A value set once (a flag, for `T = ()`) and awaited by the connection's
/// own task: one waker slot instead of a `Notify` (whose waiter puts ~100
/// bytes into every waiting future). Every future awaiting it must run in that
/// one task (its waker is the one kept); any number of them may.
#[derive(Debug)]
pub(crate) struct Signal<T = ()> {
    value: OnceLock<T>,
    waiter: Mutex<Option<Waker>>,
}

impl<T> Default for Signal<T> {
    fn default() -> Self {
        Signal {
            value: OnceLock::new(),
            waiter: Mutex::new(None),
        }
    }
}

impl<T> Signal<T> {
    /// The value, once set.
    pub(crate) fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// Sets the value (the first call wins) and wakes the waiting task.
    pub(crate) fn set(&self, value: T) {
        let _ = self.value.set(value);
        if let Some(waker) = lock(&self.waiter).take() {
            waker.wake();
        }
    }

    /// Resolves to the value once it is set.
    pub(crate) fn wait(&self) -> Raised<'_, T> {
        Raised {
            signal: self,
            registered: None,
        }
    }
}

impl Signal {
    /// Raised already.
    pub(crate) fn is_raised(&self) -> bool {
        self.get().is_some()
    }

    /// Raises it and wakes the waiting task.
    pub(crate) fn raise(&self) {
        self.set(());
    }
}

/// The future of [`Signal::wait`]. A loop may poll it at every turn: while
/// the task's waker stays the one it registered, a poll reads the value and
/// takes no lock.
#[derive(Debug)]
pub struct Raised<'a, T> {
    signal: &'a Signal<T>,
    registered: Option<Waker>,
}

impl<'a, T> Future for Raised<'a, T> {
    type Output = &'a T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<&'a T> {
        let this = self.get_mut();
        let signal = this.signal;
        if let Some(value) = signal.get() {
            return Poll::Ready(value);
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        {
            let mut waiter = lock(&signal.waiter);
            debug_assert!(
                waiter.as_ref().is_none_or(|w| w.will_wake(cx.waker())),
                "a Signal is awaited by one task only: a second task's waker would replace the first's"
            );
            *waiter = Some(cx.waker().clone());
        }
        this.registered = Some(cx.waker().clone());
        // `set` stores the value before it takes the waker: if it came
        // between the first look and the registration, it shows now.
        match signal.get() {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}

/// The handle through which the evacuation asks one connection to leave; shared
/// between the registry and the connection's task.
#[derive(Debug, Default)]
pub struct ConnControl {
    eviction: Signal<Eviction>,
    /// Since when the connection waits for its next request, as
    /// [`idle_stamp`]; 0 while an exchange is in flight (or for protocols
    /// that never wait idle).
    idle_since: AtomicU64,
    /// Its turn came to be closed while idle, past the evacuation's deadline.
    close_idle: Signal,
}

/// A point in time as nanoseconds since the first call, plus one (so that 0
/// can mean "never").
fn idle_stamp() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

impl ConnControl {
    /// Asks the connection to leave (once; later calls are ignored).
    pub fn evict(&self, eviction: Eviction) {
        self.eviction.set(eviction);
    }

    /// Records whether the connection waits idle for its next request; the
    /// idle clock starts at the first call that says so.
    pub fn set_idle(&self, idle: bool) {
        if !idle {
            self.idle_since.store(0, Ordering::Relaxed);
        } else if self.idle_since.load(Ordering::Relaxed) == 0 {
            self.idle_since.store(idle_stamp(), Ordering::Relaxed);
        }
    }

    /// When it became idle (an [`idle_stamp`]), if it is.
    fn idle_since(&self) -> Option<u64> {
        Some(self.idle_since.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Resolves once the evacuation told this (marked, idle) connection that
    /// its turn to be closed came.
    pub async fn closing(&self) {
        self.close_idle.wait().await;
    }

    /// The eviction, once asked for.
    pub fn eviction(&self) -> Option<&Eviction> {
        self.eviction.get()
    }

    /// Resolves when the connection is asked to leave. Only the connection's
    /// own task may wait on it (see [`Signal`]).
    pub fn evicted(&self) -> Raised<'_, Eviction> {
        self.eviction.wait()
    }
}

/// One upstream: its place in the serving set, its health, its connections.
#[derive(Debug)]
pub struct Upstream {
    /// Name in the admin API and metrics.
    pub name: String,
    /// HOST:PORT.
    pub addr: String,
    serving: AtomicBool,
    healthy: AtomicBool,
    probing: AtomicBool,
    /// Connections counted against this upstream (being connected, open, or
    /// closing after an eviction).
    live: AtomicUsize,
    /// Connections asked to leave by an evacuation since the proxy started.
    evicted: AtomicU64,
    /// Open connections not yet asked to leave, oldest first.
    pending: Mutex<BTreeMap<u64, Arc<ConnControl>>>,
    /// Open connections asked to leave and not yet told to close at the
    /// deadline (those waiting idle are closed there, longest idle first).
    marked: Mutex<BTreeMap<u64, Arc<ConnControl>>>,
    /// Client ids that asked for a persistent session on this upstream, with
    /// when the session expires (`None`: while connected, or never).
    sessions: Mutex<HashMap<String, Option<Instant>>>,
    /// The evacuation state machine's shared part.
    pub(crate) evacuation: Mutex<Evacuation>,
    /// Hot-path metric handles.
    pub metrics: UpstreamMetrics,
}

impl Upstream {
    fn new(arg: &UpstreamArg, metrics: &Metrics) -> Upstream {
        metrics.set_evacuation_state(&arg.name, EvacuationState::Disabled);
        Upstream {
            name: arg.name.clone(),
            addr: arg.addr.clone(),
            serving: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            pending: Mutex::default(),
            marked: Mutex::default(),
            sessions: Mutex::default(),
            evacuation: Mutex::default(),
            metrics: metrics.upstream(&arg.name),
        }
    }

    /// In the set that receives new connections.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Takes the upstream in or out of the serving set.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Its last connect succeeded (or a probe since).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Records the outcome of a connect or probe.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Claims the right to run the health probe; false if one already runs.
    pub fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::SeqCst)
    }

    /// Releases the probe claim.
    pub fn stop_probing(&self) {
        self.probing.store(false, Ordering::SeqCst);
    }

    /// The evacuation state.
    pub fn evacuation_state(&self) -> EvacuationState {
        lock(&self.evacuation).state
    }

    /// Takes new connections as far as the evacuation is concerned.
    pub fn accepting(&self) -> bool {
        self.evacuation_state().accepts()
    }

    /// Current connections (`stats.current_connected`).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Connections asked to leave by evacuations since the proxy started
    /// (`evicted_connections` in the evacuation status: the paced count, at the
    /// moment the pacer granted each eviction).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Open connections not yet asked to leave.
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Asks the oldest connection not yet asked to leave; false if none is left.
    pub fn evict_oldest(&self, eviction: &Eviction) -> bool {
        let next = lock(&self.pending).pop_first();
        match next {
            Some((id, control)) => {
                control.evict(eviction.clone());
                lock(&self.marked).insert(id, control);
                self.evicted.fetch_add(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Whether a connection asked to leave still waits idle for its next
    /// request (and was not yet told to close).
    pub fn has_idle_marked(&self) -> bool {
        lock(&self.marked)
            .values()
            .any(|c| c.idle_since().is_some())
    }

    /// Tells the connection asked to leave that has waited idle the longest
    /// to close now (the evacuation's deadline passed); false if none waits.
    pub fn close_longest_idle(&self) -> bool {
        let mut marked = lock(&self.marked);
        let longest = marked
            .iter()
            .filter_map(|(&id, c)| c.idle_since().map(|t| (t, id)))
            .min();
        let Some((_, id)) = longest else {
            return false;
        };
        if let Some(control) = marked.remove(&id) {
            control.close_idle.raise();
        }
        true
    }

    /// Persistent sessions believed to live on this upstream
    /// (`stats.current_sessions`); expired ones are forgotten.
    pub fn sessions(&self) -> usize {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, expiry| expiry.is_none_or(|t| t > now));
        sessions.len()
    }

    /// Forgets one session (the accounting side of `evicting_sessions`: the
    /// proxy holds no session state to move); false if none is left.
    pub fn forget_one_session(&self) -> bool {
        let mut sessions = lock(&self.sessions);
        let Some(id) = sessions.keys().next().cloned() else {
            return false;
        };
        sessions.remove(&id);
        true
    }

    fn session_opened(&self, client_id: &str, persistent: bool) {
        let mut sessions = lock(&self.sessions);
        if persistent {
            sessions.insert(client_id.to_owned(), None);
        } else {
            sessions.remove(client_id);
        }
    }

    fn session_taken_over(&self, client_id: &str) {
        lock(&self.sessions).remove(client_id);
    }

    fn session_closed(&self, client_id: &str, expiry: Option<Duration>) {
        if let Some(entry) = lock(&self.sessions).get_mut(client_id) {
            *entry = expiry.map(|e| Instant::now() + e);
        }
    }
}

/// Why no upstream takes a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The `upstream` metric label: the only upstream's name, or "none".
    pub upstream: String,
    /// The `reason` metric label: `evacuating` or `not_serving`.
    pub reason: &'static str,
    /// The evacuation's Server Reference, if the only upstream has one.
    pub server_reference: Option<String>,
}

/// All upstreams.
#[derive(Debug)]
pub struct Registry {
    upstreams: Vec<Arc<Upstream>>,
    next_id: AtomicU64,
    draining: AtomicBool,
    /// The metric families.
    pub metrics: Arc<Metrics>,
}

impl Registry {
    /// Builds the upstreams of the `--upstream` flags (names already unique).
    pub fn new(args: &[UpstreamArg], metrics: Arc<Metrics>) -> Registry {
        Registry {
            upstreams: args
                .iter()
                .map(|a| Arc::new(Upstream::new(a, &metrics)))
                .collect(),
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            metrics,
        }
    }

    /// Every upstream, in flag order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The upstream when there is exactly one (the sidecar case).
    pub fn only(&self) -> Option<&Arc<Upstream>> {
        match self.upstreams.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The process got SIGTERM.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the process as draining (readiness fails from now on).
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Ready for new connections: not draining, and some upstream serves,
    /// accepts and is healthy.
    pub fn ready(&self) -> bool {
        !self.draining()
            && self.upstreams.iter().any(|u| {
                u.serving() && u.healthy() && u.evacuation_state() == EvacuationState::Disabled
            })
    }

    /// Connections over all upstreams.
    pub fn total_live(&self) -> usize {
        self.upstreams.iter().map(|u| u.live()).sum()
    }

    /// Chooses the upstream for a new connection: among those serving and
    /// accepting, the healthy one with the fewest connections (an unhealthy one
    /// only when none is healthy, since it may have come back). The slot counts
    /// against the upstream from now on, so concurrent picks spread out.
    pub fn pick(&self) -> Result<ConnSlot, Refusal> {
        let candidates: Vec<&Arc<Upstream>> = self
            .upstreams
            .iter()
            .filter(|u| u.serving() && u.accepting())
            .collect();
        let chosen = least_loaded(candidates.iter().map(|u| Candidate {
            healthy: u.healthy(),
            preferred: true,
            connections: u64::try_from(u.live()).unwrap_or(u64::MAX),
        }))
        .map(|i| candidates[i]);
        match chosen {
            Some(u) => {
                u.live.fetch_add(1, Ordering::SeqCst);
                Ok(ConnSlot {
                    upstream: Arc::clone(u),
                    registered: None,
                })
            }
            None => Err(self.refusal()),
        }
    }

    fn refusal(&self) -> Refusal {
        let evacuating = self.upstreams.iter().any(|u| u.serving() && !u.accepting());
        let only = self.only();
        Refusal {
            upstream: only.map_or_else(|| "none".to_owned(), |u| u.name.clone()),
            reason: if evacuating {
                "evacuating"
            } else {
                "not_serving"
            },
            server_reference: only.and_then(|u| {
                lock(&u.evacuation)
                    .params
                    .as_ref()
                    .and_then(|p| p.server_reference.clone())
            }),
        }
    }

    /// Records that the slot's connection is established; returns its eviction
    /// handle. For MQTT, the client's session moves to this upstream (a client id
    /// that reconnects here was taken over from wherever it was).
    pub fn register(
        &self,
        slot: &mut ConnSlot,
        protocol: Protocol,
        connect: Option<&ConnectInfo>,
    ) -> Arc<ConnControl> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let control = Arc::new(ConnControl::default());
        lock(&slot.upstream.pending).insert(id, Arc::clone(&control));
        slot.upstream.metrics.opened(protocol);
        let mut session = None;
        if let Some(info) = connect.filter(|i| !i.client_id.is_empty()) {
            for u in &self.upstreams {
                if Arc::ptr_eq(u, &slot.upstream) {
                    u.session_opened(&info.client_id, info.persistent);
                } else {
                    u.session_taken_over(&info.client_id);
                }
            }
            if info.persistent {
                // v3 sessions and v5 0xFFFFFFFF never expire.
                let expiry = match info.session_expiry {
                    Some(s) if info.version.is_v5() && s != u32::MAX => {
                        Some(Duration::from_secs(s.into()))
                    }
                    _ => None,
                };
                session = Some((info.client_id.clone(), expiry));
            }
        }
        slot.registered = Some(Registered {
            id,
            protocol,
            session,
        });
        control
    }
}

#[derive(Debug)]
struct Registered {
    id: u64,
    protocol: Protocol,
    session: Option<(String, Option<Duration>)>,
}

/// A connection's place on its upstream; dropping it releases the place, so a
/// connection is counted exactly as long as its task holds the slot.
#[derive(Debug)]
pub struct ConnSlot {
    upstream: Arc<Upstream>,
    registered: Option<Registered>,
}

impl ConnSlot {
    /// The upstream this connection goes to.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let u = &self.upstream;
        if let Some(r) = self.registered.take() {
            lock(&u.pending).remove(&r.id);
            lock(&u.marked).remove(&r.id);
            u.metrics.closed(r.protocol);
            if let Some((client_id, expiry)) = r.session {
                u.session_closed(&client_id, expiry);
            }
        }
        u.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::mqtt::ProtocolVersion;

    /// A waker that only counts its wakes: each one is a task of its own.
    struct Counting(AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_signal_wakes_its_task_once_and_then_reads_ready() {
        let signal = Signal::default();
        let task = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        // Two waits in the one task (as the two directions of a connection).
        let (mut first, mut second) = (signal.wait(), signal.wait());
        assert!(poll(&mut first, &waker).is_pending());
        assert!(poll(&mut second, &waker).is_pending());
        assert!(
            poll(&mut first, &waker).is_pending(),
            "polled again: still waiting"
        );
        signal.raise();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken once");
        assert!(poll(&mut first, &waker).is_ready());
        assert!(poll(&mut second, &waker).is_ready());
        assert!(
            poll(&mut signal.wait(), &waker).is_ready(),
            "raised stays raised"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "awaited by one task only")]
    fn a_signal_awaited_by_a_second_task_is_caught() {
        let signal: Signal = Signal::default();
        let one = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let other = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        assert!(poll(&mut signal.wait(), &one).is_pending());
        let _ = poll(&mut signal.wait(), &other);
    }

    fn registry(names: &[&str]) -> Registry {
        let args: Vec<UpstreamArg> = names
            .iter()
            .enumerate()
            .map(|(i, n)| UpstreamArg {
                name: (*n).into(),
                addr: format!("127.0.0.1:{}", 1000 + i),
            })
            .collect();
        Registry::new(&args, Arc::new(Metrics::new()))
    }

    fn names(slots: &[ConnSlot]) -> Vec<&str> {
        slots.iter().map(|s| s.upstream().name.as_str()).collect()
    }

    #[test]
    fn picks_the_least_connected_serving_upstream() {
        let r = registry(&["a", "b", "c"]);
        r.get("c").unwrap().set_serving(false);
        let slots: Vec<ConnSlot> = (0..4).map(|_| r.pick().unwrap()).collect();
        assert_eq!(names(&slots), ["a", "b", "a", "b"]);
        r.get("b").unwrap().set_healthy(false);
        assert_eq!(r.pick().unwrap().upstream().name, "a", "healthy first");
        r.get("a").unwrap().set_serving(false);
        assert_eq!(
            r.pick().unwrap().upstream().name,
            "b",
            "unhealthy beats nothing"
        );
        drop(slots);
        assert_eq!(r.total_live(), 0, "slots release their place");
    }

    #[test]
    fn refuses_with_a_reason_when_nothing_serves() {
        let r = registry(&["a"]);
        r.get("a").unwrap().set_serving(false);
        let e = r.pick().unwrap_err();
        assert_eq!((e.upstream.as_str(), e.reason), ("a", "not_serving"));
        r.get("a").unwrap().set_serving(true);
        lock(&r.get("a").unwrap().evacuation).state = EvacuationState::EvictingConns;
        assert_eq!(r.pick().unwrap_err().reason, "evacuating");
        assert!(!r.ready());
        lock(&r.get("a").unwrap().evacuation).state = EvacuationState::WaitingHealthCheck;
        assert!(
            r.pick().is_ok(),
            "still accepting while load balancers catch up"
        );
        let r2 = registry(&["a", "b"]);
        r2.get("a").unwrap().set_serving(false);
        r2.get("b").unwrap().set_serving(false);
        assert_eq!(r2.pick().unwrap_err().upstream, "none");
    }

    #[test]
    fn evicts_oldest_first_and_counts_sessions() {
        let r = registry(&["a", "b"]);
        let info = |id: &str, persistent| ConnectInfo {
            version: ProtocolVersion::V311,
            client_id: id.into(),
            persistent,
            session_expiry: None,
        };
        r.get("b").unwrap().set_serving(false);
        let mut s1 = r.pick().unwrap();
        let c1 = r.register(&mut s1, Protocol::Mqtt, Some(&info("p", true)));
        let mut s2 = r.pick().unwrap();
        let c2 = r.register(&mut s2, Protocol::Tcp, None);
        let a = Arc::clone(r.get("a").unwrap());
        assert_eq!((a.live(), a.pending(), a.sessions()), (2, 2, 1));
        let ev = Eviction {
            mode: EvictMode::Close,
            server_reference: None,
            ws_evict: WsEvict::Inject,
            deadline: None,
        };
        assert!(a.evict_oldest(&ev));
        assert!(c1.eviction().is_some() && c2.eviction().is_none());
        drop(s1);
        assert_eq!(
            (a.live(), a.sessions()),
            (1, 1),
            "the session outlives the connection"
        );
        // The client comes back through b: its session was taken over.
        r.get("b").unwrap().set_serving(true);
        r.get("a").unwrap().set_serving(false);
        let mut s3 = r.pick().unwrap();
        r.register(&mut s3, Protocol::Mqtt, Some(&info("p", true)));
        assert_eq!((a.sessions(), r.get("b").unwrap().sessions()), (0, 1));
        assert!(a.evict_oldest(&ev));
        assert!(!a.evict_oldest(&ev));
        assert!(r.get("b").unwrap().forget_one_session());
        assert_eq!(r.get("b").unwrap().sessions(), 0);
    }

    #[test]
    fn closes_idle_marked_connections_longest_idle_first() {
        let r = registry(&["a"]);
        let a = Arc::clone(r.get("a").unwrap());
        let mut slots = Vec::new();
        let controls: Vec<Arc<ConnControl>> = (0..4)
            .map(|_| {
                let mut s = r.pick().unwrap();
                let c = r.register(&mut s, Protocol::Http, None);
                slots.push(s);
                c
            })
            .collect();
        // Idle since: 2, then 0, then 3; 1 is busy. Apart by a millisecond
        // so that the stamps differ.
        for i in [2, 0, 3] {
            controls[i].set_idle(true);
            std::thread::sleep(Duration::from_millis(1));
        }
        controls[0].set_idle(true);
        controls[1].set_idle(false);
        assert!(!a.has_idle_marked(), "nothing is marked yet");
        let ev = Eviction {
            mode: EvictMode::Close,
            server_reference: None,
            ws_evict: WsEvict::Inject,
            deadline: None,
        };
        while a.evict_oldest(&ev) {}
        assert!(a.has_idle_marked());
        let told = |c: &ConnControl| c.close_idle.is_raised();
        let mut order = Vec::new();
        while a.close_longest_idle() {
            let next = (0..4).find(|&i| told(&controls[i]) && !order.contains(&i));
            order.push(next.unwrap());
        }
        assert_eq!(order, [2, 0, 3], "longest idle first, the busy one never");
        assert!(!a.has_idle_marked());
        // A connection that closes leaves the marked set.
        controls[1].set_idle(true);
        drop(slots.remove(1));
        assert!(!a.close_longest_idle());
    }
}
