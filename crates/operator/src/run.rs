//! `sluice operator run`: the controller, behind leader election, with `/healthz`,
//! `/readyz` and `/metrics`, stopping gracefully on SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};
use kube::{Client, Config};
use kube_lease_manager::LeaseManagerBuilder;

use crate::controller::{Context, Metrics, error_policy, reconcile};
use crate::crd::GracefulSet;
use crate::revision::SET_LABEL;

/// The leader-election Lease's name.
const LEASE_NAME: &str = "sluice-operator";

/// Flags of `sluice operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A kubeconfig file; default: the in-cluster service account, else
    /// $KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch GracefulSets in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Act without leader election (only when a single replica runs).
    #[arg(long)]
    pub no_leader_election: bool,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No usable cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    /// The health/metrics listener failed.
    #[error("--listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Another replica took the lease: exit so that a restart waits as a standby.
    #[error("lost the leader lease; exiting so that this replica restarts as a standby")]
    LostLease,
}

/// A client from `--kubeconfig`, or the default chain.
pub async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, RunError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| RunError::Config(format!("--kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => Config::infer()
            .await
            .map_err(|e| RunError::Config(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| RunError::Config(e.to_string()))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    init_logging();
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Metrics::default();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.listen,
            source,
        })?;
    let m = metrics.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { m.encode() }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health/metrics server stopped");
        }
    });
    operate(client, &args, metrics, shutdown_signal).await
}

/// This replica's identity in the Lease: `--identity`, else `$POD_NAME`, else
/// the host name.
fn identity(args: &RunArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "sluice-operator".to_owned())
}

/// Waits for the leader lease (unless `--no-leader-election`), then reconciles
/// GracefulSets until `shutdown()` resolves or the lease is lost. A replica
/// that is not the leader makes no call but the Lease's.
pub async fn operate<S, F>(
    client: Client,
    args: &RunArgs,
    metrics: Metrics,
    shutdown: S,
) -> Result<(), RunError>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let identity = identity(args);
    let lease = if args.no_leader_election {
        None
    } else {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity.clone())
            .with_duration(15)
            .with_grace(5)
            // One field manager per replica: kube-lease-manager takes a free
            // Lease with a server-side apply and relies on the conflict between
            // two managers to keep it exclusive. A shared manager let a second
            // replica's apply overwrite the first, and both led.
            .with_field_manager(format!(
                "{}-{identity}",
                crate::controller::cluster::MANAGER
            ))
            .build()
            .await?;
        let (mut leader, task) = manager.watch().await;
        tracing::info!(%identity, "waiting for the leader lease");
        // `Some(false)`: the lease task ended (its error is in `task`).
        let became_leader = tokio::select! {
            r = leader.wait_for(|l| *l) => Some(r.is_ok()),
            () = shutdown() => None,
        };
        if became_leader != Some(true) {
            // Dropping the receiver ends the lease task.
            drop(leader);
            let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
            return match (became_leader, ended) {
                (None, _) => Ok(()),
                (_, Ok(Ok(Err(e)))) => Err(e.into()),
                _ => Err(RunError::LostLease),
            };
        }
        Some((leader, task))
    };
    tracing::info!(%identity, "leading: reconciling GracefulSets");
    metrics.leader.set(1);

    let (sets, pods, revisions) = match &args.namespace {
        Some(ns) => (
            Api::<GracefulSet>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<ControllerRevision>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<GracefulSet>::all(client.clone()),
            Api::<Pod>::all(client.clone()),
            Api::<ControllerRevision>::all(client.clone()),
        ),
    };
    let owned = || watcher::Config::default().labels(SET_LABEL);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice-operator".into(),
                instance: Some(identity.clone()),
            },
        ),
        client,
        metrics: metrics.clone(),
    });
    let controller = Controller::new(sets, watcher::Config::default().any_semantic())
        .owns(pods, owned())
        .owns(revisions, owned())
        .graceful_shutdown_on(shutdown())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    let result = match lease {
        None => {
            controller.await;
            Ok(())
        }
        Some((mut leader, task)) => {
            let lost = async {
                let _ = leader.wait_for(|l| !*l).await;
            };
            let result = tokio::select! {
                () = controller => Ok(()),
                () = lost => Err(RunError::LostLease),
            };
            // Dropping the receiver releases the lease for the standby.
            drop(leader);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            result
        }
    };
    metrics.leader.set(0);
    tracing::info!(%identity, "stopped");
    result
}
