//! Helpers of the `sluice up` tests (up_*.rs): a running `sluice up` on free
//! ports with its control API, status polling, and process liveness checks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_api::control::{InstanceView, UpStatus, path};
use sluice_core::engine::Phase;

use crate::support::bench_extra::BenchRun;
use crate::support::proxy_extra::http;
use crate::support::{ChildGuard, TempDir, collect_lines, free_port, sluice_bin, wait_until};

/// A fleet file: `{listen}` is replaced by the front address.
pub fn fleet_yaml(replicas: u32, version: &str, extra: &str) -> String {
    format!(
        "name: test\nreplicas: {replicas}\nlisten: \"{{listen}}\"\nprotocol: mqtt\n\
         version: \"{version}\"\napp:\n  command: sluice broker --port {{port}}\n  \
         terminationGracePeriodSeconds: 5\n{extra}"
    )
}

/// A running `sluice up`, killed (SIGKILL) when dropped.
pub struct Up {
    pub child: ChildGuard,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TempDir,
    pub file: PathBuf,
    pub stdout: Arc<Mutex<String>>,
    /// Its log lines (also echoed to the test's stderr).
    pub stderr: Arc<Mutex<String>>,
}

impl Up {
    /// Writes `yaml` (with `{listen}` filled in) and starts `sluice up -f` on it.
    pub fn start(yaml: &str) -> Up {
        Up::start_with(yaml, [127, 0, 0, 1], &[], &[])
    }

    /// Like [`Up::start`], with the control API bound to `admin_ip` (the
    /// `admin` field stays the loopback address to call), the `extra` flags and
    /// the environment variables `env`.
    pub fn start_with(yaml: &str, admin_ip: [u8; 4], extra: &[&str], env: &[(&str, &str)]) -> Up {
        let dir = TempDir::new("up");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let port = free_port();
        let admin = SocketAddr::from(([127, 0, 0, 1], port));
        let file = dir.0.join("fleet.yaml");
        std::fs::write(&file, yaml.replace("{listen}", &listen.to_string())).unwrap();
        let mut child = Command::new(sluice_bin())
            .arg("up")
            .arg("-f")
            .arg(&file)
            .arg("--admin")
            .arg(SocketAddr::from((admin_ip, port)).to_string())
            .arg("--run-dir")
            .arg(dir.0.join("run"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .env_remove("SLUICE_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice up");
        let stdout = collect_lines(child.stdout.take().unwrap(), false);
        let stderr = collect_lines(child.stderr.take().unwrap(), true);
        Up {
            child: ChildGuard(child),
            listen,
            admin,
            dir,
            file,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `GET /status`, or `None` while the API does not answer (or the engine has
    /// not decided yet). An answer that does not parse fails the test.
    pub fn try_status(&self) -> Option<UpStatus> {
        let (code, body) = http(self.admin, "GET", path::STATUS, None, None).ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).unwrap_or_else(|e| panic!("status: {e}: {body}")))
    }

    /// Connects `count` MQTT clients through the front with `sluice bench conn`
    /// (reconnecting 200 ms after a disconnect) and waits until the fleet holds
    /// them all. Returns the running bench, where it writes its JSON summary, and
    /// the status that showed all of them.
    pub fn connect_clients(&self, count: u32) -> (BenchRun, PathBuf, UpStatus) {
        let summary = self.dir.0.join("bench.json");
        let bench = BenchRun::start(&[
            "-p",
            &self.listen.port().to_string(),
            "-c",
            &count.to_string(),
            "-i",
            "2",
            "--reconnect-period",
            "200",
            "--json",
            summary.to_str().unwrap(),
            "-q",
        ]);
        let status = self.wait_status(
            &format!("{count} connections"),
            Duration::from_secs(30),
            |s| s.total_connections() == Some(u64::from(count)),
        );
        (bench, summary, status)
    }

    /// Polls the status until `pred` holds; returns that status.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&UpStatus) -> bool,
    ) -> UpStatus {
        let mut last = None;
        let mut found = None;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.try_status() {
                if pred(&s) {
                    found = Some(s);
                    break;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last status: {}\nsluice up printed:\n{}",
                last.map(|s| serde_json::to_string_pretty(&s).unwrap()).unwrap_or_default(),
                self.stdout.lock().unwrap()
            )
        })
    }

    /// Waits for phase Stable with `n` ready serving instances of one revision.
    pub fn wait_stable(&self, n: usize, timeout: Duration) -> UpStatus {
        self.wait_status(
            &format!("Stable with {n} ready serving instances"),
            timeout,
            |s| {
                let rev = &s.status.update_revision;
                s.status.phase == Phase::Stable
                    && &s.status.current_revision == rev
                    && s.instances.len() == n
                    && s.instances
                        .iter()
                        .all(|i| i.ready && i.serving && &i.revision == rev)
            },
        )
    }

    /// Writes a new fleet file and runs `sluice apply -f` on it.
    pub fn apply(&self, yaml: &str) -> Output {
        std::fs::write(
            &self.file,
            yaml.replace("{listen}", &self.listen.to_string()),
        )
        .unwrap();
        self.cli(&["apply", "-f", self.file.to_str().unwrap()])
    }

    /// Runs `sluice ARGS --admin ADDR`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, &[])
    }

