//! Test helpers of the HTTP proxy tests: a real nginx serving two ports, and
//! the real load tools (wrk, oha, `h2load --h1`) run as child processes whose
//! own summaries are parsed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, TempDir, free_port, require_program, wait_for_port};

/// A real nginx answering `200 ok` on two loopback ports (one upstream each),
/// with keep-alive limits high enough that nginx itself never closes a
/// connection during a test. Killed when dropped.
pub struct Nginx {
    _child: ChildGuard,
    _dir: TempDir,
    /// The two `server` blocks' addresses.
    pub addrs: [SocketAddr; 2],
}

impl Nginx {
    /// Starts nginx (Debian package `nginx`) in the foreground.
    pub fn start() -> Nginx {
        let nginx = require_program("nginx", "nginx");
        let dir = TempDir::new("nginx");
        let ports = [free_port(), free_port()];
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "server {{ listen 127.0.0.1:{p}; keepalive_requests 100000000; \
                     keepalive_timeout 300s; location / {{ return 200 \"ok {i}\\n\"; }} }}\n"
                )
            })
            .collect();
        let p = dir.0.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {p}/nginx.pid;\n\
             error_log {p}/error.log warn; worker_rlimit_nofile 20000;\n\
             events {{ worker_connections 10000; }}\n\
             http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n\
             fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
             {servers} }}\n"
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let addrs = ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        for a in addrs {
            wait_for_port(a, Duration::from_secs(10));
        }
        Nginx {
            _child: ChildGuard(child),
            _dir: dir,
            addrs,
        }
    }
}

/// A load tool and what its own summary says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// wrk (Debian `wrk`).
    Wrk,
    /// oha (crates.io, `cargo install --locked oha`).
    Oha,
    /// `h2load --h1` (Debian `nghttp2-client`).
    H2load,
    /// h2load over HTTP/2 cleartext with prior knowledge (h2c).
    H2c,
}

/// The counts a tool reports.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Load {
    /// Responses received.
    pub responses: u64,
    /// Responses with a status other than 2xx.
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors (anything that is not a response).
    pub socket_errors: u64,
    /// The tool's own text, for failure messages.
    pub raw: String,
}

/// Where oha lives: on PATH or in cargo's bin folder.
fn oha() -> PathBuf {
    let cargo_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/oha"))
        .filter(|p| p.is_file());
    cargo_bin.unwrap_or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("oha"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "`oha` is needed by this test and was not found; install it with \
                     `cargo install --locked oha` (scripts/install-test-deps does this)"
                )
            })
    })
}

impl Tool {
    /// Starts the tool against `url` with `connections` keep-alive connections
    /// for `seconds`, at full speed.
    pub fn start(self, url: &str, connections: u32, seconds: u32) -> Child {
        let c = connections.to_string();
        let mut cmd = match self {
            Tool::Wrk => {
                let mut cmd = Command::new(require_program("wrk", "wrk"));
                cmd.args(["-t", "1", "-c", &c, "-d", &format!("{seconds}s"), url]);
                cmd
            }
            Tool::Oha => {
                let mut cmd = Command::new(oha());
                // -w: requests in flight at the end are waited for, not
                // counted as "aborted due to deadline".
                cmd.args(["-c", &c, "-z", &format!("{seconds}s"), "-w", "--no-tui"])
                    .args(["--output-format", "json", url]);
                cmd
            }
            Tool::H2load | Tool::H2c => {
                let mut cmd = Command::new(require_program("h2load", "nghttp2-client"));
                if self == Tool::H2load {
                    cmd.arg("--h1");
                }
                cmd.args(["-t", "1", "-c", &c, "-D", &seconds.to_string(), url]);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {self:?}: {e}"))
    }

    /// Waits for the tool and parses its summary.
    pub fn finish(self, child: Child) -> Load {
        let out = child.wait_with_output().expect("wait for the load tool");
        let raw = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{self:?} failed: {raw}");
        let mut load = match self {
            Tool::Wrk => parse_wrk(&raw),
            Tool::Oha => parse_oha(&raw),
            Tool::H2load | Tool::H2c => parse_h2load(&raw),
        };
        assert!(load.responses > 0, "{self:?} reported no response: {raw}");
        load.raw = raw;
        load
    }
}

/// The numbers in `line` after `prefix`, in order.
fn numbers(line: &str) -> Vec<u64> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn line_after<'a>(raw: &'a str, prefix: &str) -> Option<&'a str> {
    raw.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(prefix))
}

