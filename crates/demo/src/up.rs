//! `sluice up` as a child process, and its control API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_api::control::{Applied, UpStatus, path};

use crate::DemoError;
use crate::http::{self, Response};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A running `sluice up`.
pub struct Up {
    child: tokio::process::Child,
    /// Its control API.
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Up {
    /// Starts `sluice up -f FLEET --admin ADMIN FLAGS…`, output to `log`.
    pub fn start(
        sluice: &Path,
        fleet: &Path,
        admin: SocketAddr,
        flags: &[&str],
        log: &Path,
    ) -> Result<Up, DemoError> {
        let file = std::fs::File::create(log).map_err(|source| DemoError::Io {
            what: format!("creating {}", log.display()),
            source,
        })?;
        let err = file.try_clone().map_err(|source| DemoError::Io {
            what: format!("opening {}", log.display()),
            source,
        })?;
        let child = tokio::process::Command::new(sluice)
            .arg("up")
            .arg("-f")
            .arg(fleet)
            .arg("--admin")
            .arg(admin.to_string())
            // Loopback: no token, whatever the user's shell holds for others.
            .env_remove(sluice_proxy::auth::TOKEN_ENV)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DemoError::Io {
                what: format!("starting {} up", sluice.display()),
                source,
            })?;
        Ok(Up {
            child,
            admin,
            log: log.to_owned(),
        })
    }

    /// The control API's metrics URL.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }

    /// Exited already? Then an error with the end of its log.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.died(status)),
            _ => Ok(()),
        }
    }

    fn died(&self, status: ExitStatus) -> DemoError {
        DemoError::Fleet(format!(
            "`sluice up` exited ({status}); the end of {}:\n{}",
            self.log.display(),
            tail(&self.log, 15)
        ))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<Response> {
        http::request(
            self.admin,
            method,
            path,
            body.map(|b| ("application/yaml", b)),
            TIMEOUT,
        )
        .await
    }

    /// Waits until the control API answers `GET /healthz` (or `sluice up` exits).
    pub async fn wait_healthy(&mut self, limit: Duration) -> Result<(), DemoError> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            self.check_alive()?;
            if let Ok(r) = self.call("GET", path::HEALTHZ, None).await
                && r.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > end {
                return Err(DemoError::Fleet(format!(
                    "the control API on {} did not answer within {limit:?}; see {}",
                    self.admin,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /status`.
    pub async fn status(&self) -> Result<UpStatus, String> {
        let r = self
            .call("GET", path::STATUS, None)
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET /status answered {}: {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).map_err(|e| format!("GET /status: {e}"))
    }

    /// `PUT /spec`: returns the new revision.
    pub async fn put_spec(&self, yaml: &str) -> Result<String, DemoError> {
        let r = self
            .call("PUT", path::SPEC, Some(yaml))
            .await
            .map_err(|e| DemoError::Fleet(format!("PUT /spec: {e}")))?;
        if r.status != 200 {
            return Err(DemoError::Fleet(format!(
                "PUT /spec answered {}: {}",
                r.status, r.body
            )));
        }
        let a: Applied = serde_json::from_str(&r.body)
            .map_err(|e| DemoError::Fleet(format!("PUT /spec answered {:?}: {e}", r.body)))?;
        Ok(a.revision)
    }

    /// `GET /metrics`: connections per instance.
    pub async fn connections(&self) -> Result<BTreeMap<String, u64>, String> {
        let r = self
            .call("GET", path::METRICS, None)
            .await
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("GET /metrics answered {}", r.status));
        }
        let samples = sluice_bench::scrape::parse_text(&r.body);
        Ok(sluice_bench::scrape::upstream_connections(&samples))
    }

    /// SIGTERM, then wait (at most `grace`, then SIGKILL).
    pub async fn stop(mut self, grace: Duration) -> Result<(), DemoError> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(self.died(status)),
            Ok(Err(source)) => Err(DemoError::Io {
                what: "waiting for sluice up".into(),
                source,
            }),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(DemoError::Fleet(format!(
                    "`sluice up` did not stop within {grace:?} of SIGTERM; killed it (see {})",
                    self.log.display()
                )))
            }
        }
    }
}

/// Sends SIGKILL to `pid` (the fault injection).
pub fn sigkill(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
