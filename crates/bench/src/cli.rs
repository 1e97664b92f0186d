//! `sluice bench …` on the command line: flags in the style of
//! `mqttx bench conn`, so its users feel at home.

use std::path::PathBuf;

use crate::config::{ConnConfig, MqttVersion, Protocol, ReconnectPolicy, SourceIps};
use crate::scrape::MetricsUrl;

/// Subcommands of `sluice bench`.
// Parsed once per process: the size of the `Conn` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Open and hold many MQTT or TCP connections, reconnect them like real
    /// clients do, and record every disconnect per client.
    Conn(ConnArgs),
    /// Draw the HTML report of runs saved with `conn --json` (or a demo's
    /// `bench.json`), side by side on shared axes.
    Report(ReportArgs),
    /// A trivial accept-and-CONNACK server for measuring the generator
    /// itself (several can share one port with SO_REUSEPORT).
    #[command(hide = true)]
    Sink(SinkArgs),
    /// Internal: one worker process of a `conn` run spread over processes;
    /// reads its assignment on stdin, writes records on stdout.
    #[command(hide = true)]
    Worker,
}

/// Flags of `sluice bench conn`.
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct ConnArgs {
    /// Server host name or address.
    #[arg(short = 'h', long, default_value = "127.0.0.1", value_parser = parse_host)]
    pub host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub port: u16,
    /// Number of clients.
    #[arg(short = 'c', long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Gap between two new connections in milliseconds (fractions allowed;
    /// 0 = as fast as --max-connecting lets them through).
    #[arg(short = 'i', long, default_value = "10", allow_negative_numbers = true, value_parser = parse_millis)]
    pub interval: f64,
    /// MQTT version: 3.1, 3 (= 3.1.1), 3.1.1, 4 or 5.
    #[arg(short = 'V', long = "mqtt-version", default_value = "5", value_parser = parse_mqtt_version)]
    pub mqtt_version: MqttVersion,
    /// Client identifier pattern; %i is the client's number (from 1).
    #[arg(short = 'I', long = "client-id", default_value = "sluice_bench_%i")]
    pub client_id: String,
    /// MQTT user name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// MQTT password.
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// Ask for a persistent session (clean start / clean session off).
    #[arg(long)]
    pub no_clean: bool,
    /// MQTT 5 Session Expiry Interval in seconds.
    #[arg(long, value_name = "SECS")]
    pub session_expiry: Option<u32>,
    /// Keep alive in seconds (0 = off).
    #[arg(short = 'k', long, default_value_t = 30)]
    pub keepalive: u16,
    /// Delay before reconnecting after a disconnect or a failed attempt, ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub reconnect_period: u64,
    /// Double the reconnect delay after each consecutive failed attempt.
    #[arg(long)]
    pub reconnect_backoff: bool,
    /// Ceiling of the backed-off reconnect delay, ms.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub reconnect_max: u64,
    /// Random fraction (0..1) taken off each reconnect delay.
    #[arg(long, value_name = "FRACTION", default_value = "0", value_parser = parse_fraction)]
    pub reconnect_jitter: f64,
    /// Stop after this many seconds (default: run until Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Bind clients round robin to these IPv4 source addresses, e.g.
    /// 127.0.0.2-127.0.0.40, to go past one address's ephemeral ports.
    #[arg(long, value_name = "FIRST-LAST")]
    pub source_ips: Option<SourceIps>,
    /// mqtt, tcp (connect and hold), http (HTTP/1.1 keep-alive `GET /` loop),
    /// ws (WebSocket echo loop) or h2 (HTTP/2 cleartext gRPC-shaped calls).
    #[arg(long, value_enum, default_value_t = Protocol::Mqtt)]
    pub protocol: Protocol,
    /// Topic filter each MQTT client subscribes to (%i = client number).
    #[arg(long, value_name = "TOPIC")]
    pub subscribe: Option<String>,
    /// Messages per second per client (MQTT QoS 0 PUBLISH; TCP: payload bytes).
    #[arg(long, value_name = "PER_SEC", default_value = "0", value_parser = parse_rate)]
    pub publish_rate: f64,
    /// Topic of published messages (%i = client number).
    #[arg(long, value_name = "TOPIC", default_value = "sluice/bench/%i")]
    pub publish_topic: String,
    /// Payload bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    pub payload_size: usize,
    /// HTTP, WebSocket and HTTP/2 clients: think time between a response and
    /// the next request, ms.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub http_interval_ms: u64,
    /// Give up on a TCP connect or a CONNACK after this many ms.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
    /// At most this many connections being established at once per process.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connecting: u32,
    /// Evacuators' Prometheus endpoints (http://HOST:PORT/metrics) to sample
    /// connections per instance from.
    #[arg(long, value_name = "URL", num_args = 1.., value_parser = parse_metrics_url)]
    pub metrics: Vec<MetricsUrl>,
    /// The evacuators' configured connEvictRate (per second), drawn as the
    /// reference line of the report's eviction-rate chart.
    #[arg(long, value_name = "PER_SEC", value_parser = clap::value_parser!(u32).range(1..))]
    pub evict_rate: Option<u32>,
    /// Worker processes (default: as many as the open-files limit needs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// Write the summary as one JSON object to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with SVG charts to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Title of the run in the report.
    #[arg(long)]
    pub title: Option<String>,
    /// No progress lines.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl ConnArgs {
    /// The run configuration these flags describe.
    pub fn config(&self) -> ConnConfig {
        ConnConfig {
            host: self.host.clone(),
            port: self.port,
            count: self.count,
            interval_ms: self.interval,
            protocol: self.protocol,
            mqtt_version: self.mqtt_version,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            clean: !self.no_clean,
            session_expiry: self.session_expiry,
            keepalive: self.keepalive,
            reconnect: ReconnectPolicy {
                period_ms: self.reconnect_period,
                backoff: self.reconnect_backoff,
                max_ms: self.reconnect_max,
                jitter: self.reconnect_jitter,
            },
            duration_secs: self.duration,
            source_ips: self.source_ips,
            subscribe: self.subscribe.clone(),
            publish_rate: self.publish_rate,
            publish_topic: self.publish_topic.clone(),
            payload_size: self.payload_size,
            connect_timeout_ms: self.connect_timeout,
            http_interval_ms: self.http_interval_ms,
            max_connecting: self.max_connecting,
            metrics: self.metrics.iter().map(|m| m.to_string()).collect(),
            evict_rate: self.evict_rate.map(f64::from),
            workers: self.workers,
            quiet: self.quiet,
        }
    }
}

