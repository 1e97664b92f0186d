//! Helpers shared by the integration tests: real processes on 127.0.0.1.
//!
//! Each test file does `mod support;` and uses what it needs, so some items are
//! unused in some files.
#![allow(dead_code)]

pub mod bench_extra;
pub mod http_extra;
pub mod proxy_extra;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `sluice` binary cargo built for these tests.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A port the OS says is free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls until `cond` is true or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    wait_until(&format!("{addr} to accept"), timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves no orphan.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finds a program on PATH or in the sbin folders Debian puts daemons in; panics
/// with an install hint naming the Debian package when it is missing, so CI fails
/// loudly instead of skipping.
pub fn require_program(name: &str, debian_package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is needed by this test and was not found; install it with \
                 `apt-get install -y {debian_package}` (scripts/test does this for you)"
            )
        })
}

/// The Python interpreter of the project's virtualenv (created by scripts/test),
/// with paho-mqtt; panics with the command that creates it when missing.
pub fn python_with_paho() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("SLUICE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "paho-mqtt is needed by this test; create the virtualenv with \
         `python3 -m venv .venv && .venv/bin/pip install paho-mqtt` (scripts/test does this) \
         or point SLUICE_PYTHON at a python that has it"
    );
    python
}

/// A real mosquitto broker on a free loopback port, killed when dropped.
pub struct Mosquitto {
    /// The port it listens on.
    pub port: u16,
    /// The broker's process.
    pub child: ChildGuard,
    /// Its config file's folder, removed when dropped.
    _dir: TempDir,
}

impl Mosquitto {
    /// Starts mosquitto (Debian package `mosquitto`) with anonymous access on a
    /// free port and `max_connections` unlimited, and waits until it accepts.
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    /// Starts mosquitto on `port` (e.g. to restart a broker on the same port).
    pub fn start_on(port: u16) -> Mosquitto {
        let bin = require_program("mosquitto", "mosquitto");
        let dir = TempDir::new("mosquitto");
        let conf = dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
                 persistence false\nsys_interval 1\nlog_dest none\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        let guard = ChildGuard(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        Mosquitto {
            port,
            child: guard,
            _dir: dir,
        }
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A fresh folder under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `sluice-test-{tag}-{pid}-{n}`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sluice-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
