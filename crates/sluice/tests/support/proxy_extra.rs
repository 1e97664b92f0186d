//! Test helpers of the proxy tests: a running `sluice proxy`, a tiny HTTP/1.1
//! client for its admin API, metric scraping, and real MQTT clients (rumqttc in
//! process, paho-mqtt and mosquitto_sub as child processes) whose connects and
//! disconnects can be counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;
use sluice_api::admin::{
    ErrorBody, EvacuationRequest, EvacuationStatus, ServingRequest, UpstreamView, path,
};

use super::{ChildGuard, free_port, python_with_paho, require_program, sluice_bin, wait_until};
pub use super::{http, metric, sigterm};

/// A running `sluice proxy` on free loopback ports, killed when dropped.
pub struct Proxy {
    /// The process.
    pub child: ChildGuard,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    /// The bearer token the helpers send, if any.
    pub token: Option<String>,
}

impl Proxy {
    /// Starts `sluice proxy` with `--upstream NAME=ADDR` for each of `upstreams`
    /// and the `extra` flags, and waits until its admin API answers.
    pub fn start(upstreams: &[(&str, SocketAddr)], extra: &[&str]) -> Proxy {
        let token = extra
            .iter()
            .position(|a| *a == "--admin-token")
            .map(|i| extra[i + 1].to_owned());
        Proxy::start_with(upstreams, extra, [127, 0, 0, 1], &[], token)
    }

    /// Like [`Proxy::start`], with the admin API bound to `admin_ip` (its
    /// `admin` field is still the loopback address to call), the environment
    /// variables `env`, and `token` sent by the helpers.
    pub fn start_with(
        upstreams: &[(&str, SocketAddr)],
        extra: &[&str],
        admin_ip: [u8; 4],
        env: &[(&str, &str)],
        token: Option<String>,
    ) -> Proxy {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let port = free_port();
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = proxy_command(upstreams, listen, SocketAddr::from((admin_ip, port)));
        cmd.args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let mut proxy = Proxy {
            child: ChildGuard(cmd.spawn().expect("spawn sluice proxy")),
            listen,
            admin,
            token,
        };
        wait_until("the proxy's admin API", Duration::from_secs(30), || {
            if let Ok(Some(status)) = proxy.child.0.try_wait() {
                panic!(
                    "sluice proxy exited ({status}) before its admin API answered; see its stderr above"
                );
            }
            http(admin, "GET", path::HEALTHZ, None, None).is_ok_and(|(s, _)| s == 200)
        });
        // The client listener is bound before the admin API starts, so it is
        // ready too (no probe connection: it would be proxied to an upstream).
        proxy
    }

    /// The process id (for `kill -TERM`).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Sends an admin request with the token; returns the status and JSON body
    /// (`Value::Null` if the body is not JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = http(self.admin, method, path, body, self.token.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`Proxy::call`], asserting a 200.
    pub fn ok(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let (status, value) = self.call(method, path, body);
        assert_eq!(status, 200, "{method} {path} {body:?}: {value}");
        value
    }

    /// A 200 answer read as `T` (the contract's type); anything else fails.
    pub fn typed<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&str>) -> T {
        let (status, text) = http(self.admin, method, path, body, self.token.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 200, "{method} {path} {body:?}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    /// An error answer: its status and body.
    pub fn error(&self, method: &str, path: &str, body: Option<&str>) -> (u16, ErrorBody) {
        let (status, text) = http(self.admin, method, path, body, self.token.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let e = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} ({status}): {e}: {text}"));
        (status, e)
    }

    /// `GET` of an evacuation endpoint (`path::EVACUATION` or a named one).
    pub fn evacuation(&self, path: &str) -> EvacuationStatus {
        self.typed("GET", path, None)
    }

    /// `POST` of an evacuation endpoint.
    pub fn start_evacuation(&self, path: &str, request: &EvacuationRequest) -> EvacuationStatus {
        let body = serde_json::to_string(request).unwrap();
        self.typed("POST", path, Some(&body))
    }

    /// `GET /upstreams/{name}`.
    pub fn upstream(&self, name: &str) -> UpstreamView {
        self.typed("GET", &path::upstream(name), None)
    }

    /// `PUT /upstreams/{name}` with `{"serving": serving}`.
    pub fn set_serving(&self, name: &str, serving: bool) {
        let body = serde_json::to_string(&ServingRequest { serving }).unwrap();
        let _: UpstreamView = self.typed("PUT", &path::upstream(name), Some(&body));
    }

    /// Current connections to `name` (from `GET /upstreams/{name}`).
    pub fn connections(&self, name: &str) -> u64 {
        self.upstream(name).connections
    }

    /// The Prometheus text.
    pub fn metrics(&self) -> String {
        let (status, text) = http(
            self.admin,
            "GET",
            path::METRICS,
            None,
            self.token.as_deref(),
        )
        .expect("GET /metrics");
        assert_eq!(status, 200);
        text
    }
}

/// `sluice proxy --listen LISTEN --admin ADMIN --upstream NAME=ADDR…` with
/// `RUST_LOG=warn` and no admin token inherited from the environment.
pub fn proxy_command(
    upstreams: &[(&str, SocketAddr)],
    listen: SocketAddr,
    admin: SocketAddr,
) -> Command {
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("proxy")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string());
    for (name, addr) in upstreams {
        cmd.arg("--upstream").arg(format!("{name}={addr}"));
    }
    cmd.env("RUST_LOG", "warn").env_remove("SLUICE_ADMIN_TOKEN");
    cmd
}

