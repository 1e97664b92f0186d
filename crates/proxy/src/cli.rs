//! The flags of `sluice proxy` and the small parsers behind them, so that a typo
//! is reported by clap with the flag's name and the expected shape.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_core::spec::{MAX_RATE, MAX_SECONDS};

/// Flags of `sluice proxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Address clients connect to, e.g. 0.0.0.0:1883. Optional with
    /// `--accept-unix`; at least one of the two is needed.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Also (or only) take connections handed over as file descriptors on a Unix
    /// socket at PATH (SCM_RIGHTS, one byte per descriptor): how `sluice up`'s
    /// front gives each new connection to this instance's evacuator without
    /// holding it. A stale file at PATH is removed first.
    #[arg(long, value_name = "PATH")]
    pub accept_unix: Option<PathBuf>,

    /// An upstream as HOST:PORT or NAME=HOST:PORT; repeat for several. Without a
    /// NAME the upstream is named after its address. With several, each new
    /// connection goes to the serving upstream with the fewest connections.
    #[arg(long = "upstream", value_name = "[NAME=]ADDR", required = true, value_parser = parse_upstream)]
    pub upstreams: Vec<UpstreamArg>,

    /// Admin API address (HTTP): PORT or HOST:PORT. A bare port binds 127.0.0.1.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9190", value_parser = parse_admin)]
    pub admin: SocketAddr,

    /// The admin API's bearer token (required by everything but /healthz and
    /// /readyz, which probes call without credentials). Without one, `--admin`
    /// must be a loopback address.
    #[command(flatten)]
    pub token: crate::auth::TokenArgs,

    /// What the connections carry: `mqtt`, `http` (HTTP/1.x, WebSocket, HTTP/2
    /// cleartext), `tcp` (opaque bytes), or `auto` (MQTT when the first bytes are
    /// an MQTT CONNECT, HTTP when they are a request line, opaque TCP otherwise).
    #[arg(long, value_enum, default_value_t = ProtocolMode::Auto)]
    pub protocol: ProtocolMode,

    /// How an MQTT 5 connection is evicted (MQTT 3.x and TCP are always closed
    /// cleanly). Can be overridden per evacuation with `mqtt5_evict` in the body.
    #[arg(long, value_enum, default_value_t = EvictMode::Close)]
    pub mqtt5_evict: EvictMode,

    /// HOST:PORT to name in MQTT 5 DISCONNECT 0x9C / CONNACK 0x9C (Server
    /// Reference) unless an evacuation sets its own `server_reference`.
    #[arg(long, value_name = "HOST:PORT")]
    pub server_reference: Option<String>,

    /// Seconds a client has to send its whole MQTT CONNECT (`--protocol mqtt`), or
    /// its first byte (`auto`, after which it is treated as opaque TCP).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_positive_secs)]
    pub connect_timeout: Duration,

    /// Seconds to wait for an upstream to accept a TCP connection.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_positive_secs)]
    pub upstream_connect_timeout: Duration,

    /// Seconds between two health probes of an upstream that failed a connect.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_positive_secs)]
    pub probe_interval: Duration,

    /// Seconds an evicted connection gets to close cleanly (finish the packet in
    /// flight, read the peer's FIN) before it is dropped.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_positive_secs)]
    pub evict_grace: Duration,

    /// The code of the Close frame an evicted WebSocket client receives: 1001
    /// (Going Away) or 1012 (Service Restart).
    #[arg(long, value_name = "CODE", default_value_t = 1001, value_parser = parse_ws_close_code)]
    pub ws_close_code: u16,

    /// How an evicted WebSocket connection is closed: `inject` (a Close to the
    /// client between two server messages; what the app sends after it is
    /// dropped) or `lossless` (a masked Close to the app between two client
    /// messages, forwarding until the app's Close reached the client; after
    /// `--evict-grace` without it, `inject`). Can be overridden per evacuation
    /// with `ws_evict` in the body.
    #[arg(long, value_enum, default_value_t = WsEvict::Inject)]
    pub ws_evict: WsEvict,

    /// Threads that carry the connections, each with its own event loop; a
    /// connection stays on the thread it was given at accept. Default: one per
    /// CPU core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// On SIGTERM: seconds to keep accepting after readiness turned 503, while
    /// endpoints forget this pod.
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = parse_secs)]
    pub drain_delay: Duration,

    /// On SIGTERM: connections evicted per second once the drain delay is over.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RATE)))]
    pub drain_rate: u32,

    /// On SIGTERM: seconds after which the proxy exits even if connections remain
    /// (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, value_name = "SECONDS", default_value = "25", value_parser = parse_secs)]
    pub drain_timeout: Duration,
}

impl ProxyArgs {
    /// The number of worker threads: `--workers`, or one per CPU core.
    pub fn workers(&self) -> usize {
        self.workers.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        )
    }
}

/// One `--upstream` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamArg {
    /// The name used in the admin API and metric labels.
    pub name: String,
    /// HOST:PORT, resolved at each connect (so a DNS name may move).
    pub addr: String,
}

