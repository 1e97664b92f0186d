//! The summary of a run: what the clients saw, as one serde object (the
//! `--json` file, and what `sluice demo` reads back) and as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{ConnConfig, Protocol};
use crate::recorder::{Aggregate, HttpCounts, describe_cause};

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Title of the run (report section heading).
    pub title: String,
    /// Where it went: "mqtt 5 → 127.0.0.1:1883".
    pub target: String,
    /// What the clients spoke.
    pub protocol: Protocol,
    /// Clients played.
    pub clients: u64,
    /// Clients connected when the run stopped.
    pub connected_at_end: u64,
    /// Clients that never connected.
    pub never_connected: u64,
    /// Length of the run, seconds.
    pub duration_secs: f64,
    /// Processes the clients ran in.
    pub workers: u32,
    /// Connection attempts.
    pub attempts: u64,
    /// Successful connections.
    pub connects: u64,
    /// Established connections lost (any cause), over all clients.
    pub disconnects: u64,
    /// The most disconnects any one client saw.
    pub max_disconnects_per_client: u64,
    /// Index n: how many clients saw exactly n disconnects.
    pub disconnect_histogram: Vec<u64>,
    /// Disconnects by cause (`closed_by_peer`, `reset`,
    /// `server_disconnect:0x8b`, `keepalive_timeout`, …).
    pub disconnect_causes: BTreeMap<String, u64>,
    /// Failed attempts by cause (`connect_refused`, `connack_refused:0x88`,
    /// `connect_timeout`, …).
    pub attempt_failures: BTreeMap<String, u64>,
    /// Server References received in DISCONNECTs, and how often.
    pub server_references: BTreeMap<String, u64>,
    /// Establishment latency (TCP connect to CONNACK), ms.
    pub connect_millis: Percentiles,
    /// Time from a disconnect to the next connection, ms.
    pub reconnect_millis: Percentiles,
    /// Time spent disconnected after disconnects.
    pub disconnected_millis: DownTime,
    /// The deepest dip in connected clients.
    pub deepest_dip: Dip,
    /// The initial ramp: how fast the clients first connected.
    pub ramp: Ramp,
    /// Resident memory of the processes that ran the clients.
    pub memory: Memory,
    /// Instances seen in the evacuators' metrics: in the order of the
    /// `--metrics` URLs that report them, then in first-seen order.
    pub instances: Vec<String>,
    /// Each instance's revision, where the metrics label it (`sluice up`
    /// does): the report groups instances by revision, the first seen being
    /// the old set. Empty: one group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, String>,
    /// The configured `connEvictRate` per second (`--evict-rate`; the demo
    /// sets it): the eviction-rate chart's reference line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evict_rate: Option<f64>,
    /// HTTP runs only: requests sent, over all clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// HTTP runs only: complete responses with a status outside 200-299.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non2xx: Option<u64>,
    /// HTTP runs only: requests that failed at the socket level (reset, closed
    /// before or inside a response without `Connection: close`, bad response,
    /// failed reconnect after having been connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_errors: Option<u64>,
    /// Samples every 100 ms.
    pub timeline: Vec<TimelineSample>,
}

