//! The node: registers a `Node` (Ready, a `Lease` heartbeat), binds pending pods
//! to itself through the `binding` subresource, and runs each pod bound to it
//! (see [`crate::pod`]). Optionally the service proxy runs beside it.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::netns::{NetError, NetnsRuntime, NodeNet};
use crate::pod::{NodeCtx, run_pod};

/// The field manager the node writes with.
const MANAGER: &str = "sluice-testnode";
/// How often the node renews its Lease and posts its Ready status.
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name; also names its network namespace `sluice-node-<name>`.
    pub name: String,
    /// Only pods in this namespace are bound and run (several test nodes can
    /// then share one control plane, one namespace each); `None`: all pods.
    pub namespace: Option<String>,
    /// The pod network `a.b.c.0/24`: the node (bridge) is `a.b.c.1`, pods get
    /// `a.b.c.2`–`a.b.c.254`. It exists only inside the node's namespace.
    pub pod_net: Ipv4Addr,
    /// Where each container's output goes (`<namespace>_<pod>_<container>.log`).
    pub log_dir: PathBuf,
    /// Also run the service proxy (ClusterIP listeners in the node's namespace).
    pub service_proxy: bool,
    /// `PATH` of every container (a container's `command` is looked up there);
    /// default: the node process's own `$PATH`.
    pub path: String,
    /// The API server's address as the node reaches it (from its kubeconfig):
    /// the service proxy serves the `default/kubernetes` Service's ClusterIP
    /// (10.96.0.1:443) by forwarding to it, as kube-proxy does, so that a
    /// process in the node's namespace (an operator) reaches the API server at
    /// `https://10.96.0.1:443`. `None`: that Service is not served.
    pub api_server: Option<SocketAddr>,
}

impl NodeConfig {
    /// A node named `name` for the pods of `namespace`, pod network
    /// 10.244.0.0/24, logs in `<tmp>/sluice-testnode/<name>`, with the service proxy.
    pub fn new(name: &str, namespace: Option<&str>) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            pod_net: Ipv4Addr::new(10, 244, 0, 0),
            log_dir: std::env::temp_dir().join("sluice-testnode").join(name),
            service_proxy: true,
            path: std::env::var("PATH").unwrap_or_default(),
            api_server: None,
        }
    }
}

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its network could not be set up.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The API server refused or could not be reached.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The log directory could not be created.
    #[error("log directory {}: {source}", path.display())]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node double. Stop it with [`TestNode::shutdown`]: that kills its
/// containers, force-deletes its pods, deletes the Node and Lease and removes its
/// network namespaces. (If it is only dropped, its processes still die with the
/// process, and the next node start removes the namespaces.)
pub struct TestNode {
    config: NodeConfig,
    client: Client,
    net: Arc<NodeNet>,
    _netrt: NetnsRuntime,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestNode {
    /// Sets up the node's network, registers the Node and starts running pods
    /// (and Services, if `config.service_proxy`).
    pub async fn start(client: Client, config: NodeConfig) -> Result<TestNode, NodeError> {
        std::fs::create_dir_all(&config.log_dir).map_err(|source| NodeError::LogDir {
            path: config.log_dir.clone(),
            source,
        })?;
        let net = Arc::new(NodeNet::create(&config.name, config.pod_net).await?);
        let netrt = net.runtime()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut node = TestNode {
            config: config.clone(),
            client: client.clone(),
            net: net.clone(),
            _netrt: netrt.clone(),
            shutdown,
            tasks: Vec::new(),
        };
        if let Err(e) = node.register().await {
            node.net.remove().await;
            return Err(e.into());
        }
        let ctx = Arc::new(NodeCtx {
            name: config.name.clone(),
            net: net.clone(),
            netrt: netrt.handle().clone(),
            log_dir: config.log_dir.clone(),
            client: client.clone(),
            path: config.path.clone(),
        });
        node.tasks.push(tokio::spawn(heartbeat(
            client.clone(),
            config.name.clone(),
            net.gateway(),
            shutdown_rx.clone(),
        )));
        node.tasks.push(tokio::spawn(pods(
            ctx,
            config.namespace.clone(),
            shutdown_rx.clone(),
        )));
        if config.service_proxy {
            node.tasks.push(tokio::spawn(crate::proxy::run(
                client,
                config.namespace.clone(),
                config.api_server,
                net,
                netrt.handle().clone(),
                shutdown_rx,
            )));
        }
        Ok(node)
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The node's network namespace, where pod IPs and ClusterIPs are reachable:
    /// run clients there (`ip netns exec NAME …`, or [`TestNode::command`]).
    pub fn netns(&self) -> &str {
        self.net.name()
    }

    /// The node's IP (the pods' gateway), reachable inside [`TestNode::netns`].
    pub fn ip(&self) -> Ipv4Addr {
        self.net.gateway()
    }

    /// Where the containers' output goes.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.config.log_dir
    }

    /// A command that runs `program` inside the node's network namespace
    /// (`ip netns exec <netns> program`); add arguments and spawn it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", self.net.name()]).arg(program);
        c
    }

