//! Network namespaces: the node's (a bridge holding the pod CIDR's gateway, the
//! Services' ClusterIPs, and where test clients run) and one per pod (a veth pair
//! to the bridge, the pod IP, a default route through the gateway). Everything is
//! done with `ip`, so it reads like the commands an operator would type.
//!
//! No address made here exists outside these namespaces: the host's routing table
//! is never touched.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use tokio::runtime::{Handle, Runtime};

/// Why a network namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// Its arguments.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// `ip` could not be run at all.
    #[error("cannot run `ip` (install iproute2): {0}")]
    NoIp(#[source] std::io::Error),
    /// Entering the namespace failed (needs CAP_SYS_ADMIN, i.e. root).
    #[error("cannot enter network namespace {name}: {reason}")]
    Enter {
        /// The namespace.
        name: String,
        /// Why.
        reason: String,
    },
    /// The pod CIDR has no free address left.
    #[error("pod CIDR {0}/24 is full")]
    Full(Ipv4Addr),
    /// Another live process runs a node of this name.
    #[error("node {node} is already run by process {pid} (see {})", file.display())]
    Busy {
        /// The node.
        node: String,
        /// Its process.
        pid: i32,
        /// The ownership file.
        file: PathBuf,
    },
}

/// Runs `ip ARGS…`, failing with its stderr.
pub async fn ip(args: &[&str]) -> Result<(), NetError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(NetError::NoIp)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The names of the network namespaces that exist now.
pub async fn list_netns() -> Result<Vec<String>, NetError> {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .await
        .map_err(NetError::NoIp)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Where a node records which process owns its namespaces, so that a later run
/// can remove what a killed run left behind.
const OWNERS: &str = "/run/sluice-testkube";

/// The node's network: its namespace, bridge, gateway and pod address pool.
#[derive(Debug)]
pub struct NodeNet {
    name: String,
    node: String,
    gateway: Ipv4Addr,
    pool: std::sync::Mutex<Pool>,
}

/// Free pod addresses (last octets), handed out round-robin so that an address
/// is reused as late as possible (a neighbour cache entry for the previous
/// owner's MAC would otherwise black-hole the new pod for half a minute).
#[derive(Debug)]
struct Pool {
    free: BTreeSet<u8>,
    next: u8,
}

impl Pool {
    fn take(&mut self) -> Option<u8> {
        let octet = self
            .free
            .range(self.next..)
            .next()
            .or_else(|| self.free.iter().next())
            .copied()?;
        self.free.remove(&octet);
        self.next = octet.wrapping_add(1);
        Some(octet)
    }
}

impl NodeNet {
    /// Removes namespaces left by dead runs (of any node), refuses if a live
    /// process owns `node`, then creates `sluice-node-<node>` with a bridge whose
    /// address is `<pod_net>.1/24`.
    pub async fn create(node: &str, pod_net: Ipv4Addr) -> Result<NodeNet, NetError> {
        std::fs::create_dir_all(OWNERS).map_err(NetError::NoIp)?;
        remove_stale(node).await?;
        let owner = owner_file(node);
        std::fs::write(&owner, std::process::id().to_string()).map_err(NetError::NoIp)?;
        let name = format!("sluice-node-{node}");
        let [a, b, c, _] = pod_net.octets();
        let gateway = Ipv4Addr::new(a, b, c, 1);
        ip(&["netns", "add", &name]).await?;
        let net = NodeNet {
            name,
            node: node.to_string(),
            gateway,
            pool: std::sync::Mutex::new(Pool {
                free: (2..=254).collect(),
                next: 2,
            }),
        };
        let n = net.name.as_str();
        let gw = format!("{gateway}/24");
        ip(&["-n", n, "link", "set", "lo", "up"]).await?;
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"]).await?;
        ip(&["-n", n, "addr", "add", &gw, "dev", "br0"]).await?;
        ip(&["-n", n, "link", "set", "br0", "up"]).await?;
        Ok(net)
    }

    /// The node namespace's name (`ip netns exec NAME …` runs a client there).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's address: the node's IP and the pods' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Creates a pod's namespace, wired to the bridge, with a free address.
    pub async fn add_pod(&self) -> Result<PodNet, NetError> {
        let octet = self
            .pool
            .lock()
            .expect("pool lock")
            .take()
            .ok_or(NetError::Full(self.gateway))?;
        let [a, b, c, _] = self.gateway.octets();
        let pod = PodNet {
            name: format!("{}-p{octet}", self.name),
            ip: Ipv4Addr::new(a, b, c, octet),
            octet,
        };
        if let Err(e) = self.wire(&pod).await {
            self.remove_pod(pod).await;
            return Err(e);
        }
        Ok(pod)
    }

    async fn wire(&self, pod: &PodNet) -> Result<(), NetError> {
        let (n, p) = (self.name.as_str(), pod.name.as_str());
        let veth = format!("vp{}", pod.octet);
        let addr = format!("{}/24", pod.ip);
        let gw = self.gateway.to_string();
        let _ = ip(&["netns", "del", p]).await; // a leftover of the same name
        ip(&["netns", "add", p]).await?;
        ip(&["-n", p, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n", n, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", p,
        ])
        .await?;
        ip(&["-n", n, "link", "set", &veth, "master", "br0", "up"]).await?;
        ip(&["-n", p, "addr", "add", &addr, "dev", "eth0"]).await?;
        ip(&["-n", p, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", p, "route", "add", "default", "via", &gw]).await?;
        // The address may have had another owner (another MAC) before.
        let _ = ip(&["-n", n, "neigh", "flush", "to", &pod.ip.to_string()]).await;
        Ok(())
    }

    /// Deletes a pod's namespace (and with it its veth pair) and frees its address.
    pub async fn remove_pod(&self, pod: PodNet) {
        if let Err(e) = ip(&["netns", "del", &pod.name]).await {
            tracing::warn!(netns = pod.name, error = %e, "cannot delete pod namespace");
        }
        self.pool.lock().expect("pool lock").free.insert(pod.octet);
    }

    /// Makes `addr` local in the node namespace (a Service's ClusterIP).
    pub async fn add_local(&self, addr: Ipv4Addr) -> Result<(), NetError> {
        let a = format!("{addr}/32");
        match ip(&["-n", &self.name, "addr", "add", &a, "dev", "lo"]).await {
            Err(NetError::Ip { stderr, .. }) if stderr.contains("File exists") => Ok(()),
            other => other,
        }
    }

    /// Deletes the node namespace (pods' namespaces must be gone already) and
    /// its ownership record.
    pub async fn remove(&self) {
        for ns in list_netns().await.unwrap_or_default() {
            if ns.starts_with(&format!("{}-p", self.name)) {
                let _ = ip(&["netns", "del", &ns]).await;
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]).await {
            tracing::warn!(netns = self.name, error = %e, "cannot delete node namespace");
        }
        let _ = std::fs::remove_file(owner_file(&self.node));
    }

    /// A runtime whose threads live in the node namespace: sockets made by tasks
    /// spawned on it (Service listeners, connections to pods, probes) are there.
    pub fn runtime(&self) -> Result<NetnsRuntime, NetError> {
        NetnsRuntime::new(&self.name)
    }
}

/// A pod's network namespace and address.
#[derive(Debug)]
pub struct PodNet {
    name: String,
    ip: Ipv4Addr,
    octet: u8,
}

impl PodNet {
    /// The namespace (`ip netns exec NAME …` runs a container there).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

fn owner_file(node: &str) -> PathBuf {
    Path::new(OWNERS).join(format!("{node}.pid"))
}

/// Deletes the namespaces of every node whose owner process is gone, and fails
/// if `node` itself is owned by a live process.
async fn remove_stale(node: &str) -> Result<(), NetError> {
    let mut dead = Vec::new();
    for entry in std::fs::read_dir(OWNERS).map_err(NetError::NoIp)?.flatten() {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pid"))
        else {
            continue;
        };
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if alive && name == node {
            return Err(NetError::Busy {
                node: node.into(),
                pid: pid.unwrap_or_default(),
                file: path,
            });
        }
        if !alive {
            dead.push((name.to_string(), path));
        }
    }
    let all = list_netns().await?;
    let mut prefixes: Vec<String> = dead
        .iter()
        .map(|(n, _)| format!("sluice-node-{n}"))
        .collect();
    prefixes.push(format!("sluice-node-{node}"));
    for ns in all {
        let stale = prefixes
            .iter()
            .any(|p| ns == *p || ns.starts_with(&format!("{p}-p")));
        if stale {
            tracing::info!(netns = ns, "removing a stale network namespace");
            let _ = ip(&["netns", "del", &ns]).await;
        }
    }
    for (_, path) in dead {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// A tokio runtime (one worker) whose threads joined a network namespace.
#[derive(Debug, Clone)]
pub struct NetnsRuntime {
    runtime: Arc<Owned>,
}

/// Shuts the runtime down without blocking, so it may be dropped from async code.
#[derive(Debug)]
struct Owned(Option<Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl NetnsRuntime {
    /// Builds it; fails if the namespace cannot be entered.
    pub fn new(netns: &str) -> Result<NetnsRuntime, NetError> {
        let path = PathBuf::from(format!("/run/netns/{netns}"));
        let enter_err = |reason: String| NetError::Enter {
            name: netns.to_string(),
            reason,
        };
        // Enter once on a throwaway thread to report a clear error instead of a
        // panic in a runtime thread.
        let probe = path.clone();
        std::thread::spawn(move || enter(&probe))
            .join()
            .map_err(|_| enter_err("panicked".into()))?
            .map_err(enter_err)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("netns-{netns}"))
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = enter(&path) {
                    panic!("cannot enter network namespace {}: {e}", path.display());
                }
            })
            .build()
            .map_err(|e| enter_err(e.to_string()))?;
        Ok(NetnsRuntime {
            runtime: Arc::new(Owned(Some(runtime))),
        })
    }

    /// A handle to spawn tasks inside the namespace.
    pub fn handle(&self) -> &Handle {
        self.runtime
            .0
            .as_ref()
            .expect("runtime until dropped")
            .handle()
    }
}

fn enter(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_reused_as_late_as_possible() {
        let mut pool = Pool {
            free: (2..=5).collect(),
            next: 2,
        };
        let (a, b) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!((a, b), (2, 3));
        pool.free.insert(a);
        assert_eq!(pool.take(), Some(4));
        assert_eq!(pool.take(), Some(5));
        assert_eq!(pool.take(), Some(2), "wraps around to the freed one");
        assert_eq!(pool.take(), None);
    }
}
