//! Test helpers of the bench tests: a running `sluice bench conn` whose
//! progress can be awaited, the hidden sink, fake `/metrics` endpoints and
//! a scripted MQTT server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ChildGuard, free_port, require_program, sluice_bin, wait_for_port, wait_until};

/// A `sluice bench conn` process; its progress lines (stderr) are followed
/// so a test can wait for a number of connected clients.
pub struct BenchRun {
    child: ChildGuard,
    connected: Arc<AtomicU64>,
    stderr: Arc<Mutex<String>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

/// What a finished bench printed.
pub struct BenchOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// The text summary.
    pub stdout: String,
    /// Progress lines and errors.
    pub stderr: String,
}

impl BenchRun {
    /// Starts `sluice bench conn ARGS`.
    pub fn start(args: &[&str]) -> BenchRun {
        BenchRun::start_command(Command::new(sluice_bin()), args)
    }

    /// Starts `COMMAND bench conn ARGS`, where `command` runs the `sluice`
    /// binary (e.g. `ip netns exec NS sluice`, which execs it: same pid).
    pub fn start_command(mut command: Command, args: &[&str]) -> BenchRun {
        let mut child = command
            .args(["bench", "conn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice bench conn");
        let connected = Arc::new(AtomicU64::new(0));
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let (c, e) = (connected.clone(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(n) = progress_connected(&line) {
                    c.store(n, Ordering::SeqCst);
                }
                let mut all = e.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        BenchRun {
            child: ChildGuard(child),
            connected,
            stderr,
            stdout: Some(stdout),
        }
    }

    /// Connected clients in the latest progress line.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::SeqCst)
    }

    /// How many lines the bench wrote on stderr so far (one progress line
    /// a second when not on a terminal).
    pub fn stderr_lines(&self) -> usize {
        self.stderr.lock().unwrap().lines().count()
    }

    /// Waits until the progress line shows `n` connected clients.
    pub fn wait_connected(&self, n: u64, timeout: Duration) {
        wait_until(&format!("{n} clients connected"), timeout, || {
            assert!(
                self.stderr.lock().unwrap().find("error").is_none(),
                "bench failed: {}",
                self.stderr.lock().unwrap()
            );
            self.connected() == n
        });
    }

    /// Sends SIGTERM (a graceful stop: the summary is printed and the
    /// files written) and waits for the exit.
    pub fn stop(self) -> BenchOutput {
        let pid = self.child.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid}");
        self.wait()
    }

    /// Waits for the exit (runs with `--duration`).
    pub fn wait(mut self) -> BenchOutput {
        let status = self.child.0.wait().expect("wait for bench");
        let stdout = self
            .stdout
            .take()
            .expect("stdout")
            .join()
            .expect("stdout reader");
        // The stderr reader ends with the pipe; give it a moment to drain.
        wait_until("stderr drained", Duration::from_secs(5), || {
            Arc::strong_count(&self.stderr) == 1
        });
        let stderr = self.stderr.lock().unwrap().clone();
        BenchOutput {
            success: status.success(),
            stdout,
            stderr,
        }
    }
}

/// Reads an HTTP request head (up to its blank line) byte by byte; false
/// at the end of the stream.
pub fn read_request_head(s: &mut std::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// `connected N/M` out of a progress line.
fn progress_connected(line: &str) -> Option<u64> {
    let rest = line.split("connected ").nth(1)?;
    rest.split('/').next()?.trim().parse().ok()
}

/// Runs `sluice bench conn ARGS` to the end (it must have `--duration`).
pub fn bench(args: &[&str]) -> BenchOutput {
    BenchRun::start(args).wait()
}

/// Reads a `--json` summary.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("summary is JSON")
}

/// The broker's own count of connected clients, which includes the
/// `mosquitto_sub` asking.
pub fn broker_connected(port: u16) -> Option<u64> {
    let sub = require_program("mosquitto_sub", "mosquitto-clients");
    let out = Command::new(sub)
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "$SYS/broker/clients/connected",
            // The first message is the retained one, counted when an earlier
            // poll's subscriber may still have been connected; the next ones are
            // counted while this subscriber alone asks (mosquitto publishes $SYS
            // every `sys_interval`, 1 s here). Take the last.
            "-C",
            "3",
            "-W",
            "10",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// The hidden `sluice bench sink` on a free port.
pub struct Sink {
    /// Its port.
    pub port: u16,
    _child: ChildGuard,
}

impl Sink {
    /// Starts it and waits until it accepts.
    pub fn start() -> Sink {
        let port = free_port();
        let child = Command::new(sluice_bin())
            .args(["bench", "sink", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sluice bench sink");
        let guard = ChildGuard(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        Sink {
            port,
            _child: guard,
        }
    }
}

/// A `/metrics` endpoint serving a body the test can change.
pub struct FakeMetrics {
    /// `http://127.0.0.1:PORT/metrics`.
    pub url: String,
    /// The body served.
    pub body: Arc<Mutex<String>>,
    /// Requests served.
    pub hits: Arc<AtomicU64>,
}

impl FakeMetrics {
    /// Serves `body` on a free port from a background thread.
    pub fn start(body: &str) -> FakeMetrics {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(body.to_owned()));
        let hits = Arc::new(AtomicU64::new(0));
        let (b, h) = (body.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let text = b.lock().unwrap().clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{text}",
                    text.len()
                );
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        FakeMetrics { url, body, hits }
    }
}

/// The gauge line `sluice proxy` exports for one upstream.
pub fn gauge(upstream: &str, value: u64) -> String {
    use sluice_api::metrics::{UPSTREAM_CONNECTIONS as C, label};
    let (u, p) = (label::UPSTREAM, label::PROTOCOL);
    format!("# TYPE {C} gauge\n{C}{{{u}=\"{upstream}\",{p}=\"mqtt\"}} {value}\n")
}

/// What `sluice up` exports for one instance: its connections labelled with
/// its revision, and its evacuator's eviction counter.
pub fn instance(upstream: &str, revision: &str, value: u64, evicted: u64) -> String {
    format!(
        "# TYPE sluice_upstream_connections gauge\n\
         sluice_upstream_connections{{upstream=\"{upstream}\",revision=\"{revision}\",protocol=\"mqtt\"}} {value}\n\
         # TYPE sluice_evictions_total counter\n\
         sluice_evictions_total{{upstream=\"{upstream}\",revision=\"{revision}\"}} {evicted}\n"
    )
}

/// What the scripted MQTT 5 server does after its CONNACK.
#[derive(Clone, Copy)]
pub enum Script {
    /// Nothing at all: never answers PINGREQ.
    Silent,
    /// DISCONNECT "use another server" (0x9C) with a Server Reference.
    Redirect,
}

/// A tiny MQTT 5 server that accepts every CONNECT and then follows a
/// script; counts connections.
pub struct ScriptedServer {
    /// Its port.
    pub port: u16,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// The Server Reference [`Script::Redirect`] sends.
pub const REFERENCE: &str = "blue.example:1883";

impl ScriptedServer {
    /// Starts it on a free port.
    pub fn start(script: Script) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                // Read the CONNECT (small: fits one read), answer CONNACK.
                let mut connect = [0u8; 512];
                let _ = stream.read(&mut connect);
                let _ = stream.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]);
                if let Script::Redirect = script {
                    let mut d = vec![0xe0, 0, 0x9c, 0, 0x1c, 0, REFERENCE.len() as u8];
                    d.extend_from_slice(REFERENCE.as_bytes());
                    d[3] = (d.len() - 4) as u8;
                    d[1] = (d.len() - 2) as u8;
                    let _ = stream.write_all(&d);
                }
                held.push(stream);
            }
        });
        ScriptedServer {
            port,
            accepted,
            stop,
        }
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