/// What one MQTT client saw, updated as it runs.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Successful CONNACKs.
    pub connacks: AtomicU32,
    /// Refused CONNACKs.
    pub refused: AtomicU32,
    /// Connections lost after a successful CONNACK.
    pub disconnects: AtomicU32,
    /// PUBLISH packets received.
    pub messages: AtomicU32,
    /// Connected right now.
    pub connected: AtomicBool,
    /// When each connection was lost, as this client saw it.
    pub lost_at: Mutex<Vec<Instant>>,
}

impl ClientStats {
    /// Successful CONNACKs so far.
    pub fn connacks(&self) -> u32 {
        self.connacks.load(Ordering::SeqCst)
    }
    /// Connections lost so far.
    pub fn disconnects(&self) -> u32 {
        self.disconnects.load(Ordering::SeqCst)
    }
    /// Messages received so far.
    pub fn messages(&self) -> u32 {
        self.messages.load(Ordering::SeqCst)
    }
    fn lost(&self) {
        if self.connected.swap(false, Ordering::SeqCst) {
            self.lost_at.lock().unwrap().push(Instant::now());
            self.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A rumqttc client (MQTT 3.1.1, or 5 when `v5`) that reconnects forever (each
/// failed poll is followed by a short pause and a new poll, which is how rumqttc
/// reconnects), subscribes to `topic` after each CONNACK and counts what it sees.
/// Runs until the runtime is dropped.
pub async fn rumqttc_client(
    port: u16,
    id: String,
    v5: bool,
    topic: String,
    stats: Arc<ClientStats>,
) {
    let pause = Duration::from_millis(200);
    if v5 {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 16);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code == ConnectReturnCode::Success {
                        stats.connacks.fetch_add(1, Ordering::SeqCst);
                        stats.connected.store(true, Ordering::SeqCst);
                        let _ = client.try_subscribe(topic.clone(), QoS::AtMostOnce);
                    } else {
                        stats.refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    stats.messages.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Event::Incoming(Packet::Disconnect(_))) => stats.lost(),
                Ok(_) => {}
                Err(_) => {
                    stats.lost();
                    tokio::time::sleep(pause).await;
                }
            }
        }
    } else {
        use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 16);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code == ConnectReturnCode::Success {
                        stats.connacks.fetch_add(1, Ordering::SeqCst);
                        stats.connected.store(true, Ordering::SeqCst);
                        let _ = client.try_subscribe(topic.clone(), QoS::AtMostOnce);
                    } else {
                        stats.refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    stats.messages.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => {
                    stats.lost();
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// A client run as a child process whose stdout lines are collected.
pub struct LineClient {
    /// The process.
    pub child: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineClient {
    fn spawn(mut cmd: Command) -> LineClient {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn MQTT client");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        LineClient {
            child: ChildGuard(child),
            lines,
        }
    }

    /// Lines printed so far (stdout and stderr).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// scripts/paho_client.py: paho-mqtt with loop_start's reconnection.
    /// Prints `connected rc=…`, `disconnected rc=… reason=…`, `message …`.
    pub fn paho(port: u16, id: &str, v5: bool, topic: &str, seconds: u32) -> LineClient {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/paho_client.py");
        let mut cmd = Command::new(python_with_paho());
        cmd.arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--client-id",
                id,
                "--topic",
                topic,
            ])
            .args(["--protocol", if v5 { "5" } else { "3.1.1" }])
            .args(["--seconds", &seconds.to_string(), "--stdin-stop"]);
        LineClient::spawn(cmd)
    }

    /// mosquitto_sub in debug mode (line-buffered through stdbuf): prints
    /// `… received CONNACK (0)` per connect and each message's payload.
    pub fn mosquitto_sub(port: u16, id: &str, v5: bool, topic: &str) -> LineClient {
        let sub = require_program("mosquitto_sub", "mosquitto-clients");
        let mut cmd = Command::new(require_program("stdbuf", "coreutils"));
        cmd.arg("-oL")
            .arg(sub)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                topic,
                "-i",
                id,
                "-d",
            ])
            .args(["-V", if v5 { "5" } else { "311" }]);
        LineClient::spawn(cmd)
    }
}

/// Publishes one QoS 0 message with mosquitto_pub straight to `port`.
pub fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new(require_program("mosquitto_pub", "mosquitto-clients"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-m",
            payload,
        ])
        .status()
        .expect("run mosquitto_pub")
        .success();
    assert!(ok, "mosquitto_pub to {port} failed");
}
