//! What the clients saw: live counters for the progress line and the
//! timeline, per-client records, and their mergeable aggregate.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_core::sync::lock;
use sluice_wire::mqtt::reason;

/// Why a connection ended, or why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The server sent DISCONNECT (MQTT 5 reason code; 0 for 3.1.1).
    ServerDisconnect(u8),
    /// The peer closed the connection (FIN, end of stream).
    ClosedByPeer,
    /// The HTTP server announced `Connection: close` and closed after the
    /// response: a graceful leave, not an error.
    ConnectionClose,
    /// The WebSocket server sent a Close with this code (answered): a
    /// graceful leave.
    WsClose(u16),
    /// The HTTP/2 server sent GOAWAY with NO_ERROR: a graceful leave.
    GoAway,
    /// The connection was reset (RST, broken pipe).
    Reset,
    /// Nobody listened (RST to SYN).
    ConnectRefused,
    /// TCP connect did not finish in time.
    ConnectTimeout,
    /// CONNACK with a non-zero reason / return code.
    ConnAckRefused(u8),
    /// No CONNACK in time.
    ConnAckTimeout,
    /// No answer to PINGREQ within the keep-alive.
    KeepAliveTimeout,
    /// The server sent bytes that are not MQTT.
    ProtocolError,
    /// The process ran out of file descriptors (EMFILE).
    TooManyOpenFiles,
    /// Any other socket error.
    Io(std::io::ErrorKind),
}

impl Cause {
    /// The stable key used in the JSON summary (`closed_by_peer`,
    /// `server_disconnect:0x8b`, …).
    pub fn key(&self) -> String {
        match self {
            Cause::ServerDisconnect(code) => format!("server_disconnect:{code:#04x}"),
            Cause::ClosedByPeer => "closed_by_peer".into(),
            Cause::ConnectionClose => "connection_close".into(),
            Cause::WsClose(code) => format!("ws_close:{code}"),
            Cause::GoAway => "goaway".into(),
            Cause::Reset => "reset".into(),
            Cause::ConnectRefused => "connect_refused".into(),
            Cause::ConnectTimeout => "connect_timeout".into(),
            Cause::ConnAckRefused(code) => format!("connack_refused:{code:#04x}"),
            Cause::ConnAckTimeout => "connack_timeout".into(),
            Cause::KeepAliveTimeout => "keepalive_timeout".into(),
            Cause::ProtocolError => "protocol_error".into(),
            Cause::TooManyOpenFiles => "too_many_open_files".into(),
            Cause::Io(kind) => format!("io:{kind:?}").to_lowercase(),
        }
    }

    /// The cause of a socket error.
    pub fn of_io(e: &std::io::Error) -> Cause {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => Cause::Reset,
            ConnectionRefused => Cause::ConnectRefused,
            UnexpectedEof => Cause::ClosedByPeer,
            TimedOut => Cause::ConnectTimeout,
            kind => Cause::Io(kind),
        }
    }
}

/// Human words for a cause key, for the text summary and the report.
pub fn describe_cause(key: &str) -> String {
    let code = |k: &str| {
        k.rsplit_once(":0x")
            .and_then(|(_, hex)| u8::from_str_radix(hex, 16).ok())
            .unwrap_or(0)
    };
    match key {
        "closed_by_peer" => "closed by peer".into(),
        "connection_close" => "Connection: close".into(),
        "goaway" => "HTTP/2 GOAWAY".into(),
        "reset" => "reset".into(),
        "connect_refused" => "connect refused".into(),
        "connect_timeout" => "connect timeout".into(),
        "connack_timeout" => "no CONNACK".into(),
        "keepalive_timeout" => "keep-alive timeout".into(),
        "protocol_error" => "protocol error".into(),
        "too_many_open_files" => "too many open files".into(),
        k if k.starts_with("server_disconnect:") => {
            format!(
                "server DISCONNECT {:#04x} ({})",
                code(k),
                reason::name(code(k))
            )
        }
        k if k.starts_with("ws_close:") => format!("WebSocket Close {}", &k[9..]),
        k if k.starts_with("connack_refused:") => {
            format!(
                "CONNACK refused {:#04x} ({})",
                code(k),
                reason::name(code(k))
            )
        }
        other => other.replace(':', " "),
    }
}