    /// Stops everything (see [`TestNode`]) and waits until it is done.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let name = &self.config.name;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let result = async {
            ignore_missing(leases.delete(name, &DeleteParams::default()).await)?;
            ignore_missing(nodes.delete(name, &DeleteParams::default()).await)
        }
        .await;
        self.net.remove().await;
        result
    }

    async fn register(&self) -> Result<(), kube::Error> {
        let name = &self.config.name;
        let [a, b, c, _] = self.config.pod_net.octets();
        let cidr = format!("{a}.{b}.{c}.0/24");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "sluice.dev/test-node": "true",
            }},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        });
        nodes
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await?;
        post_status(&self.client, name, self.net.gateway()).await
    }
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), NodeError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Posts the Node's Ready status and renews its Lease.
async fn post_status(client: &Client, name: &str, ip: Ipv4Addr) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now();
    let at = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "250"});
    let status = json!({"status": {
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "sluice test node is posting ready status",
            "lastHeartbeatTime": at, "lastTransitionTime": at,
        }],
        "addresses": [{"type": "InternalIP", "address": ip.to_string()},
                      {"type": "Hostname", "address": name}],
        "capacity": capacity, "allocatable": capacity,
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "sluice test node (pods are local processes)",
            "containerRuntimeVersion": "sluice-testnode://0", "kubeletVersion": "v0.0.0-sluice-testnode",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
        },
    }});
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": status["status"],
        })))
        .await?;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("kube-node-lease".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    };
    let mut lease = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    leases
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

async fn heartbeat(
    client: Client,
    name: String,
    ip: Ipv4Addr,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = post_status(&client, &name, ip).await {
            tracing::warn!(node = name, error = %e, "heartbeat failed");
        }
    }
}

/// Watches pods, binds the unbound ones, and runs a worker per pod bound here.
async fn pods(ctx: Arc<NodeCtx>, namespace: Option<String>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut running: JoinSet<String> = JoinSet::new();
    let mut listed: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(pod))) => {
                    handle(&ctx, pod, &mut workers, &finished, &mut running, &shutdown).await;
                }
                Some(Ok(Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    handle(&ctx, pod, &mut workers, &finished, &mut running, &shutdown).await;
                }
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        tx.send_replace(None);
                    }
                }
                Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(Event::InitDone)) => {
                    // Pods that vanished while the watch was down.
                    if let Some(seen) = listed.take() {
                        for (uid, tx) in &workers {
                            if !seen.contains(uid) {
                                tx.send_replace(None);
                            }
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
                None => break,
            },
            Some(done) = running.join_next() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    finished.insert(uid);
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    while running.join_next().await.is_some() {}
}

async fn handle(
    ctx: &Arc<NodeCtx>,
    pod: Pod,
    workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
    finished: &HashSet<String>,
    running: &mut JoinSet<String>,
    shutdown: &watch::Receiver<bool>,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    match node_name.as_deref() {
        None if pod.metadata.deletion_timestamp.is_none() => bind(ctx, &pod).await,
        Some(n) if n == ctx.name => {
            if let Some(tx) = workers.get(&uid) {
                tx.send_replace(Some(pod));
            } else if !finished.contains(&uid) {
                let (tx, rx) = watch::channel(Some(pod.clone()));
                workers.insert(uid.clone(), tx);
                let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
                running.spawn(async move {
                    run_pod(ctx, pod, rx, shutdown).await;
                    uid
                });
            }
        }
        _ => {}
    }
}

/// Binds `pod` to this node, as the scheduler would.
async fn bind(ctx: &NodeCtx, pod: &Pod) {
    let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": ctx.name},
    });
    let r: Result<serde_json::Value, _> = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    match r {
        Ok(_) => tracing::debug!(pod = name, "bound"),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => tracing::warn!(pod = name, error = %e, "cannot bind the pod"),
    }
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("config", &self.config)
            .field("netns", &self.net.name())
            .finish_non_exhaustive()
    }
}
