//! The validated configuration of a `bench conn` run.
//!
//! The command line ([`crate::cli::ConnArgs`]) turns into a [`ConnConfig`];
//! so does a caller that uses this crate as a library (`sluice demo`). The
//! config is serde so the parent can hand it to its worker processes.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_wire::mqtt::ProtocolVersion;

/// What the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT clients: CONNECT, CONNACK, keep-alive, optional SUBSCRIBE/PUBLISH.
    Mqtt,
    /// Raw TCP clients: connect and hold, optional traffic.
    Tcp,
    /// HTTP/1.1 keep-alive clients: a `GET /` request loop on each connection.
    Http,
    /// WebSocket clients: an upgrade, then a loop of messages each waiting
    /// for its echo.
    Ws,
    /// HTTP/2 cleartext clients: a loop of gRPC-shaped unary calls on each
    /// connection.
    H2,
}

impl Protocol {
    /// Its clients count requests, non-2xx answers and socket errors.
    pub fn counts_requests(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Ws | Protocol::H2)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Ws => "ws",
            Protocol::H2 => "h2",
        })
    }
}

/// The MQTT protocol level, as a serde-friendly mirror of
/// [`ProtocolVersion`] (`-V 3.1 | 3 | 3.1.1 | 4 | 5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqttVersion {
    /// MQTT 3.1 (level 3, "MQIsdp").
    V31,
    /// MQTT 3.1.1 (level 4); `-V 3` means this one, as in most clients.
    V311,
    /// MQTT 5 (level 5), the default.
    V5,
}

impl MqttVersion {
    /// The wire crate's version.
    pub fn wire(self) -> ProtocolVersion {
        match self {
            MqttVersion::V31 => ProtocolVersion::V31,
            MqttVersion::V311 => ProtocolVersion::V311,
            MqttVersion::V5 => ProtocolVersion::V5,
        }
    }

    /// How users write it: "3.1", "3.1.1", "5".
    pub fn label(self) -> &'static str {
        match self {
            MqttVersion::V31 => "3.1",
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// How long a client waits before its next connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconnectPolicy {
    /// The base delay after a disconnect or a failed attempt (default 1000 ms,
    /// like common clients); 0 retries at once.
    pub period_ms: u64,
    /// Double the delay after each consecutive failed attempt.
    pub backoff: bool,
    /// Ceiling of the backed-off delay.
    pub max_ms: u64,
    /// Fraction (0..=1) of the delay drawn at random and taken off, so a
    /// fleet does not retry in lock step.
    pub jitter: f64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            period_ms: 1000,
            backoff: false,
            max_ms: 30_000,
            jitter: 0.0,
        }
    }
}

impl ReconnectPolicy {
    /// The delay before the next attempt, after `failures` consecutive failed
    /// attempts (0 right after a disconnect); `random` is uniform in [0, 1).
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let mut ms = self.period_ms as f64;
        if self.backoff {
            ms = (ms * 2f64.powi(failures.min(30) as i32))
                .min(self.max_ms.max(self.period_ms) as f64);
        }
        ms *= 1.0 - self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        Duration::from_micros((ms * 1000.0) as u64)
    }
}

/// An inclusive range of IPv4 source addresses the clients bind to, round
/// robin, to go past one address's ephemeral ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIps {
    /// First address.
    pub first: Ipv4Addr,
    /// Last address (not before `first`).
    pub last: Ipv4Addr,
}

impl SourceIps {
    /// How many addresses the range holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The address client `index` binds to.
    pub fn for_client(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) + index % self.len())
    }
}

impl std::str::FromStr for SourceIps {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |part: &str| {
            part.trim().parse::<Ipv4Addr>().map_err(|_| {
                format!(
                    "'{}' is not an IPv4 address (write e.g. 127.0.0.2-127.0.0.40)",
                    part.trim()
                )
            })
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let ip = parse(s)?;
                (ip, ip)
            }
        };
        if first > last {
            return Err(format!(
                "the range is backwards ({first} comes after {last}); write it low-high"
            ));
        }
        Ok(SourceIps { first, last })
    }
}

