//! Helpers of the Kubernetes tests: a namespace and a node double (with its
//! service proxy) on the shared test control plane, polling, and what the tests
//! measure (connections per pod, EndpointSlice readiness). `clients` runs the
//! MQTT clients, `rollout` samples a fleet during an update (the StatefulSet
//! baseline lives there), `gset` drives GracefulSets and the operator.
#![allow(dead_code)]

pub mod clients;
pub mod gset;
pub mod rollout;

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sluice_testkube::{NodeConfig, TestNode};

use crate::support::bench_extra::BenchRun;

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
    /// pods get addresses in 10.244.`octet`.0/24. Containers find the `sluice`
    /// binary under test on their `PATH` (the operator's injected sidecar runs
    /// `sluice proxy`), and the node serves the API server's ClusterIP
    /// (`https://10.96.0.1:443`). Fails the test (with how to start the control
    /// plane) when `SLUICE_KUBECONFIG` is missing.
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
        let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_sluice"))
            .parent()
            .expect("the sluice binary's directory");
        config.path = format!("{}:{}", bin_dir.display(), config.path);
        config.api_server = Some(
            sluice_testkube::api_server(&path)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
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
        self.write_mosquitto_conf("mosquitto.conf", "listener 1883")
    }

    fn write_mosquitto_conf(&self, file: &str, listener: &str) -> String {
        let path = self.dir.join(file);
        let conf = format!(
            "{listener}\nallow_anonymous true\nmax_connections -1\nsys_interval 1\npersistence false\n"
        );
        std::fs::write(&path, conf).expect("write the mosquitto config");
        path.display().to_string()
    }

    /// A mosquitto pod template labelled `app=<app>`, ready when port 1883
    /// accepts (the image is not pulled: the test node runs `command` on this
    /// machine, with the config of [`Env::mosquitto_conf`]).
    pub fn mosquitto_template(&self, app: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"labels": {"app": app}},
            "spec": {
                "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "mosquitto",
                    "image": "eclipse-mosquitto:2.0",
                    "command": ["/usr/sbin/mosquitto"],
                    "args": ["-c", self.mosquitto_conf()],
                    "ports": [{"name": "mqtt", "containerPort": 1883}],
                    "readinessProbe": {"tcpSocket": {"port": "mqtt"}, "periodSeconds": 1},
                }],
            },
        })
    }

    /// [`Env::mosquitto_template`] for a pod whose sidecar fronts the broker:
    /// mosquitto listens on 1884 (port `app`; on all addresses, as the
    /// readiness probe comes from the node to the pod IP), the sidecar on the
    /// pod's 1883.
    pub fn mosquitto_behind_sidecar_template(&self, app: &str) -> serde_json::Value {
        let mut t = self.mosquitto_template(app);
        let conf = self.write_mosquitto_conf("mosquitto-app.conf", "listener 1884");
        let c = &mut t["spec"]["containers"][0];
        c["args"] = serde_json::json!(["-c", conf]);
        c["ports"] = serde_json::json!([{"name": "app", "containerPort": 1884}]);
        c["readinessProbe"]["tcpSocket"]["port"] = serde_json::json!("app");
        t
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

    /// Creates a ClusterIP Service `name` selecting `app=<name>` on the pods'
    /// `mqtt` port (1883); returns its ClusterIP.
    pub async fn create_mqtt_service(&self, name: &str) -> String {
        self.create_service(name, serde_json::json!("mqtt")).await
    }

    /// Creates a ClusterIP Service `name` on port 1883 (named `mqtt`) selecting
    /// `app=<name>`, to the pods' `target_port` (a number or a port name);
    /// returns its ClusterIP.
    pub async fn create_service(&self, name: &str, target_port: serde_json::Value) -> String {
        let svc: Service = object(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "mqtt", "port": 1883, "targetPort": target_port}]},
        }));
        Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &svc)
            .await
            .expect("create the service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("a ClusterIP")
    }

    /// Starts `sluice bench conn` in the node's namespace: `clients` MQTT clients
    /// to `ip:1883`, its `--json` summary written to `summary`.
    pub fn start_bench(&self, ip: &str, clients: u64, summary: &std::path::Path) -> BenchRun {
        self.start_bench_with(ip, clients, summary, &[])
    }

    /// [`Env::start_bench`] with more `sluice bench conn` flags.
    pub fn start_bench_with(
        &self,
        ip: &str,
        clients: u64,
        summary: &std::path::Path,
        extra: &[&str],
    ) -> BenchRun {
        let (clients, summary) = (clients.to_string(), summary.display().to_string());
        let mut args = vec!["-h", ip, "-p", "1883", "-c", &clients, "--json", &summary];
        args.extend_from_slice(extra);
        BenchRun::start_command(self.sluice_in_node(), &args)
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
