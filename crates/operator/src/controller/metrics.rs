//! The operator's Prometheus metrics (`GET /metrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_core::engine::Action;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// Counters and gauges, cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ResultLabel, Counter>,
    actions: Family<ActionLabel, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge<i64, AtomicI64>,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ResultLabel, Counter>::default();
        let actions = Family::<ActionLabel, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        let mut registry = Registry::default();
        registry.register(
            "sluice_operator_reconciles",
            "Reconciles of a GracefulSet, by result",
            reconciles.clone(),
        );
        registry.register(
            "sluice_operator_actions",
            "Engine actions applied, by kind",
            actions.clone(),
        );
        registry.register(
            "sluice_operator_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            reconciles,
            actions,
            leader,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Counts a reconcile.
    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts an applied action.
    pub fn action(&self, action: &Action) {
        let action = match action {
            Action::Create { .. } => "create",
            Action::SetServing { .. } => "set_serving",
            Action::StartEvacuation { .. } => "start_evacuation",
            Action::StopEvacuation { .. } => "stop_evacuation",
            Action::Delete { .. } => "delete",
        };
        self.actions.get_or_create(&ActionLabel { action }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
