//! `sluice up`'s control API is closed by default: beyond loopback it needs a
//! strong token, and with one, the API and `sluice status|apply|abort` want it
//! (from a flag, a file or SLUICE_ADMIN_TOKEN) while /healthz stays open.

mod support;
mod up_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_api::admin::{self, ErrorBody, ErrorCode};
use sluice_api::control::{UpStatus, path};
use sluice_core::engine::Phase;
use support::{ChildGuard, TempDir, free_port, http, sluice_bin};
use up_support::{Up, fleet_yaml};

/// A token long enough to be accepted (`openssl rand -hex 8`).
const TOKEN: &str = "a94c1f07d2e85b36";

#[test]
fn up_beyond_loopback_without_a_strong_token_starts_nothing() {
    let dir = TempDir::new("up-token");
    let listen = free_port();
    let file = dir.join("fleet.yaml");
    std::fs::write(
        &file,
        fleet_yaml(1, "1", "").replace("{listen}", &format!("127.0.0.1:{listen}")),
    )
    .unwrap();
    for (extra, needle) in [
        (&[][..], "--admin 0.0.0.0:"),
        (
            &["--admin-token", "short"][..],
            "--admin-token: the admin token is 5 bytes",
        ),
    ] {
        let mut child = ChildGuard(
            Command::new(sluice_bin())
                .args(["up", "-f", file.to_str().unwrap(), "--admin"])
                .arg(format!("0.0.0.0:{}", free_port()))
                .arg("--run-dir")
                .arg(dir.join("run"))
                .args(extra)
                .env_remove("SLUICE_ADMIN_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sluice up"),
        );
        let (status, stderr) = child.exit_within(Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(stderr.contains("openssl rand -hex 32"), "{stderr}");
        assert!(!dir.join("run").exists(), "something started");
    }
}

#[test]
fn control_api_and_its_clients_use_the_token() {
    let dir = TempDir::new("up-token-file");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();
    let up = Up::start_with(
        &fleet_yaml(1, "1", ""),
        [0, 0, 0, 0],
        &["--admin-token-file", token_file],
        &[],
    );
    support::wait_until("the control API", Duration::from_secs(30), || {
        http(up.admin, "GET", path::HEALTHZ, None, None).is_ok_and(|(s, _)| s == 200)
    });
    for path in [path::STATUS, path::METRICS] {
        let (status, body) = http(up.admin, "GET", path, None, None).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        let body: ErrorBody = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(body.code, ErrorCode::Unauthorized, "{body:?}");
    }
    // 200 with the token (GET /status answers 503 until the engine's first
    // decision).
    support::wait_until("the status with the token", Duration::from_secs(30), || {
        http(up.admin, "GET", path::STATUS, None, Some(TOKEN)).is_ok_and(|(s, _)| s == 200)
    });
    let (status, _) = http(up.admin, "POST", path::ABORT, None, None).unwrap();
    assert_eq!(status, 401, "abort without the token");

    let out = up.cli(&["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("wants its token"), "{stderr}");
    for (args, env) in [
        (
            &["status", "--json", "--admin-token-file", token_file][..],
            &[][..],
        ),
        (&["status", "--json"], &[("SLUICE_ADMIN_TOKEN", TOKEN)]),
        (&["status", "--json", "--admin-token", TOKEN], &[]),
    ] {
        let out = up.cli_with(args, env);
        assert!(
            out.status.success(),
            "{args:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: UpStatus = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(status.fleet, "test");
    }
}

#[test]
fn instances_do_not_inherit_the_token() {
    // SLUICE_ADMIN_TOKEN in `sluice up`'s environment protects its control API
    // only: the evacuators (on loopback) must answer the runner without it.
    let up = Up::start_with(
        &fleet_yaml(1, "1", ""),
        [127, 0, 0, 1],
        &[],
        &[("SLUICE_ADMIN_TOKEN", TOKEN)],
    );
    let mut status = None;
    support::wait_until("a ready instance", Duration::from_secs(60), || {
        let Ok((200, body)) = http(up.admin, "GET", path::STATUS, None, Some(TOKEN)) else {
            return false;
        };
        let s: UpStatus = serde_json::from_str(&body).expect("status JSON");
        let ready = s.status.phase == Phase::Stable && s.instances.first().is_some_and(|i| i.ready);
        status = Some(s);
        ready
    });
    let status = status.expect("a status");
    let evacuator: std::net::SocketAddr = status.instances[0]
        .admin_addr
        .parse()
        .unwrap_or_else(|e| panic!("adminAddr in {status:?}: {e}"));
    let (code, body) = http(evacuator, "GET", admin::path::EVACUATION, None, None).unwrap();
    assert_eq!(code, 200, "the evacuator wants a token: {body}");
    assert_eq!(
        http(up.admin, "GET", path::STATUS, None, None).unwrap().0,
        401
    );
}