/// wrk prints "N requests in", and "Socket errors: …" / "Non-2xx or 3xx
/// responses: N" only when there are some.
fn parse_wrk(raw: &str) -> Load {
    let responses = raw
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| numbers(l).first().copied())
        .unwrap_or_else(|| panic!("no request count in wrk's output: {raw}"));
    let socket_errors = line_after(raw, "Socket errors:").map_or(0, |l| numbers(l).iter().sum());
    let non_2xx = line_after(raw, "Non-2xx or 3xx responses:").map_or(0, |l| numbers(l)[0]);
    Load {
        responses,
        non_2xx,
        socket_errors,
        raw: String::new(),
    }
}

/// oha's JSON: `statusCodeDistribution` and `errorDistribution`.
fn parse_oha(raw: &str) -> Load {
    let start = raw
        .find('{')
        .unwrap_or_else(|| panic!("no JSON from oha: {raw}"));
    let v: serde_json::Value = serde_json::Deserializer::from_str(&raw[start..])
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("oha's JSON does not parse: {raw}"));
    let sum = |key: &str, pred: &dyn Fn(&str) -> bool| -> u64 {
        v[key]
            .as_object()
            .unwrap_or_else(|| panic!("no {key} in oha's JSON: {raw}"))
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(_, n)| n.as_u64().unwrap_or(0))
            .sum()
    };
    Load {
        responses: sum("statusCodeDistribution", &|_| true),
        non_2xx: sum("statusCodeDistribution", &|k| !k.starts_with('2')),
        socket_errors: sum("errorDistribution", &|_| true),
        raw: String::new(),
    }
}

/// h2load: "requests: T total, S started, D done, OK succeeded, F failed, E
/// errored, X timeout" and "status codes: a 2xx, b 3xx, c 4xx, d 5xx".
fn parse_h2load(raw: &str) -> Load {
    let req = line_after(raw, "requests:").unwrap_or_else(|| panic!("no requests line: {raw}"));
    let r = numbers(req);
    let codes = numbers(
        line_after(raw, "status codes:").unwrap_or_else(|| panic!("no status codes: {raw}")),
    );
    // "2xx" contributes its 2 to the digit runs: keep every other number.
    let codes: Vec<u64> = codes.iter().step_by(2).copied().collect();
    Load {
        responses: codes.iter().sum(),
        non_2xx: codes[1..].iter().sum(),
        // failed + errored + timeout (the timeouts are counted in failed too
        // in some versions; both are errors either way).
        socket_errors: r[4] + r[5] + r[6],
        raw: String::new(),
    }
}

/// The project's virtualenv Python, checked to import `module` (PyPI
/// `package`); panics with the install command when it does not.
pub fn python_with(module: &str, package: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python `{package}` is needed by this test; install it with \
         `python3 -m venv .venv && .venv/bin/pip install {package}` \
         (scripts/install-test-deps does this)"
    );
    python
}

/// The folder whose `node_modules` holds npm `ws` (`scripts/node`); panics
/// with the install command when it is missing.
pub fn node_ws_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/node");
    assert!(
        dir.join("node_modules/ws/package.json").is_file(),
        "npm `ws` is needed by this test; install it with \
         `npm install --prefix scripts/node` (scripts/install-test-deps does this)"
    );
    dir
}

/// A test peer script in `tests/peers`.
pub fn peer(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A Python server from `tests/peers` (which needs `module`, from the pip
/// `package`) on a free port (its first argument; `args` follow), started
/// once it printed `ready`.
pub fn python_server(
    script: &str,
    (module, package): (&str, &str),
    args: &[&str],
) -> (ChildGuard, SocketAddr) {
    let python = python_with(module, package);
    let port = free_port();
    let mut child = Command::new(python)
        .arg(peer(script))
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .unwrap_or_else(|e| panic!("read the ready line of {script}: {e}"));
    assert_eq!(line.trim(), "ready", "{script} did not start");
    (ChildGuard(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A WebSocket echo server: `ws_echo_server.py` (Python `websockets`) or
/// `ws_deaf_server.py` (never answers a Close).
pub fn ws_echo_server(script: &str) -> (ChildGuard, SocketAddr) {
    python_server(script, ("websockets", "websockets"), &[])
}

/// The `grpcio` echo server (`/sluice.Echo/Call` returns its request).
pub fn grpc_server() -> (ChildGuard, SocketAddr) {
    python_server("grpc_echo_server.py", ("grpc", "grpcio"), &[])
}

/// `sluice serve-http --name NAME` on a free port, waited for; killed when
/// the guard drops.
pub fn serve_http(name: &str) -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let child = Command::new(super::sluice_bin())
        .args(["serve-http", "--port", &port.to_string(), "--name", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice serve-http");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, Duration::from_secs(10));
    (ChildGuard(child), addr)
}
