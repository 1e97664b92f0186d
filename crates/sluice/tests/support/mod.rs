//! Helpers of the `sluice` binary's integration tests: the generic ones come
//! from `sluice-testsupport`, the ones that need this crate's binary or a
//! broker are here.
//!
//! Each test file does `mod support;` and uses what it needs, so some items are
//! unused in some files.
#![allow(dead_code, unused_imports)]

pub mod bench_extra;
pub mod http_extra;
pub mod proxy_extra;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use sluice_testsupport::{
    ChildGuard, TempDir, collect_lines, free_addr, free_port, http, metric, python_with_paho,
    require_program, sigterm, wait_for_port, wait_until,
};

/// The `sluice` binary cargo built for these tests.
pub fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
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
