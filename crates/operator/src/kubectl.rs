//! `kubectl sluice status|abort|promote NAME`: the `sluice` binary installed as
//! `kubectl-sluice` (a kubectl plugin), or `sluice kubectl …`.

use std::fmt::Write as _;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use sluice_core::engine::Phase;

use crate::controller::cluster::ABORT_ANNOTATION;
use crate::controller::observe::PodView;
use crate::crd::GracefulSet;
use crate::revision::SET_LABEL;
use crate::run::{RunError, client};

/// `kubectl sluice` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KubectlArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KubectlCommand,
    /// The GracefulSet's namespace (default: the kubeconfig context's, else `default`).
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// A kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// The plugin's verbs.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KubectlCommand {
    /// Show the upgrade: phase, revisions, counts, conditions, evacuations, pods.
    Status {
        /// The GracefulSet.
        name: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Abort the update in progress: return to the current revision through the
    /// engine's abort path (clients already moved are moved back at the set's pace).
    Abort {
        /// The GracefulSet.
        name: String,
    },
    /// Resume a paused set (`spec.paused: false`) and withdraw an abort request
    /// that has not taken effect yet.
    Promote {
        /// The GracefulSet.
        name: String,
    },
}

/// Why a plugin command failed.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    /// No cluster.
    #[error(transparent)]
    Client(#[from] RunError),
    /// The API refused.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// `abort` while no update runs.
    #[error("gracefulset/{name} is {phase:?}: no update in progress, nothing to abort")]
    NothingToAbort {
        /// The set.
        name: String,
        /// Its phase.
        phase: Phase,
    },
}

/// Runs a plugin command; returns what to print.
pub async fn run(args: KubectlArgs) -> Result<String, KubectlError> {
    let client = client(args.kubeconfig.as_ref()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let sets: Api<GracefulSet> = Api::namespaced(client.clone(), &namespace);
    match args.command {
        KubectlCommand::Status { name, json } => {
            let set = sets.get(&name).await?;
            if json {
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&set.status).unwrap_or_default()
                ));
            }
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            let list = pods
                .list(&ListParams::default().labels(&format!("{SET_LABEL}={name}")))
                .await?;
            let sidecar = set.spec.evacuator.sidecar.is_some();
            let views: Vec<PodView> = list
                .items
                .iter()
                .filter_map(|p| PodView::of(&name, p, sidecar))
                .collect();
            Ok(render_status(&set, &views))
        }
        KubectlCommand::Abort { name } => {
            // At rest there is nothing to abort, and a pending request would
            // abort the next update as soon as it starts.
            let phase = sets.get(&name).await?.status.map(|s| s.phase);
            if let Some(p @ (Phase::Stable | Phase::Aborted)) = phase {
                return Err(KubectlError::NothingToAbort { name, phase: p });
            }
            let patch = json!({"metadata": {"annotations": {ABORT_ANNOTATION: "true"}}});
            sets.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(format!(
                "gracefulset/{name}: abort requested; follow it with `kubectl sluice status {name}`\n"
            ))
        }
        KubectlCommand::Promote { name } => {
            let patch = json!({
                "metadata": {"annotations": {ABORT_ANNOTATION: null}},
                "spec": {"paused": false},
            });
            sets.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(format!("gracefulset/{name}: resumed\n"))
        }
    }
}

/// The status as `sluice status` prints it locally.
pub fn render_status(set: &GracefulSet, pods: &[PodView]) -> String {
    let mut out = String::new();
    let s = set.status.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let _ = writeln!(out, "gracefulset/{name}: {:?}", s.phase);
    let _ = writeln!(
        out,
        "  revisions: current {} update {}",
        dash(&s.current_revision),
        dash(&s.update_revision)
    );
    let _ = writeln!(
        out,
        "  replicas: desired {} existing {} ready {} serving {} updated {}",
        set.spec.replicas, s.replicas, s.ready_replicas, s.serving_replicas, s.updated_replicas
    );
    for c in &s.conditions {
        let _ = writeln!(
            out,
            "  {}={} {} ({}): {}",
            c.type_, c.status, c.reason, c.last_transition_time.0, c.message
        );
    }
    for e in &s.node_evacuations_status {
        let _ = writeln!(
            out,
            "  evacuating {}: {:?} connections {}/{} sessions {}/{} at {}/s",
            e.node,
            e.state,
            e.stats.current_connected,
            e.stats.initial_connected,
            e.stats.current_sessions,
            e.stats.initial_sessions,
            e.connection_eviction_rate
        );
    }
    let _ = writeln!(
        out,
        "  {:<32} {:<12} {:<6} {:<8}",
        "POD", "REVISION", "READY", "SERVING"
    );
    for p in pods {
        let state = if p.terminating { " (terminating)" } else { "" };
        let _ = writeln!(
            out,
            "  {:<32} {:<12} {:<6} {:<8}{state}",
            p.name, p.revision, p.ready, p.serving
        );
    }
    out
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}