    /// Runs `sluice ARGS --admin ADDR` with the environment variables `env`
    /// (and no admin token but theirs).
    pub fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(sluice_bin())
            .args(args)
            .arg("--admin")
            .arg(self.admin.to_string())
            .env_remove("SLUICE_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .output()
            .expect("run sluice")
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit; returns whether it
    /// exited with status 0.
    pub fn sigterm_and_wait(&mut self, timeout: Duration) -> bool {
        crate::support::proxy_extra::sigterm(self.pid());
        let mut status = None;
        wait_until("sluice up to exit", timeout, || {
            status = self.child.0.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap().success()
    }
}

/// Every process id of the status' instances (apps and evacuators).
pub fn pids(s: &UpStatus) -> Vec<u32> {
    s.instances
        .iter()
        .flat_map(|i| [i.app_pid, i.evacuator_pid])
        .flatten()
        .collect()
}

/// Every instance ready and serving.
pub fn all_serving(s: &UpStatus) -> bool {
    s.instances.iter().all(|i| i.ready && i.serving)
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

/// Children of `pid` (from /proc), alive or not.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Connections per instance, by name; every count must be known.
pub fn connections(s: &UpStatus) -> Vec<(String, u64)> {
    s.instances
        .iter()
        .map(|i: &InstanceView| {
            let n = i
                .connections
                .unwrap_or_else(|| panic!("{} holds an unknown number: {:?}", i.name, i.unknown));
            (i.name.clone(), n)
        })
        .collect()
}

/// A fault-injecting stand-in on another process's TCP listener: it takes a
/// copy of the listening socket (`pidfd_getfd`, root or the same user) and
/// answers every connection it accepts with a canned response. With the owner
/// stopped (SIGSTOP), every request to that port gets the canned answer: a real
/// process's API "answering 500 or garbage", with no test code in the product.
pub struct Impostor {
    stop: Arc<std::sync::atomic::AtomicBool>,
    answer: Arc<Mutex<&'static [u8]>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Impostor {
    /// Takes over `pid`'s listener on 127.0.0.1:`port`, answering `answer`.
    pub fn take_over(pid: u32, port: u16, answer: &'static [u8]) -> Impostor {
        use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
        let fd = listener_fd(pid, port);
        let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).expect("pidfd_open");
        let listener = std::net::TcpListener::from(
            pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).expect("pidfd_getfd"),
        );
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answer = Arc::new(Mutex::new(answer));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&answer));
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut req = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                                _ => break,
                            }
                        }
                        let answer = *a.lock().unwrap();
                        let _ = c.write_all(answer);
                    }
                    // Nothing pending: look again shortly (an accept loop, not
                    // a synchronisation).
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Impostor {
            stop,
            answer,
            thread: Some(thread),
        }
    }

    /// Answers `answer` from now on.
    pub fn answer(&self, answer: &'static [u8]) {
        *self.answer.lock().unwrap() = answer;
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The descriptor number of `pid`'s socket listening on 127.0.0.1:`port`.
fn listener_fd(pid: u32, port: u16) -> i32 {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let inode = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.len() > 9
                && f[3] == "0A"
                && f[1].rsplit_once(':').map(|(_, p)| p) == Some(&format!("{port:04X}"))
        })
        .map(|f| f[9].to_owned())
        .unwrap_or_else(|| panic!("no listener on port {port} in /proc/{pid}/net/tcp"));
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == wanted))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("process {pid} holds no descriptor for {wanted}"))
}
