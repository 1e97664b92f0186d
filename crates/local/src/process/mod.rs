//! Supervising instance processes: spawn with arguments and environment, output to
//! a log file, die with the supervisor, stop gracefully (SIGTERM, grace period,
//! SIGKILL), readiness probes, and free ports.
//!
//! Each child runs in its own process group (so a Ctrl-C in the terminal reaches
//! only sluice, which then stops instances in order) and gets SIGKILL from the
//! kernel if sluice dies without stopping it. Stop signals go to the whole group,
//! so a `sh -c` wrapper's children stop too; the death signal only reaches the
//! direct child.

mod pdeathsig;
mod probe;
mod spawner;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::net::{IpAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub use probe::{Probe, ProbeError};

/// What to run, and where its output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// The program (looked up on PATH when it has no `/`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: BTreeMap<String, String>,
    /// File that receives stdout and stderr (appended to; created if missing).
    pub log_file: PathBuf,
}

/// Why a process could not be spawned or supervised.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be opened.
    #[error("cannot open log file {}: {source}", path.display())]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why (e.g. not found, not executable).
        source: io::Error,
    },
    /// Waiting for or signalling the process failed.
    #[error("process {pid}: {source}")]
    Wait {
        /// The process id.
        pid: u32,
        /// Why.
        source: io::Error,
    },
    /// The process exited while sluice waited for it to become ready.
    #[error("process {pid} exited with {status} before it was ready; see {}", log_file.display())]
    ExitedBeforeReady {
        /// The process id.
        pid: u32,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log_file: PathBuf,
    },
    /// The readiness probe did not pass in time.
    #[error("process {pid} was not ready within {timeout:?}: {last}")]
    NotReady {
        /// The process id.
        pid: u32,
        /// How long sluice waited.
        timeout: Duration,
        /// The last probe's failure.
        last: ProbeError,
    },
}

/// How [`Supervised::stop`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It had already exited before it was asked to stop.
    AlreadyExited(ExitStatus),
    /// It exited within the grace period after SIGTERM.
    Graceful(ExitStatus),
    /// It was still running at the end of the grace period and got SIGKILL.
    Killed(ExitStatus),
}

/// A running child process. Dropping it kills its process group (SIGKILL).
#[derive(Debug)]
pub struct Supervised {
    child: tokio::process::Child,
    pid: u32,
    log_file: PathBuf,
}

impl Supervised {
    /// Starts `spec` in its own process group, output appended to its log file,
    /// set to receive SIGKILL if this process dies. Needs a tokio runtime.
    pub async fn spawn(spec: &SpawnSpec) -> Result<Supervised, ProcessError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .map_err(|source| ProcessError::LogFile {
                path: spec.log_file.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| ProcessError::LogFile {
            path: spec.log_file.clone(),
            source,
        })?;
        let mut command = std::process::Command::new(&spec.program);
        // The admin token of `sluice up` is not the instances' business (their
        // evacuators listen on loopback without one), unless `spec.env` says so.
        command
            .args(&spec.args)
            .env_remove(sluice_proxy::auth::TOKEN_ENV)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        pdeathsig::kill_child_when_parent_dies(&mut command);
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let child = spawner::spawn(command)
            .await
            .map_err(|source| ProcessError::Spawn {
                program: spec.program.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        Ok(Supervised {
            child,
            pid,
            log_file: spec.log_file.clone(),
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its log file.
    pub fn log_file(&self) -> &PathBuf {
        &self.log_file
    }

    /// `Some(status)` once it has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        self.child
            .try_wait()
            .map_err(|source| self.wait_error(source))
    }

    /// Waits until it exits.
    pub async fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        let pid = self.pid;
        self.child
            .wait()
            .await
            .map_err(|source| ProcessError::Wait { pid, source })
    }

    /// Polls `probe` every `period` until it passes; fails if the process exits
    /// first or `timeout` passes (then with the last probe's error).
    pub async fn wait_ready(
        &mut self,
        probe: &Probe,
        timeout: Duration,
        period: Duration,
    ) -> Result<(), ProcessError> {
        let pid = self.pid;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let attempt = probe.check(period.max(Duration::from_millis(100)));
            let last = tokio::select! {
                status = self.child.wait() => {
                    let status = status.map_err(|source| ProcessError::Wait { pid, source })?;
                    return Err(ProcessError::ExitedBeforeReady {
                        pid,
                        status,
                        log_file: self.log_file.clone(),
                    });
                }
                result = attempt => match result {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::NotReady { pid, timeout, last });
            }
            tokio::select! {
                status = self.child.wait() => {
                    let status = status.map_err(|source| ProcessError::Wait { pid, source })?;
                    return Err(ProcessError::ExitedBeforeReady {
                        pid,
                        status,
                        log_file: self.log_file.clone(),
                    });
                }
                () = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + period)) => {}
            }
        }
    }

    /// Stops it: SIGTERM to its process group, up to `grace` for it to exit, then
    /// SIGKILL to the group. Always reaps it.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped, ProcessError> {
        if let Some(status) = self.try_status()? {
            self.signal_group(Signal::SIGKILL); // stragglers of the group, if any
            return Ok(Stopped::AlreadyExited(status));
        }
        self.signal_group(Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            let status = status.map_err(|source| self.wait_error(source))?;
            self.signal_group(Signal::SIGKILL);
            return Ok(Stopped::Graceful(status));
        }
        self.signal_group(Signal::SIGKILL);
        let status = self.wait().await?;
        Ok(Stopped::Killed(status))
    }

    /// Sends `signal` to its process group; a group that is already gone is fine.
    fn signal_group(&self, signal: Signal) {
        let Ok(pid) = i32::try_from(self.pid) else {
            return;
        };
        if pid <= 0 {
            return;
        }
        match killpg(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid, ?signal, error = %e, "cannot signal process group"),
        }
    }

    fn wait_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Wait {
            pid: self.pid,
            source,
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Still running (or an unreaped zombie): its group id cannot have been reused.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group(Signal::SIGKILL);
        }
    }
}

/// A TCP port that is free on `ip` right now, chosen by the OS. Another process
/// may take it before it is used; callers retry on "address in use".
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}