/// Flags of `sluice bench report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Summaries written by `sluice bench conn --json`, one section each, in order.
    #[arg(value_name = "RUN.json", required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the HTML report.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Flags of the hidden `sluice bench sink`.
#[derive(Debug, Clone, clap::Args)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (shared with other sinks through SO_REUSEPORT).
    #[arg(short = 'p', long)]
    pub port: u16,
}

fn parse_host(s: &str) -> Result<String, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}' is not a host name or an IP address (e.g. 127.0.0.1 or broker.local)"
        ))
    }
}

fn parse_number(s: &str, what: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not {what}")),
    }
}

fn parse_millis(s: &str) -> Result<f64, String> {
    parse_number(s, "a number of milliseconds, 0 or more")
}

fn parse_rate(s: &str) -> Result<f64, String> {
    parse_number(s, "a rate per second, 0 or more")
}

fn parse_duration(s: &str) -> Result<f64, String> {
    match parse_number(s, "a number of seconds above 0")? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds above 0")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match parse_number(s, "a fraction between 0 and 1")? {
        v if v <= 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction between 0 and 1")),
    }
}

fn parse_mqtt_version(s: &str) -> Result<MqttVersion, String> {
    match s {
        "3.1" => Ok(MqttVersion::V31),
        "3" | "3.1.1" | "4" => Ok(MqttVersion::V311),
        "5" | "5.0" => Ok(MqttVersion::V5),
        _ => Err(format!(
            "'{s}' is not an MQTT version; use 3.1, 3.1.1 (or 3) or 5"
        )),
    }
}

fn parse_metrics_url(s: &str) -> Result<MetricsUrl, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: BenchCommand,
    }

    fn parse(args: &[&str]) -> Result<ConnArgs, String> {
        let mut all = vec!["bench", "conn"];
        all.extend_from_slice(args);
        match Top::try_parse_from(all) {
            Ok(Top {
                cmd: BenchCommand::Conn(a),
            }) => Ok(a),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn mqttx_style_flags() {
        let a = parse(&[
            "-h",
            "broker.local",
            "-p",
            "1884",
            "-c",
            "20",
            "-i",
            "0.5",
            "-V",
            "3",
            "-I",
            "dev-%i",
            "-k",
            "10",
            "--no-clean",
            "--source-ips",
            "127.0.0.2-127.0.0.3",
            "--metrics",
            "http://127.0.0.1:9/metrics",
            "http://127.0.0.1:10/metrics",
        ])
        .unwrap();
        let c = a.config();
        assert_eq!(
            (c.host.as_str(), c.port, c.count),
            ("broker.local", 1884, 20)
        );
        assert_eq!(c.interval_ms, 0.5);
        assert_eq!(c.mqtt_version, MqttVersion::V311);
        assert!(!c.clean);
        assert_eq!(c.metrics.len(), 2);
        assert_eq!(c.source_ips.unwrap().len(), 2);
        let d = parse(&[]).unwrap().config();
        assert_eq!(d.mqtt_version, MqttVersion::V5);
        assert_eq!(d.reconnect.period_ms, 1000);
        assert_eq!(d.duration_secs, None);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (args, flag) in [
            (&["-c", "0"][..], "-c"),
            (&["-i", "-1"][..], "-i"),
            (&["-h", "not a host!"][..], "-h"),
            (&["--source-ips", "127.0.0.9-127.0.0.2"][..], "--source-ips"),
            (&["--metrics", "ftp://x/metrics"][..], "--metrics"),
            (&["-V", "6"][..], "--mqtt-version"),
        ] {
            let err = parse(args).unwrap_err();
            let first = err.lines().next().unwrap();
            assert!(first.contains(flag), "{args:?}: {first}");
        }
    }
}
