//! What the proxy does on SIGTERM, the way a Kubernetes pod is stopped: fail
//! readiness at once, keep accepting while endpoints forget the pod, evacuate
//! what is left at the drain rate, exit when empty or at the drain timeout. A
//! second SIGTERM, or SIGINT, exits at once.

use std::time::Duration;

use tokio::signal::unix::Signal;

use crate::Shared;
use crate::evacuation::{self, EvacParams};

/// How often the drain looks whether connections are left.
const POLL: Duration = Duration::from_millis(20);

/// Runs the drain; returns when the process should exit.
pub async fn drain(shared: &Shared, term: &mut Signal, int: &mut Signal) {
    let args = &shared.args;
    let registry = &shared.registry;
    registry.set_draining();
    tracing::info!(
        connections = registry.total_live(),
        drain_delay = ?args.drain_delay,
        drain_rate = args.drain_rate,
        "SIGTERM: readiness is now 503; draining"
    );
    let work = async {
        tokio::time::sleep(args.drain_delay).await;
        let params = EvacParams {
            conn_evict_rate: args.drain_rate,
            sess_evict_rate: args.drain_rate,
            wait_takeover: 0,
            wait_health_check: 0,
            server_reference: args.server_reference.clone(),
            mqtt5_evict: args.mqtt5_evict,
            ws_evict: args.ws_evict,
            migrate_to: Vec::new(),
            // Idle HTTP connections close before the process exits.
            deadline: u32::try_from(
                args.drain_timeout
                    .saturating_sub(args.drain_delay)
                    .as_secs(),
            )
            .unwrap_or(u32::MAX),
        };
        for u in registry.upstreams() {
            // A running evacuation is replaced: the drain's pace and deadline win.
            evacuation::stop(u, &registry.metrics);
            // Cannot conflict: it was just stopped, and nothing else starts one
            // between these two calls that would not be equally fine.
            let _ = evacuation::start(u, params.clone(), shared.clock, &registry.metrics);
        }
        while registry.total_live() > 0 {
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        () = work => tracing::info!("drained: no connection left; exiting"),
        () = tokio::time::sleep(args.drain_timeout) => tracing::warn!(
            left = registry.total_live(),
            "drain timeout reached; exiting with connections left"
        ),
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting at once"),
        _ = int.recv() => tracing::warn!("SIGINT: exiting at once"),
    }
}
