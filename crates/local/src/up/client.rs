//! `sluice apply`, `sluice status` and `sluice abort`: clients of the control
//! API of a running `sluice up`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sluice_api::control::{ControlError, UpStatus, path};
use sluice_core::engine::Phase;
use sluice_proxy::auth::{TOKEN_ENV, TokenArgs};

use super::http::{self, Response};
use super::{AbortArgs, ApplyArgs, StatusArgs};
use crate::LocalError;
use crate::fleet::Fleet;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a request; answers the status code and the body.
async fn call(
    admin: SocketAddr,
    token: &TokenArgs,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, LocalError> {
    let token = token.resolve()?;
    http::request(admin, method, path, body, token.as_ref(), TIMEOUT)
        .await
        .map_err(|_| LocalError::NoFleet { addr: admin })
}

/// The body of a `want` answer as `T`; any other answer is the fleet's refusal.
fn answer<T: DeserializeOwned>(r: &Response, want: u16, what: &str) -> Result<T, LocalError> {
    if r.status == 401 {
        return Err(LocalError::Control(format!(
            "the fleet's control API wants its token: give --admin-token-file FILE, \
             {TOKEN_ENV} or --admin-token, as given to `sluice up`"
        )));
    }
    if r.status != want {
        let message = serde_json::from_str::<ControlError>(&r.body).map_or_else(
            |_| format!("{what}: the fleet answered {}: {}", r.status, r.body),
            |e| e.error,
        );
        return Err(LocalError::Control(message));
    }
    serde_json::from_str(&r.body).map_err(|e| {
        LocalError::Control(format!(
            "{what}: the answer does not parse ({e}); is `sluice up` the same version as this sluice?"
        ))
    })
}

/// Hands a changed fleet file to the running fleet.
pub async fn run_apply(args: ApplyArgs) -> Result<(), LocalError> {
    // The same checks (and messages) as `sluice up`, before anything is sent.
    Fleet::load(&args.file)?;
    let text = std::fs::read(&args.file).map_err(|source| crate::FleetError::Read {
        path: args.file.clone(),
        source,
    })?;
    let r = call(args.admin, &args.token, "PUT", path::SPEC, Some(&text)).await?;
    let applied: sluice_api::control::Applied = answer(&r, 200, "PUT /spec")?;
    let revision = &applied.revision;
    if applied.upgrade {
        println!("revision {revision}: upgrade started");
    } else if applied.changed {
        println!("revision {revision}: spec updated (same revision, no upgrade)");
    } else {
        println!("unchanged");
    }
    Ok(())
}

/// Prints the running fleet's status.
pub async fn run_status(args: StatusArgs) -> Result<(), LocalError> {
    let r = call(args.admin, &args.token, "GET", path::STATUS, None).await?;
    let status: UpStatus = answer(&r, 200, "GET /status")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{}", render_status(&status));
    }
    Ok(())
}

/// Stops the running upgrade and returns traffic to the old revision.
pub async fn run_abort(args: AbortArgs) -> Result<(), LocalError> {
    let r = call(args.admin, &args.token, "POST", path::ABORT, None).await?;
    let _: sluice_api::control::Aborting = answer(&r, 202, "POST /abort")?;
    println!("aborting: traffic returns to the current revision; see `sluice status`");
    Ok(())
}

/// The human form of `GET /status`.
fn render_status(v: &UpStatus) -> String {
    let s = &v.status;
    let mut out = String::new();
    let phase: Phase = s.phase;
    let _ = writeln!(out, "fleet {} on {}: phase {phase:?}", v.fleet, v.listen);
    let _ = writeln!(
        out,
        "revisions: current {}, update {}",
        s.current_revision, s.update_revision
    );
    let _ = writeln!(
        out,
        "instances: {} live, {} ready, {} serving",
        s.replicas, s.ready_replicas, s.serving_replicas
    );
    for c in &s.conditions {
        let _ = writeln!(
            out,
            "{}={:?} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<12} {:<6} {:<8} {:>11}  EVACUATION",
        "NAME", "REVISION", "READY", "SERVING", "CONNECTIONS"
    );
    for i in &v.instances {
        let evacuation = if i.failed {
            "failed".to_owned()
        } else if i.unknown.is_some() {
            "unknown".to_owned()
        } else {
            i.evacuation
                .as_ref()
                .map_or_else(|| "-".to_owned(), |e| e.state.as_str().to_owned())
        };
        let connections = i
            .connections
            .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<6} {:<8} {connections:>11}  {evacuation}",
            i.name, i.revision, i.ready, i.serving,
        );
    }
    out
}
