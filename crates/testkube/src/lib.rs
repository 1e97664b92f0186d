//! `sluice-testkube`: test doubles for the parts of Kubernetes that run on a
//! node, for tests against a real control plane (`scripts/testcluster`).
//!
//! * [`TestNode`]: the kubelet's part. Registers a Node, binds pending pods to
//!   itself, runs each container's `command`/`args` as a local process inside the
//!   pod's own network namespace, with probes, restarts, sidecars and the real
//!   termination sequence. The `image` is ignored.
//! * The service proxy (kube-proxy's part), started with the node
//!   ([`NodeConfig::service_proxy`]): ClusterIP listeners in the node's network
//!   namespace, forwarding to a random ready endpoint.
//!
//! Pod IPs and ClusterIPs exist only inside network namespaces the node creates;
//! clients run in [`TestNode::netns`]. See docs/testnode.md.

pub mod env;
pub mod expand;
pub mod netns;
mod node;
mod pod;
pub mod probe;
mod proxy;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub use node::{NodeConfig, NodeError, TestNode};

/// The variable that holds the test control plane's admin kubeconfig path
/// (`eval "$(scripts/testcluster env)"` sets it; `scripts/test` does).
pub const KUBECONFIG_ENV: &str = "SLUICE_KUBECONFIG";

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The variable is not set.
    #[error(
        "{KUBECONFIG_ENV} is not set: start the test control plane with `scripts/testcluster up` and run `eval \"$(scripts/testcluster env)\"` (scripts/test does both)"
    )]
    NoEnv,
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The kubeconfig path from [`KUBECONFIG_ENV`].
pub fn kubeconfig_from_env() -> Result<PathBuf, ClientError> {
    std::env::var_os(KUBECONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(ClientError::NoEnv)
}

/// A client for the cluster in the kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<Client, ClientError> {
    Client::try_from(config(path).await?).map_err(|e| kubeconfig_error(path, e.to_string()))
}

fn kubeconfig_error(path: &Path, message: String) -> ClientError {
    ClientError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    }
}

/// The client configuration of the kubeconfig at `path` (its current context).
async fn config(path: &Path) -> Result<Config, ClientError> {
    let fail = |message: String| kubeconfig_error(path, message);
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| fail(e.to_string()))
}

/// The API server's address in the kubeconfig at `path` (its current
/// context's cluster `server`), for [`NodeConfig::api_server`].
pub async fn api_server(path: &Path) -> Result<std::net::SocketAddr, ClientError> {
    let fail = |message: String| kubeconfig_error(path, message);
    let config = config(path).await?;
    let uri = &config.cluster_url;
    let host = uri
        .host()
        .ok_or_else(|| fail(format!("server {uri} has no host")))?;
    let port = uri.port_u16().unwrap_or(443);
    tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| fail(format!("server {uri}: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("server {uri}: no address")))
}

/// Creates a namespace named `<prefix>-<random>` and returns its name once its
/// `default` ServiceAccount exists (until then the API server refuses pods in
/// it: `serviceaccount "default" not found`), waiting up to 60 s for it.
pub async fn create_namespace(client: &Client, prefix: &str) -> Result<String, kube::Error> {
    let name = format!("{prefix}-{:08x}", fastrand::u32(..));
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
        .map_err(kube::Error::SerdeError)?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(name)
}

/// Deletes a namespace and waits (up to `timeout`) until it is gone, which
/// needs the node that runs its pods to be still running.
pub async fn delete_namespace(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> Result<(), String> {
    let api = Api::<Namespace>::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(format!("delete namespace {name}: {e}")),
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(ns)) => {
                return Err(format!(
                    "namespace {name} still exists after {timeout:?}: {:?}",
                    ns.status
                ));
            }
            Err(e) => return Err(format!("get namespace {name}: {e}")),
        }
    }
}
