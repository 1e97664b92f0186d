//! The Prometheus metric and label names: exported by `sluice proxy` (and the
//! fleet-wide ones by `sluice up`), scraped by `sluice bench`, `sluice demo` and
//! the tests. Names are as exposed: counters end in `_total` (prometheus-client
//! appends it on registration; see [`registered_name`]).

/// Gauge: connections currently proxied to an upstream (`upstream`, `protocol`).
/// `sluice up` exports it too, one series per instance.
pub const UPSTREAM_CONNECTIONS: &str = "sluice_upstream_connections";
/// Counter: connections established since start (`upstream`, `protocol`).
pub const UPSTREAM_CONNECTIONS_OPENED: &str = "sluice_upstream_connections_opened_total";
/// Counter: evicted connections, by what the client was told (`upstream`, `reason`).
pub const EVICTIONS: &str = "sluice_evictions_total";
/// Counter: refused new connections (`upstream`, `reason`).
pub const REFUSED_CONNECTIONS: &str = "sluice_refused_connections_total";
/// Gauge: 1 for an upstream's current evacuation state, 0 for the others
/// (`upstream`, `state`).
pub const EVACUATION_STATE: &str = "sluice_evacuation_state";
/// Counter: bytes forwarded (`upstream`, `direction`).
pub const BYTES: &str = "sluice_bytes_total";
/// Gauge (`sluice up`): instances ready and serving.
pub const SERVING_INSTANCES: &str = "sluice_serving_instances";
/// Gauge (`sluice up`): instances ready.
pub const READY_INSTANCES: &str = "sluice_ready_instances";

/// The label names.
pub mod label {
    /// The upstream (instance) a series is about.
    pub const UPSTREAM: &str = "upstream";
    /// `mqtt` or `tcp`.
    pub const PROTOCOL: &str = "protocol";
    /// The instance's revision (`sluice up`'s series): the bench groups
    /// instances into the old and the new set by it.
    pub const REVISION: &str = "revision";
    /// Why (an eviction's or a refusal's reason).
    pub const REASON: &str = "reason";
    /// An evacuation state (EMQX's spelling).
    pub const STATE: &str = "state";
    /// `client_to_upstream` or `upstream_to_client`.
    pub const DIRECTION: &str = "direction";
}

/// The name to register a metric under with prometheus-client, which appends
/// `_total` to counters itself.
pub fn registered_name(exposed: &str) -> &str {
    exposed.strip_suffix("_total").unwrap_or(exposed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_register_without_their_suffix() {
        assert_eq!(registered_name(EVICTIONS), "sluice_evictions");
        assert_eq!(registered_name(UPSTREAM_CONNECTIONS), UPSTREAM_CONNECTIONS);
    }
}