/// Live counts one process's clients keep up to date; read by the progress
/// line and the timeline sampler (or, for a worker process, sent to the
/// parent, which stores them into its own copy).
#[derive(Debug, Default)]
pub struct Counters {
    /// Clients connected now.
    pub connected: AtomicU64,
    /// Clients connected at least once.
    pub ever_connected: AtomicU64,
    /// Connection attempts started.
    pub attempts: AtomicU64,
    /// Successful connections (CONNACK accepted / TCP established).
    pub connects: AtomicU64,
    /// Established connections lost.
    pub disconnects: AtomicU64,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// HTTP requests sent (see [`HttpCounts`]; zero for MQTT and TCP).
    pub requests: AtomicU64,
    /// HTTP responses outside 200-299.
    pub non2xx: AtomicU64,
    /// HTTP requests that failed at the socket level.
    pub socket_errors: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Clients connected.
    pub connected: u64,
    /// Clients connected at least once.
    pub ever_connected: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Successful connections.
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Failed attempts.
    pub failures: u64,
    /// HTTP request counts so far.
    #[serde(default)]
    pub http: HttpCounts,
}

impl Counters {
    /// Reads all counters.
    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            connected: get(&self.connected),
            ever_connected: get(&self.ever_connected),
            attempts: get(&self.attempts),
            connects: get(&self.connects),
            disconnects: get(&self.disconnects),
            failures: get(&self.failures),
            http: HttpCounts {
                requests: get(&self.requests),
                non2xx: get(&self.non2xx),
                socket_errors: get(&self.socket_errors),
            },
        }
    }

    /// Overwrites all counters (a worker's latest report).
    pub fn store(&self, s: Snapshot) {
        let set = |a: &AtomicU64, v| a.store(v, Ordering::Relaxed);
        set(&self.connected, s.connected);
        set(&self.ever_connected, s.ever_connected);
        set(&self.attempts, s.attempts);
        set(&self.connects, s.connects);
        set(&self.disconnects, s.disconnects);
        set(&self.failures, s.failures);
        set(&self.requests, s.http.requests);
        set(&self.non2xx, s.http.non2xx);
        set(&self.socket_errors, s.http.socket_errors);
    }
}

impl std::ops::Add for Snapshot {
    type Output = Snapshot;

    fn add(self, o: Snapshot) -> Snapshot {
        Snapshot {
            connected: self.connected + o.connected,
            ever_connected: self.ever_connected + o.ever_connected,
            attempts: self.attempts + o.attempts,
            connects: self.connects + o.connects,
            disconnects: self.disconnects + o.disconnects,
            failures: self.failures + o.failures,
            http: {
                let mut http = self.http;
                http += o.http;
                http
            },
        }
    }
}

/// Adds one to `a`.
pub(crate) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Counts per cause, kept small inside each client.
#[derive(Debug, Clone, Default)]
pub struct CauseCounts(Vec<(Cause, u32)>);

impl CauseCounts {
    /// Counts one more `cause`.
    pub fn add(&mut self, cause: Cause) {
        match self.0.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, n)) => *n += 1,
            None => self.0.push((cause, 1)),
        }
    }

    /// Total count.
    pub fn total(&self) -> u32 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    fn add_to(&self, map: &mut BTreeMap<String, u64>) {
        for (cause, n) in &self.0 {
            *map.entry(cause.key()).or_insert(0) += u64::from(*n);
        }
    }
}

/// What one client saw during the run.
#[derive(Debug, Clone, Default)]
pub struct ClientRecord {
    /// Successful connections.
    pub connects: u32,
    /// Established connections lost, by cause.
    pub disconnects: CauseCounts,
    /// Failed attempts, by cause.
    pub failures: CauseCounts,
    /// Time spent disconnected after a disconnect, until reconnected (or the
    /// end of the run).
    pub down: Duration,
    /// HTTP clients' request counts (zero for other protocols).
    pub http: HttpCounts,
}

/// What one HTTP client saw of its requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpCounts {
    /// Requests sent.
    pub requests: u64,
    /// Complete responses with a status outside 200-299.
    pub non2xx: u64,
    /// Requests that failed at the socket level: a reset, the connection
    /// closed before or inside a response without `Connection: close`, an
    /// unparseable response, or a failed reconnect after having been connected.
    pub socket_errors: u64,
}

