//! Helpers of the Kubernetes tests: a namespace and a node double (with its
//! service proxy) on the shared test control plane, polling, and what the tests
//! measure (connections per pod, EndpointSlice readiness).
#![allow(dead_code)]

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};
use sluice_testkube::{NodeConfig, TestNode};

/// One test's namespace and node.
pub struct Env {
    /// Admin client of the test control plane.
    pub client: Client,
    /// The test's namespace (also the node's name).
    pub ns: String,
    /// The node double running the namespace's pods.
    pub node: TestNode,
    /// A directory for the test's files (mosquitto config, logs, summaries).
    pub dir: PathBuf,
}

impl Env {
    /// Creates a namespace `<prefix>-<random>` and starts a node for it whose
    /// pods get addresses in 10.244.`octet`.0/24. Fails the test (with how to
    /// start the control plane) when `SLUICE_KUBECONFIG` is missing.
    pub async fn start(prefix: &str, octet: u8) -> Env {
        let path = sluice_testkube::kubeconfig_from_env().unwrap_or_else(|e| panic!("{e}"));
        let client = sluice_testkube::client(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ns = sluice_testkube::create_namespace(&client, prefix)
            .await
            .unwrap_or_else(|e| panic!("create a namespace (is the control plane up? `scripts/testcluster status`): {e}"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&ns);
        std::fs::create_dir_all(&dir).expect("test dir");
        let mut config = NodeConfig::new(&ns, Some(&ns));
        config.pod_net = std::net::Ipv4Addr::new(10, 244, octet, 0);
        config.log_dir = dir.join("logs");
        let node = TestNode::start(client.clone(), config)
            .await
            .unwrap_or_else(|e| panic!("start the node double: {e}"));
        Env {
            client,
            ns,
            node,
            dir,
        }
    }

    /// Runs `body`, then deletes the namespace (the node finishes its pods) and
    /// stops the node, even if `body` panicked; then re-raises the panic.
    pub async fn run<F>(self, body: F)
    where
        F: AsyncFnOnce(&Env),
    {
        let result: Result<(), Box<dyn Any + Send>> =
            AssertUnwindSafe(body(&self)).catch_unwind().await;
        let deleted =
            sluice_testkube::delete_namespace(&self.client, &self.ns, Duration::from_secs(120))
                .await;
        let stopped = self.node.shutdown().await;
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
        deleted.expect("namespace deleted");
        stopped.expect("node stopped");
    }

    /// A mosquitto config listening on all addresses of the pod, anonymous
    /// clients allowed, `$SYS` every second; returns its path.
    pub fn mosquitto_conf(&self) -> String {
        let path = self.dir.join("mosquitto.conf");
        std::fs::write(
            &path,
            "listener 1883\nallow_anonymous true\nmax_connections -1\nsys_interval 1\npersistence false\n",
        )
        .expect("write mosquitto.conf");
        path.display().to_string()
    }

    /// Established TCP connections to port `port` of a pod, from the node's
    /// namespace (the service proxy's upstream connections), counted per pod IP.
    pub async fn connections_per_ip(&self, port: u16) -> BTreeMap<String, u64> {
        let out = self
            .node
            .command("ss")
            .args([
                "-Htn",
                "state",
                "established",
                &format!("( dport = :{port} )"),
            ])
            .output()
            .await
            .expect("run ss in the node namespace");
        assert!(
            out.status.success(),
            "ss: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The pods' /24 (the node is its .1); clients' connections to ClusterIPs
        // are not counted.
        let [a, b, c, _] = self.node.ip().octets();
        let pod_net = format!("{a}.{b}.{c}.");
        let mut counts = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // Recv-Q Send-Q Local:Port Peer:Port
            if let Some(peer) = line.split_whitespace().nth(3)
                && let Some((ip, _)) = peer.rsplit_once(':')
                && ip.starts_with(&pod_net)
            {
                *counts.entry(ip.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// The endpoints of `service`'s EndpointSlices: address → ready.
    pub async fn endpoints(&self, service: &str) -> BTreeMap<String, bool> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let mut out = BTreeMap::new();
        for slice in api.list(&lp).await.expect("list endpointslices") {
            for e in slice.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                for a in &e.addresses {
                    out.insert(a.clone(), ready);
                }
            }
        }
        out
    }

    /// The `sluice` binary inside the node's namespace (`ip netns exec NS sluice`).
    pub fn sluice_in_node(&self) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", self.node.netns()])
            .arg(env!("CARGO_BIN_EXE_sluice"));
        c
    }
}

/// Polls `check` every 200 ms until it returns `Some` or `timeout` passes;
/// panics with `what` (and the last `Err` message) on timeout.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Parses a JSON value into a Kubernetes object, panicking on a typo in a test.
pub fn object<K: serde::de::DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("a well-formed object")
}