impl std::fmt::Display for SourceIps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// Everything a `bench conn` run needs, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnConfig {
    /// Host name or address of the server (or the front of a fleet).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// How many clients to play.
    pub count: u32,
    /// Gap between two new connections, in milliseconds (0: as fast as the
    /// `max_connecting` gate lets them through).
    pub interval_ms: f64,
    /// MQTT or raw TCP.
    pub protocol: Protocol,
    /// MQTT protocol level.
    pub mqtt_version: MqttVersion,
    /// Client identifier pattern; `%i` is replaced by the client's index
    /// (starting at 1, as mqttx does).
    pub client_id: String,
    /// MQTT user name.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<String>,
    /// Clean start / clean session (false with `--no-clean`).
    pub clean: bool,
    /// MQTT 5 Session Expiry Interval in seconds.
    pub session_expiry: Option<u32>,
    /// Keep alive in seconds (0: none).
    pub keepalive: u16,
    /// When to reconnect.
    pub reconnect: ReconnectPolicy,
    /// Stop by itself after this many seconds.
    pub duration_secs: Option<f64>,
    /// Bind each client to one of these addresses.
    pub source_ips: Option<SourceIps>,
    /// Topic filter each MQTT client subscribes to (`%i` replaced).
    pub subscribe: Option<String>,
    /// Messages per second each client sends (MQTT: QoS 0 PUBLISH; TCP: a
    /// line of payload).
    pub publish_rate: f64,
    /// Topic of those messages (`%i` replaced).
    pub publish_topic: String,
    /// Payload size of each message in bytes.
    pub payload_size: usize,
    /// Give up on a TCP connect or a CONNACK after this long.
    pub connect_timeout_ms: u64,
    /// HTTP clients: think time between a response and the next request, ms.
    #[serde(default = "default_http_interval_ms")]
    pub http_interval_ms: u64,
    /// At most this many clients are between "start connecting" and
    /// "connected" at once (per process), so a burst does not overflow the
    /// server's accept backlog.
    pub max_connecting: u32,
    /// Evacuators' `/metrics` URLs, scraped for connections per instance.
    pub metrics: Vec<String>,
    /// The evacuators' configured `connEvictRate`, per second: the reference
    /// line of the report's eviction-rate chart (the bench cannot know it).
    #[serde(default)]
    pub evict_rate: Option<f64>,
    /// Worker processes; `None` chooses from the open-files limit.
    pub workers: Option<u32>,
    /// No progress lines.
    pub quiet: bool,
}

impl ConnConfig {
    /// A config with the CLI's defaults for `count` clients of `host:port`.
    pub fn new(host: impl Into<String>, port: u16, count: u32) -> ConnConfig {
        ConnConfig {
            host: host.into(),
            port,
            count,
            interval_ms: 10.0,
            protocol: Protocol::Mqtt,
            mqtt_version: MqttVersion::V5,
            client_id: "sluice_bench_%i".into(),
            username: None,
            password: None,
            clean: true,
            session_expiry: None,
            keepalive: 30,
            reconnect: ReconnectPolicy::default(),
            duration_secs: None,
            source_ips: None,
            subscribe: None,
            publish_rate: 0.0,
            publish_topic: "sluice/bench/%i".into(),
            payload_size: 16,
            connect_timeout_ms: 10_000,
            http_interval_ms: default_http_interval_ms(),
            max_connecting: 64,
            metrics: Vec::new(),
            evict_rate: None,
            workers: None,
            quiet: true,
        }
    }

    /// When client `index` (0-based) makes its first attempt, counted from
    /// the start of the run.
    pub fn first_attempt_at(&self, index: u32) -> Duration {
        Duration::from_secs_f64(self.interval_ms.max(0.0) * f64::from(index) / 1000.0)
    }

    /// The client identifier of client `index` (0-based; `%i` counts from 1).
    pub fn client_id_of(&self, index: u32) -> String {
        expand(&self.client_id, index)
    }

    /// Where the run goes, for titles: "mqtt 5 → host:port".
    pub fn describe_target(&self) -> String {
        match self.protocol {
            Protocol::Mqtt => format!(
                "mqtt {} → {}:{}",
                self.mqtt_version.label(),
                self.host,
                self.port
            ),
            Protocol::Tcp => format!("tcp → {}:{}", self.host, self.port),
            Protocol::Http => format!("http/1.1 → {}:{}", self.host, self.port),
            Protocol::Ws => format!("websocket → {}:{}", self.host, self.port),
            Protocol::H2 => format!("h2c → {}:{}", self.host, self.port),
        }
    }
}

fn default_http_interval_ms() -> u64 {
    10
}

/// Replaces `%i` in `pattern` with `index + 1`.
pub fn expand(pattern: &str, index: u32) -> String {
    if pattern.contains("%i") {
        pattern.replace("%i", &(u64::from(index) + 1).to_string())
    } else {
        pattern.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_ranges() {
        let r: SourceIps = "127.0.0.2-127.0.0.40".parse().unwrap();
        assert_eq!(r.len(), 39);
        assert_eq!(r.for_client(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(r.for_client(39), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(r.for_client(40), Ipv4Addr::new(127, 0, 0, 3));
        let one: SourceIps = "10.0.0.1".parse().unwrap();
        assert_eq!(one.len(), 1);
        let err = "127.0.0.40-127.0.0.2".parse::<SourceIps>().unwrap_err();
        assert!(err.contains("backwards"), "{err}");
        assert!("127.0.0.2-nope".parse::<SourceIps>().is_err());
    }

    #[test]
    fn client_ids_count_from_one() {
        let c = ConnConfig::new("h", 1, 3);
        assert_eq!(c.client_id_of(0), "sluice_bench_1");
        assert_eq!(expand("fixed", 4), "fixed");
    }

    #[test]
    fn reconnect_delays() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(5, 0.5), Duration::from_secs(1));
        let b = ReconnectPolicy {
            backoff: true,
            max_ms: 5000,
            ..p
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::from_secs(4));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(5));
        let j = ReconnectPolicy { jitter: 0.5, ..p };
        assert_eq!(j.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(j.delay(0, 0.0), Duration::from_millis(1000));
    }

    #[test]
    fn first_attempts_follow_the_interval() {
        let mut c = ConnConfig::new("h", 1, 3);
        c.interval_ms = 0.5;
        assert_eq!(c.first_attempt_at(4), Duration::from_millis(2));
    }
}
