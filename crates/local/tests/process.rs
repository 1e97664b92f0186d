//! Process supervision with real child processes: spawn, log, readiness probes,
//! graceful and forced stop, and children dying with a SIGKILLed supervisor.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_local::process::{
    Probe, ProbeError, ProcessError, SpawnSpec, Stopped, Supervised, free_port,
};
use sluice_testsupport::{TempDir, wait_until};

const DEADLINE: Duration = Duration::from_secs(20);

fn spec(dir: &TempDir, program: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        log_file: dir.0.join("out.log"),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls the log until it contains `text`.
async fn wait_for_log(path: &Path, text: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !read(path).contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {text:?} in the log; it has: {}",
            read(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet: dead too).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: "pid (comm) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn output_goes_to_the_log_and_sigterm_stops_gracefully() {
    let dir = TempDir::new("graceful");
    let mut s = spec(
        &dir,
        "sh",
        &[
            "-c",
            "echo \"hello $GREETING\"; echo oops >&2; \
             trap 'echo got TERM; exit 0' TERM; echo ready; \
             while :; do sleep 0.05; done",
        ],
    );
    s.env.insert("GREETING".into(), "world".into());
    let mut child = Supervised::spawn(&s).await.unwrap();
    assert!(child.pid() > 0);
    wait_for_log(&s.log_file, "ready").await;
    assert_eq!(child.try_status().unwrap(), None);

    let stopped = child.stop(Duration::from_secs(10)).await.unwrap();
    let Stopped::Graceful(status) = stopped else {
        panic!("expected a graceful stop, got {stopped:?}");
    };
    assert_eq!(status.code(), Some(0));
    let log = read(&s.log_file);
    assert!(log.contains("hello world"), "{log}");
    assert!(log.contains("oops"), "stderr missing: {log}");
    assert!(log.contains("got TERM"), "{log}");
    assert!(is_dead(child.pid()));
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = TempDir::new("kill");
    let s = spec(
        &dir,
        "sh",
        &[
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let mut child = Supervised::spawn(&s).await.unwrap();
    wait_for_log(&s.log_file, "ready").await;
    let started = Instant::now();
    let stopped = child.stop(Duration::from_millis(300)).await.unwrap();
    let Stopped::Killed(status) = stopped else {
        panic!("expected SIGKILL after the grace period, got {stopped:?}");
    };
    assert_eq!(status.signal(), Some(9));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Its `sleep` children were in its process group: gone too.
    let group = child.pid();
    wait_until("the process group to be empty", DEADLINE, || {
        !Command::new("pgrep")
            .args(["-g", &group.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
}

#[tokio::test]
async fn stopping_an_exited_child_reports_its_status() {
    let dir = TempDir::new("exited");
    let s = spec(&dir, "sh", &["-c", "exit 3"]);
    let mut child = Supervised::spawn(&s).await.unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(3));
    let stopped = child.stop(Duration::from_secs(1)).await.unwrap();
    assert!(
        matches!(stopped, Stopped::AlreadyExited(s) if s.code() == Some(3)),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn a_missing_program_is_named() {
    let dir = TempDir::new("missing");
    let s = spec(&dir, "/nonexistent/sluice-test-program", &[]);
    let err = Supervised::spawn(&s).await.unwrap_err();
    assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/sluice-test-program"),
        "{err}"
    );
}

#[tokio::test]
async fn http_and_tcp_probes_against_a_real_server() {
    let dir = TempDir::new("http");
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    std::fs::write(dir.0.join("healthz"), "ok").unwrap();
    let mut s = spec(
        &dir,
        "python3",
        &[
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ],
    );
    s.args
        .extend(["--directory".into(), dir.0.display().to_string()]);
    let mut server = Supervised::spawn(&s).await.unwrap();

    let healthz = Probe::Http {
        addr: localhost(port),
        path: "/healthz".into(),
    };
    server
        .wait_ready(&healthz, DEADLINE, Duration::from_millis(50))
        .await
        .unwrap_or_else(|e| panic!("{e}; log: {}", read(&s.log_file)));
    Probe::Tcp(localhost(port))
        .check(Duration::from_secs(2))
        .await
        .unwrap();

    let missing = Probe::Http {
        addr: localhost(port),
        path: "/missing".into(),
    };
    let err = missing.check(Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(&err, ProbeError::Status { status_line, .. } if status_line.contains("404")),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected a 2xx"), "{err}");

    let stopped = server.stop(Duration::from_secs(10)).await.unwrap();
    assert!(!matches!(stopped, Stopped::Killed(_)), "{stopped:?}");
    let err = Probe::Tcp(localhost(port))
        .check(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn wait_ready_fails_fast_when_the_child_exits() {
    let dir = TempDir::new("early-exit");
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let s = spec(&dir, "sh", &["-c", "echo cannot start >&2; exit 4"]);
    let mut child = Supervised::spawn(&s).await.unwrap();
    let err = child
        .wait_ready(
            &Probe::Tcp(localhost(port)),
            Duration::from_secs(60),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    let ProcessError::ExitedBeforeReady { status, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(status.code(), Some(4));
    assert!(err.to_string().contains("out.log"), "{err}");
}

#[tokio::test]
async fn wait_ready_gives_up_at_the_deadline_with_the_last_failure() {
    let dir = TempDir::new("not-ready");
    let port = free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let s = spec(&dir, "sleep", &["600"]);
    let mut child = Supervised::spawn(&s).await.unwrap();
    let err = child
        .wait_ready(
            &Probe::Tcp(localhost(port)),
            Duration::from_millis(300),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::NotReady {
                last: ProbeError::Io { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // Dropping the handle kills it.
    let pid = child.pid();
    drop(child);
    wait_until("the dropped child to die", DEADLINE, || is_dead(pid));
}

#[test]
fn free_ports_are_free() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(ip).unwrap();
    assert_ne!(port, 0);
    std::net::TcpListener::bind((ip, port)).unwrap();
}

/// Children spawned from a thread that then exits keep running: the death signal
/// is tied to the spawning *thread*, so sluice spawns from a thread of its own.
#[test]
fn children_outlive_the_thread_that_asked_for_them() {
    let dir = TempDir::new("thread");
    let s = spec(
        &dir,
        "sh",
        &[
            "-c",
            "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    let (mut child, tid) = std::thread::spawn(move || {
        let child = handle.block_on(Supervised::spawn(&s)).unwrap();
        (child, nix::unistd::gettid().as_raw())
    })
    .join()
    .unwrap();
    // Once the thread's task entry is gone, any death signal has been sent.
    wait_until("the spawning thread to be gone", DEADLINE, || {
        !Path::new(&format!("/proc/self/task/{tid}")).exists()
    });
    runtime.block_on(wait_for_log(&dir.0.join("out.log"), "ready"));
    let stopped = runtime
        .block_on(child.stop(Duration::from_secs(10)))
        .unwrap();
    assert!(
        matches!(stopped, Stopped::Graceful(s) if s.code() == Some(7)),
        "the child did not survive its spawning thread: {stopped:?}"
    );
}

/// Env var that turns [`supervisor_helper`] into a supervisor process.
const HELPER_DIR: &str = "SLUICE_LOCAL_TEST_SUPERVISOR_DIR";

/// Run as a separate process by `children_die_with_a_sigkilled_supervisor`:
/// spawns a supervised `sleep` and an unsupervised one (the control), writes
/// their pids, then waits to be killed.
#[test]
#[ignore = "helper process for children_die_with_a_sigkilled_supervisor"]
#[expect(
    clippy::zombie_processes,
    reason = "the helper is SIGKILLed while its children run; the test kills them"
)]
fn supervisor_helper() {
    let Some(dir) = std::env::var_os(HELPER_DIR).map(PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = SpawnSpec {
        program: "sleep".into(),
        args: vec!["600".into()],
        env: BTreeMap::new(),
        log_file: dir.join("child.log"),
    };
    let child = runtime.block_on(Supervised::spawn(&spec)).unwrap();
    let control = Command::new("sleep").arg("600").spawn().unwrap();
    let pids = format!("{} {}\n", child.pid(), control.id());
    std::fs::write(dir.join("pids.tmp"), pids).unwrap();
    std::fs::rename(dir.join("pids.tmp"), dir.join("pids")).unwrap();
    loop {
        std::thread::park();
    }
}

#[test]
fn children_die_with_a_sigkilled_supervisor() {
    let dir = TempDir::new("pdeathsig");
    let mut supervisor = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "supervisor_helper", "--ignored", "--nocapture"])
        .env(HELPER_DIR, &dir.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pids_file = dir.0.join("pids");
    wait_until("the helper to write its children's pids", DEADLINE, || {
        pids_file.exists()
    });
    let pids: Vec<u32> = read(&pids_file)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let [child, control] = pids[..] else {
        panic!("bad pids file: {pids:?}");
    };
    let _cleanup = KillOnDrop(vec![child, control]);
    assert!(!is_dead(child) && !is_dead(control));

    supervisor.kill().unwrap(); // SIGKILL: no chance to clean up
    supervisor.wait().unwrap();

    wait_until(
        "the supervised child to die with its supervisor",
        DEADLINE,
        || is_dead(child),
    );
    // The control, spawned without sluice, survives: the test can tell.
    assert!(!is_dead(control), "the control child died too");
}

/// SIGKILLs the processes when dropped, so a failing test leaves no orphan.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}