/// One client's request counts as it counts them: into its own record and
/// into the process's live [`Counters`], which the timeline samples.
pub(crate) struct HttpTally<'a> {
    record: &'a mut HttpCounts,
    live: &'a Counters,
}

impl<'a> HttpTally<'a> {
    /// Counts into `record` and `live`.
    pub(crate) fn new(record: &'a mut HttpCounts, live: &'a Counters) -> Self {
        HttpTally { record, live }
    }

    /// One more request sent.
    pub(crate) fn request(&mut self) {
        self.record.requests += 1;
        inc(&self.live.requests);
    }

    /// One more response outside 200-299.
    pub(crate) fn non2xx(&mut self) {
        self.record.non2xx += 1;
        inc(&self.live.non2xx);
    }

    /// One more request failed at the socket level.
    pub(crate) fn socket_error(&mut self) {
        self.record.socket_errors += 1;
        inc(&self.live.socket_errors);
    }
}

impl std::ops::AddAssign for HttpCounts {
    fn add_assign(&mut self, o: HttpCounts) {
        self.requests += o.requests;
        self.non2xx += o.non2xx;
        self.socket_errors += o.socket_errors;
    }
}

/// Samples shared by a process's clients: establishment latencies,
/// reconnect times and Server References.
#[derive(Debug, Default)]
pub struct SharedSamples {
    connect_micros: Mutex<Vec<u32>>,
    reconnect_millis: Mutex<Vec<u32>>,
    server_references: Mutex<BTreeMap<String, u64>>,
}

impl SharedSamples {
    /// Records how long one connection took to establish.
    pub fn connect_latency(&self, d: Duration) {
        let v = d.as_micros().min(u128::from(u32::MAX)) as u32;
        lock(&self.connect_micros).push(v);
    }

    /// Records how long a client was without a connection after a
    /// disconnect.
    pub fn reconnect_time(&self, d: Duration) {
        let v = d.as_millis().min(u128::from(u32::MAX)) as u32;
        lock(&self.reconnect_millis).push(v);
    }

    /// Records a Server Reference a DISCONNECT carried.
    pub fn server_reference(&self, reference: &str) {
        *lock(&self.server_references)
            .entry(reference.to_owned())
            .or_insert(0) += 1;
    }
}

/// The aggregate of many clients' records: what a worker process sends its
/// parent, and what the parent merges into the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// Clients.
    pub clients: u64,
    /// Clients connected when the run was told to stop.
    pub connected_at_stop: u64,
    /// Clients that never connected.
    pub never_connected: u64,
    /// Attempts.
    pub attempts: u64,
    /// Successful connections.
    pub connects: u64,
    /// Index n: clients that saw exactly n disconnects.
    pub disconnect_histogram: Vec<u64>,
    /// Disconnects by cause key.
    pub disconnect_causes: BTreeMap<String, u64>,
    /// Failed attempts by cause key.
    pub attempt_failures: BTreeMap<String, u64>,
    /// Server References received, and how often.
    pub server_references: BTreeMap<String, u64>,
    /// Sum over clients of the time spent disconnected, ms.
    pub down_millis_total: u64,
    /// The longest any one client spent disconnected in total, ms.
    pub down_millis_max: u64,
    /// Establishment latencies, µs.
    pub connect_micros: Vec<u32>,
    /// Times from a disconnect to the next connection, ms.
    pub reconnect_millis: Vec<u32>,
    /// Seconds from the first attempt to the moment every client had
    /// connected once (`None` if some never did).
    pub ramp_secs: Option<f64>,
    /// Resident memory before the clients started, bytes (summed over
    /// processes).
    pub rss_baseline_bytes: u64,
    /// Peak resident memory, bytes (summed over processes).
    pub rss_peak_bytes: u64,
    /// Processes that ran clients.
    pub processes: u32,
    /// HTTP clients' request counts, summed.
    #[serde(default)]
    pub http: HttpCounts,
}

