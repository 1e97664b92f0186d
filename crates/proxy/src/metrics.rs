//! Prometheus metrics of the proxy. The names are shared with `sluice bench`,
//! which scrapes them to draw connections per upstream over time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use sluice_api::metrics::{
    BYTES, EVACUATION_STATE, EVICTIONS, REFUSED_CONNECTIONS, UPSTREAM_CONNECTIONS,
    UPSTREAM_CONNECTIONS_OPENED, registered_name,
};
use sluice_core::engine::EvacuationState;

/// What a proxied connection carries, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The client sent a valid MQTT CONNECT.
    Mqtt,
    /// Opaque bytes.
    Tcp,
    /// HTTP/1.x (and WebSocket after an upgrade), or HTTP/2 cleartext.
    Http,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    upstream: String,
    protocol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    upstream: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    upstream: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    upstream: String,
    direction: String,
}

/// All metric families, and the text encoder for `GET /metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<ConnLabels, Gauge>,
    opened: Family<ConnLabels, Counter>,
    evictions: Family<ReasonLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    evacuation_state: Family<StateLabels, Gauge>,
    bytes: Family<DirectionLabels, Counter>,
}

/// One upstream's hot-path metric handles, looked up once so that forwarding a
/// chunk costs an atomic add and no label hashing.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    name: String,
    connections: [Gauge; 3],
    opened: [Counter; 3],
    /// Bytes forwarded from clients to this upstream.
    pub client_to_upstream: Counter,
    /// Bytes forwarded from this upstream to clients.
    pub upstream_to_client: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            connections: Family::default(),
            opened: Family::default(),
            evictions: Family::default(),
            refused: Family::default(),
            evacuation_state: Family::default(),
            bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            registered_name(UPSTREAM_CONNECTIONS),
            "Connections currently proxied to an upstream",
            m.connections.clone(),
        );
        registry.register(
            registered_name(UPSTREAM_CONNECTIONS_OPENED),
            "Connections proxied to an upstream since start",
            m.opened.clone(),
        );
        registry.register(
            registered_name(EVICTIONS),
            "Connections evicted from an upstream, by how they were told to leave",
            m.evictions.clone(),
        );
        registry.register(
            registered_name(REFUSED_CONNECTIONS),
            "New connections refused, by reason",
            m.refused.clone(),
        );
        registry.register(
            registered_name(EVACUATION_STATE),
            "1 for the current evacuation state of an upstream, 0 for the others",
            m.evacuation_state.clone(),
        );
        registry.register(
            registered_name(BYTES),
            "Bytes forwarded, by upstream and direction",
            m.bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Creates the handles of one upstream (so its series exist at 0 from start).
    pub fn upstream(&self, name: &str) -> UpstreamMetrics {
        let conn = |p: Protocol| ConnLabels {
            upstream: name.to_owned(),
            protocol: p.as_str().to_owned(),
        };
        let dir = |d: &str| DirectionLabels {
            upstream: name.to_owned(),
            direction: d.to_owned(),
        };
        // Each lookup in its own closure: its guard ends with the closure. Two
        // guards alive in one expression would deadlock a lookup that inserts.
        let counter =
            |family: &Family<DirectionLabels, Counter>, d| family.get_or_create(&dir(d)).clone();
        let gauge = |p| self.connections.get_or_create(&conn(p)).clone();
        let opened = |p| self.opened.get_or_create(&conn(p)).clone();
        let client_to_upstream = counter(&self.bytes, "client_to_upstream");
        let upstream_to_client = counter(&self.bytes, "upstream_to_client");
        let protocols = [Protocol::Mqtt, Protocol::Tcp, Protocol::Http];
        UpstreamMetrics {
            name: name.to_owned(),
            connections: protocols.map(gauge),
            opened: protocols.map(opened),
            client_to_upstream,
            upstream_to_client,
        }
    }

    /// Counts an eviction; `reason` is how the connection was told to leave.
    pub fn evicted(&self, upstream: &str, reason: &str) {
        self.evictions
            .get_or_create(&ReasonLabels {
                upstream: upstream.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a refused new connection.
    pub fn refused(&self, upstream: &str, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                upstream: upstream.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sets 1 on `state` and 0 on every other state of `upstream`.
    pub fn set_evacuation_state(&self, upstream: &str, state: EvacuationState) {
        for s in EvacuationState::ALL {
            self.evacuation_state
                .get_or_create(&StateLabels {
                    upstream: upstream.to_owned(),
                    state: s.as_str().to_owned(),
                })
                .set(i64::from(s == state));
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl UpstreamMetrics {
    fn index(p: Protocol) -> usize {
        match p {
            Protocol::Mqtt => 0,
            Protocol::Tcp => 1,
            Protocol::Http => 2,
        }
    }

    /// A connection to this upstream was established.
    pub fn opened(&self, p: Protocol) {
        self.connections[Self::index(p)].inc();
        self.opened[Self::index(p)].inc();
    }

    /// A connection to this upstream ended.
    pub fn closed(&self, p: Protocol) {
        self.connections[Self::index(p)].dec();
    }

    /// The upstream's name (the `upstream` label).
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::metrics::label::{DIRECTION, PROTOCOL, REASON, STATE, UPSTREAM};

    #[test]
    fn names_match_the_contract() {
        let m = Metrics::new();
        let u = m.upstream("a");
        u.opened(Protocol::Mqtt);
        u.client_to_upstream.inc_by(5);
        m.evicted("a", "close");
        m.refused("a", "evacuating");
        m.set_evacuation_state("a", EvacuationState::EvictingConns);
        let text = m.encode();
        let evicting = EvacuationState::EvictingConns.as_str();
        let disabled = EvacuationState::Disabled.as_str();
        for line in [
            format!(r#"{UPSTREAM_CONNECTIONS}{{{UPSTREAM}="a",{PROTOCOL}="mqtt"}} 1"#),
            format!(r#"{UPSTREAM_CONNECTIONS}{{{UPSTREAM}="a",{PROTOCOL}="tcp"}} 0"#),
            format!(r#"{UPSTREAM_CONNECTIONS_OPENED}{{{UPSTREAM}="a",{PROTOCOL}="mqtt"}} 1"#),
            format!(r#"{EVICTIONS}{{{UPSTREAM}="a",{REASON}="close"}} 1"#),
            format!(r#"{REFUSED_CONNECTIONS}{{{UPSTREAM}="a",{REASON}="evacuating"}} 1"#),
            format!(r#"{EVACUATION_STATE}{{{UPSTREAM}="a",{STATE}="{evicting}"}} 1"#),
            format!(r#"{EVACUATION_STATE}{{{UPSTREAM}="a",{STATE}="{disabled}"}} 0"#),
            format!(r#"{BYTES}{{{UPSTREAM}="a",{DIRECTION}="client_to_upstream"}} 5"#),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }
}