/// What the proxied connections carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolMode {
    /// Sniff the first bytes: an MQTT CONNECT means MQTT, anything else opaque TCP.
    Auto,
    /// Opaque bytes; eviction is a clean close.
    Tcp,
    /// MQTT only: a client must send a valid CONNECT within the connect timeout.
    Mqtt,
    /// HTTP only: HTTP/1.x (keep-alive, WebSocket after an upgrade) or HTTP/2
    /// with prior knowledge; evicted between exchanges (see docs/proxy.md).
    Http,
}

/// How an MQTT 5 connection is told to leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum EvictMode {
    /// DISCONNECT with reason 0x9C "use another server" (+ Server Reference).
    #[value(name = "disconnect-9c")]
    Disconnect9c,
    /// DISCONNECT with reason 0x8B "server shutting down".
    #[value(name = "disconnect-8b")]
    Disconnect8b,
    /// A clean TCP close (FIN) without a DISCONNECT, as for MQTT 3.1.1.
    Close,
}

impl EvictMode {
    /// The spelling used on the command line and in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictMode::Disconnect9c => "disconnect-9c",
            EvictMode::Disconnect8b => "disconnect-8b",
            EvictMode::Close => "close",
        }
    }

    /// Parses the spelling of [`EvictMode::as_str`].
    pub fn parse(s: &str) -> Option<EvictMode> {
        [
            EvictMode::Disconnect9c,
            EvictMode::Disconnect8b,
            EvictMode::Close,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// How an evicted WebSocket connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum WsEvict {
    /// The proxy closes the client itself; the app's later messages are dropped.
    Inject,
    /// The proxy asks the app to close; every message the app sent arrives.
    Lossless,
}

impl WsEvict {
    /// The spelling used on the command line and in the admin API.
    pub fn as_str(self) -> &'static str {
        use sluice_api::admin::ws_evict::{INJECT, LOSSLESS};
        match self {
            WsEvict::Inject => INJECT,
            WsEvict::Lossless => LOSSLESS,
        }
    }

    /// Parses the spelling of [`WsEvict::as_str`].
    pub fn parse(s: &str) -> Option<WsEvict> {
        [WsEvict::Inject, WsEvict::Lossless]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

fn parse_upstream(s: &str) -> Result<UpstreamArg, String> {
    let (name, addr) = match s.split_once('=') {
        Some((name, addr)) => (name.trim(), addr.trim()),
        None => (s.trim(), s.trim()),
    };
    if name.is_empty() {
        return Err(format!(
            "the upstream name before '=' is empty in {s:?}; write NAME=HOST:PORT or just HOST:PORT"
        ));
    }
    if name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(format!(
            "upstream name {name:?} may not contain '/' or spaces (it is used in URLs)"
        ));
    }
    check_host_port(addr).map_err(|e| format!("upstream {s:?}: {e}"))?;
    Ok(UpstreamArg {
        name: name.to_owned(),
        addr: addr.to_owned(),
    })
}

/// Checks `HOST:PORT` (an IPv6 host in brackets); the error says what is expected.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let bad = || format!("expected HOST:PORT such as 127.0.0.1:1883 (got {addr:?})");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn parse_admin(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected PORT or IP:PORT such as 127.0.0.1:9190 (got {s:?})"))
}

fn parse_ws_close_code(s: &str) -> Result<u16, String> {
    match s {
        "1001" => Ok(1001),
        "1012" => Ok(1012),
        _ => Err(format!(
            "expected 1001 (Going Away) or 1012 (Service Restart) (got {s:?})"
        )),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds such as 5 or 0.5 (got {s:?})"))?;
    if !v.is_finite() || !(0.0..=f64::from(MAX_SECONDS)).contains(&v) {
        return Err(format!("must be from 0 to {MAX_SECONDS} seconds (got {s})"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err(format!("must be more than 0 seconds (got {s})"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_with_and_without_name() {
        assert_eq!(
            parse_upstream("a=127.0.0.1:1883").unwrap(),
            UpstreamArg {
                name: "a".into(),
                addr: "127.0.0.1:1883".into()
            }
        );
        let u = parse_upstream("broker:1883").unwrap();
        assert_eq!(
            (u.name.as_str(), u.addr.as_str()),
            ("broker:1883", "broker:1883")
        );
        assert!(parse_upstream("[::1]:1883").is_ok());
        assert!(
            parse_upstream("a=nohost")
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(parse_upstream("=h:1").unwrap_err().contains("empty"));
        assert!(parse_upstream("a/b=h:1").is_err());
        assert!(parse_upstream("h:0").is_err());
    }

    #[test]
    fn admin_port_alone_binds_loopback() {
        assert_eq!(
            parse_admin("9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_admin("0.0.0.0:9000").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert!(parse_admin("x").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_secs("-1").is_err());
        assert!(parse_positive_secs("0").is_err());
        assert_eq!(EvictMode::parse("close"), Some(EvictMode::Close));
        assert_eq!(EvictMode::parse("nope"), None);
        assert_eq!(WsEvict::parse("lossless"), Some(WsEvict::Lossless));
        assert_eq!(WsEvict::parse("drop"), None);
        assert_eq!(parse_ws_close_code("1012"), Ok(1012));
        assert!(parse_ws_close_code("1000").unwrap_err().contains("1001"));
    }
}