impl Aggregate {
    /// Folds in one client's record.
    pub fn add_client(&mut self, r: &ClientRecord) {
        self.clients += 1;
        self.connects += u64::from(r.connects);
        self.attempts += u64::from(r.connects + r.failures.total());
        if r.connects == 0 {
            self.never_connected += 1;
        }
        let n = r.disconnects.total() as usize;
        if self.disconnect_histogram.len() <= n {
            self.disconnect_histogram.resize(n + 1, 0);
        }
        self.disconnect_histogram[n] += 1;
        r.disconnects.add_to(&mut self.disconnect_causes);
        r.failures.add_to(&mut self.attempt_failures);
        let down = r.down.as_millis() as u64;
        self.down_millis_total += down;
        self.down_millis_max = self.down_millis_max.max(down);
        self.http += r.http;
    }

    /// Moves the shared samples in.
    pub fn take_samples(&mut self, s: &SharedSamples) {
        self.connect_micros.append(&mut lock(&s.connect_micros));
        self.reconnect_millis.append(&mut lock(&s.reconnect_millis));
        for (k, v) in std::mem::take(&mut *lock(&s.server_references)) {
            *self.server_references.entry(k).or_insert(0) += v;
        }
    }

    /// Merges another process's aggregate into this one.
    pub fn merge(&mut self, mut o: Aggregate) {
        self.clients += o.clients;
        self.connected_at_stop += o.connected_at_stop;
        self.never_connected += o.never_connected;
        self.attempts += o.attempts;
        self.connects += o.connects;
        if self.disconnect_histogram.len() < o.disconnect_histogram.len() {
            self.disconnect_histogram
                .resize(o.disconnect_histogram.len(), 0);
        }
        for (i, n) in o.disconnect_histogram.iter().enumerate() {
            self.disconnect_histogram[i] += n;
        }
        for (mine, theirs) in [
            (&mut self.disconnect_causes, o.disconnect_causes),
            (&mut self.attempt_failures, o.attempt_failures),
            (&mut self.server_references, o.server_references),
        ] {
            for (k, v) in theirs {
                *mine.entry(k).or_insert(0) += v;
            }
        }
        self.down_millis_total += o.down_millis_total;
        self.down_millis_max = self.down_millis_max.max(o.down_millis_max);
        self.connect_micros.append(&mut o.connect_micros);
        self.reconnect_millis.append(&mut o.reconnect_millis);
        self.ramp_secs = match (self.processes, self.ramp_secs, o.ramp_secs) {
            (0, _, theirs) => theirs,
            (_, Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        self.rss_baseline_bytes += o.rss_baseline_bytes;
        self.rss_peak_bytes += o.rss_peak_bytes;
        self.processes += o.processes;
        self.http += o.http;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_keys_and_words() {
        assert_eq!(
            Cause::ServerDisconnect(0x8b).key(),
            "server_disconnect:0x8b"
        );
        assert_eq!(
            describe_cause("server_disconnect:0x8b"),
            "server DISCONNECT 0x8b (server shutting down)"
        );
        assert_eq!(
            Cause::Io(std::io::ErrorKind::AddrNotAvailable).key(),
            "io:addrnotavailable"
        );
        assert_eq!(describe_cause("closed_by_peer"), "closed by peer");
    }

    #[test]
    fn aggregates_merge() {
        let mut a = Aggregate {
            processes: 1,
            ramp_secs: Some(1.0),
            ..Default::default()
        };
        let mut r = ClientRecord {
            connects: 2,
            ..Default::default()
        };
        r.disconnects.add(Cause::ClosedByPeer);
        r.failures.add(Cause::ConnectRefused);
        r.failures.add(Cause::ConnectRefused);
        a.add_client(&r);
        a.add_client(&ClientRecord::default());
        assert_eq!(a.disconnect_histogram, [1, 1]);
        assert_eq!(a.attempts, 4);
        assert_eq!(a.never_connected, 1);
        let mut b = Aggregate {
            processes: 1,
            ramp_secs: Some(2.0),
            ..Default::default()
        };
        let mut r3 = ClientRecord::default();
        for _ in 0..3 {
            r3.disconnects.add(Cause::Reset);
        }
        b.add_client(&r3);
        a.merge(b);
        assert_eq!(a.disconnect_histogram, [1, 1, 0, 1]);
        assert_eq!(a.disconnect_causes["reset"], 3);
        assert_eq!(a.attempt_failures["connect_refused"], 2);
        assert_eq!(a.ramp_secs, Some(2.0));
        assert_eq!(a.processes, 2);
    }
}