/// One timeline sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineSample {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Clients connected.
    pub connected: u64,
    /// Connections per instance (upstream), from `--metrics`.
    pub per_instance: BTreeMap<String, u64>,
    /// Reconnections so far: connections after each client's first (the
    /// bench's own count). `None` in summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
    /// Connections evicted so far over all instances, from the evacuators'
    /// `sluice_evictions_total` counters; `None` when they do not export it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<u64>,
    /// Requests, non-2xx responses and socket errors so far over all
    /// clients, for protocols that count requests (HTTP/1.1, WebSocket,
    /// HTTP/2); `None` for MQTT and TCP, and in older summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCounts>,
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` scaled by `scale`.
    pub fn of(values: &mut [u32], scale: f64) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
            f64::from(values[rank - 1]) * scale
        };
        Percentiles {
            count: values.len() as u64,
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Time spent disconnected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownTime {
    /// Summed over clients, ms.
    pub total: u64,
    /// The most any one client spent, ms.
    pub max_per_client: u64,
}

/// The deepest fall of connected clients below an earlier high.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dip {
    /// The high before the dip.
    pub from: u64,
    /// The low.
    pub to: u64,
    /// `from - to`.
    pub depth: u64,
    /// When the low was sampled, seconds.
    pub at_secs: f64,
}

impl Dip {
    /// The deepest dip of the `connected` series.
    pub fn of(timeline: &[TimelineSample]) -> Dip {
        let mut high = 0;
        let mut dip = Dip::default();
        for s in timeline {
            high = high.max(s.connected);
            if high - s.connected > dip.depth {
                dip = Dip {
                    from: high,
                    to: s.connected,
                    depth: high - s.connected,
                    at_secs: s.t,
                };
            }
        }
        dip
    }
}

/// The initial ramp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ramp {
    /// Seconds from the first attempt until every client had connected once
    /// (the slowest process, when several); `None` if some never did.
    pub secs: Option<f64>,
    /// `clients / secs`.
    pub connections_per_sec: Option<f64>,
}

/// Memory of the client processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Peak resident memory, summed over processes, bytes.
    pub rss_peak_bytes: u64,
    /// Resident memory before the clients started, summed, bytes.
    pub rss_baseline_bytes: u64,
    /// `(peak - baseline) / clients`.
    pub bytes_per_client: u64,
}

impl Summary {
    /// Builds the summary from the merged records and the timeline. Its
    /// instances are in first-seen order: the caller that knows the
    /// `--metrics` URLs replaces them with the URLs' order.
    pub fn build(
        cfg: &ConnConfig,
        title: Option<&str>,
        mut agg: Aggregate,
        timeline: Vec<TimelineSample>,
        duration_secs: f64,
    ) -> Summary {
        let mut instances: Vec<String> = Vec::new();
        for s in &timeline {
            for name in s.per_instance.keys() {
                if !instances.contains(name) {
                    instances.push(name.clone());
                }
            }
        }
        let max = agg
            .disconnect_histogram
            .iter()
            .rposition(|&n| n > 0)
            .unwrap_or(0);
        agg.disconnect_histogram.truncate(max + 1);
        if agg.disconnect_histogram.is_empty() {
            agg.disconnect_histogram.push(0);
        }
        let grown = agg.rss_peak_bytes.saturating_sub(agg.rss_baseline_bytes);
        let http = |v: u64| cfg.protocol.counts_requests().then_some(v);
        Summary {
            title: title.map_or_else(
                || format!("{} clients, {}", cfg.count, cfg.describe_target()),
                str::to_owned,
            ),
            target: cfg.describe_target(),
            protocol: cfg.protocol,
            clients: agg.clients,
            connected_at_end: agg.connected_at_stop,
            never_connected: agg.never_connected,
            duration_secs: (duration_secs * 1000.0).round() / 1000.0,
            workers: agg.processes,
            attempts: agg.attempts,
            connects: agg.connects,
            disconnects: agg.disconnect_causes.values().sum(),
            max_disconnects_per_client: max as u64,
            disconnect_histogram: agg.disconnect_histogram,
            disconnect_causes: agg.disconnect_causes,
            attempt_failures: agg.attempt_failures,
            server_references: agg.server_references,
            connect_millis: Percentiles::of(&mut agg.connect_micros, 0.001),
            reconnect_millis: Percentiles::of(&mut agg.reconnect_millis, 1.0),
            disconnected_millis: DownTime {
                total: agg.down_millis_total,
                max_per_client: agg.down_millis_max,
            },
            deepest_dip: Dip::of(&timeline),
            ramp: Ramp {
                secs: agg.ramp_secs,
                connections_per_sec: agg
                    .ramp_secs
                    .filter(|s| *s > 0.0)
                    .map(|s| (agg.clients as f64 / s).round()),
            },
            memory: Memory {
                rss_peak_bytes: agg.rss_peak_bytes,
                rss_baseline_bytes: agg.rss_baseline_bytes,
                bytes_per_client: grown.checked_div(agg.clients).unwrap_or(0),
            },
            instances,
            revisions: BTreeMap::new(),
            evict_rate: cfg.evict_rate,
            requests: http(agg.http.requests),
            non2xx: http(agg.http.non2xx),
            socket_errors: http(agg.http.socket_errors),
            timeline,
        }
    }

    /// The summary as text lines for the terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let procs = if self.workers == 1 {
            "process"
        } else {
            "processes"
        };
        let _ = writeln!(
            o,
            "sluice bench conn: {} clients, {}, {:.1} s, {} {procs}",
            self.clients, self.target, self.duration_secs, self.workers
        );
        let mut line = |label: &str, text: String| {
            let _ = writeln!(o, "  {label:<19}{text}");
        };
        line(
            "connected at end",
            format!("{} / {}", self.connected_at_end, self.clients),
        );
        line(
            "ramp",
            match (self.ramp.secs, self.ramp.connections_per_sec) {
                (Some(s), Some(r)) => {
                    format!("all connected once in {s:.2} s ({r:.0} connections/s)")
                }
                (Some(s), None) => format!("all connected once in {s:.2} s"),
                _ => format!("{} never connected", self.never_connected),
            },
        );
        line(
            "connect latency",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms ({} connects, {} attempts)",
                self.connect_millis.p50, self.connect_millis.p99, self.connects, self.attempts
            ),
        );
        line(
            "disconnects",
            format!("{}{}", self.disconnects, causes(&self.disconnect_causes)),
        );
        let per_client: Vec<String> = self
            .disconnect_histogram
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        line(
            "clients by count",
            format!(
                "{} (max {} per client)",
                per_client.join(", "),
                self.max_disconnects_per_client
            ),
        );
        if self.reconnect_millis.count > 0 {
            line(
                "reconnect time",
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    self.reconnect_millis.p50, self.reconnect_millis.p99
                ),
            );
        }
        if let (Some(requests), Some(non2xx), Some(errors)) =
            (self.requests, self.non2xx, self.socket_errors)
        {
            line(
                match self.protocol {
                    Protocol::Ws => "ws messages",
                    Protocol::H2 => "h2 requests",
                    _ => "http requests",
                },
                format!("{requests} ({non2xx} non-2xx, {errors} socket errors)"),
            );
        }
        let failures: u64 = self.attempt_failures.values().sum();
        if failures > 0 {
            line(
                "failed attempts",
                format!("{failures}{}", causes(&self.attempt_failures)),
            );
        }
        if !self.server_references.is_empty() {
            let refs: Vec<String> = self
                .server_references
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            line("server references", refs.join(", "));
        }
        line(
            "deepest dip",
            if self.deepest_dip.depth == 0 {
                "none".into()
            } else {
                format!(
                    "{} → {} (−{}) at {:.1} s",
                    self.deepest_dip.from,
                    self.deepest_dip.to,
                    self.deepest_dip.depth,
                    self.deepest_dip.at_secs
                )
            },
        );
        line(
            "memory",
            format!(
                "peak RSS {:.1} MiB, {:.1} KiB per client",
                self.memory.rss_peak_bytes as f64 / 1048576.0,
                self.memory.bytes_per_client as f64 / 1024.0
            ),
        );
        if !self.instances.is_empty() {
            line("instances", self.instances.join(", "));
        }
        o
    }
}

fn causes(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} {v}", describe_cause(k)))
        .collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, connected: u64) -> TimelineSample {
        TimelineSample {
            t,
            connected,
            ..Default::default()
        }
    }

    #[test]
    fn dip_ignores_the_ramp() {
        let tl: Vec<_> = [0, 50, 100, 100, 60, 20, 90, 100, 95]
            .iter()
            .enumerate()
            .map(|(i, c)| sample(i as f64 / 10.0, *c))
            .collect();
        let d = Dip::of(&tl);
        assert_eq!((d.from, d.to, d.depth), (100, 20, 80));
        assert_eq!(d.at_secs, 0.5);
        assert_eq!(Dip::of(&tl[..4]).depth, 0);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).collect();
        let p = Percentiles::of(&mut v, 1.0);
        assert_eq!((p.p50, p.p99, p.max, p.count), (50.0, 99.0, 100.0, 100));
        assert_eq!(Percentiles::of(&mut [], 1.0), Percentiles::default());
        assert_eq!(Percentiles::of(&mut [2000], 0.001).p50, 2.0);
    }

    #[test]
    fn json_has_the_promised_field_names() {
        let cfg = ConnConfig::new("127.0.0.1", 1883, 2);
        let mut agg = Aggregate {
            clients: 2,
            connected_at_stop: 2,
            processes: 1,
            disconnect_histogram: vec![1, 1, 0, 0],
            ..Default::default()
        };
        agg.disconnect_causes.insert("reset".into(), 1);
        let mut s = sample(0.1, 2);
        s.per_instance.insert("blue".into(), 2);
        let summary = Summary::build(&cfg, None, agg, vec![s], 1.0);
        let v = serde_json::to_value(&summary).unwrap();
        for key in [
            "clients",
            "connectedAtEnd",
            "maxDisconnectsPerClient",
            "disconnectHistogram",
            "reconnectMillis",
            "timeline",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["disconnectHistogram"], serde_json::json!([1, 1]));
        assert_eq!(v["maxDisconnectsPerClient"], 1);
        assert!(
            v["reconnectMillis"].get("p50").is_some() && v["reconnectMillis"].get("p99").is_some()
        );
        assert_eq!(v["timeline"][0]["perInstance"]["blue"], 2);
        assert_eq!(v["timeline"][0]["t"], 0.1);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, summary);
        assert!(summary.to_text().contains("1: 1"));
    }
}
