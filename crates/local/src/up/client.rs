//! `sluice apply`, `sluice status` and `sluice abort`: clients of the control
//! API of a running `sluice up`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sluice_proxy::auth::{TOKEN_ENV, TokenArgs};

use super::http::{self, Response};
use super::{AbortArgs, ApplyArgs, StatusArgs};
use crate::LocalError;
use crate::fleet::Fleet;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn call(
    admin: SocketAddr,
    token: &TokenArgs,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Value), LocalError> {
    let token = token.resolve()?;
    let Response { status, body } =
        http::request_with_token(admin, method, path, body, token.as_ref(), TIMEOUT)
            .await
            .map_err(|_| LocalError::NoFleet { addr: admin })?;
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, value))
}

fn refused(status: u16, body: &Value) -> LocalError {
    if status == 401 {
        return LocalError::Control(format!(
            "the fleet's control API wants its token: give --admin-token-file FILE, \
             {TOKEN_ENV} or --admin-token, as given to `sluice up`"
        ));
    }
    let message = body["error"].as_str().map_or_else(
        || format!("the fleet answered {status}: {body}"),
        str::to_owned,
    );
    LocalError::Control(message)
}

/// Hands a changed fleet file to the running fleet.
pub async fn run_apply(args: ApplyArgs) -> Result<(), LocalError> {
    // The same checks (and messages) as `sluice up`, before anything is sent.
    Fleet::load(&args.file)?;
    let text = std::fs::read(&args.file).map_err(|source| crate::FleetError::Read {
        path: args.file.clone(),
        source,
    })?;
    let (status, body) = call(args.admin, &args.token, "PUT", "/spec", Some(&text)).await?;
    if status != 200 {
        return Err(refused(status, &body));
    }
    let revision = body["revision"].as_str().unwrap_or("?");
    if body["upgrade"].as_bool() == Some(true) {
        println!("revision {revision}: upgrade started");
    } else if body["changed"].as_bool() == Some(true) {
        println!("revision {revision}: spec updated (same revision, no upgrade)");
    } else {
        println!("unchanged");
    }
    Ok(())
}

/// Prints the running fleet's status.
pub async fn run_status(args: StatusArgs) -> Result<(), LocalError> {
    let (status, body) = call(args.admin, &args.token, "GET", "/status", None).await?;
    if status != 200 {
        return Err(refused(status, &body));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
    } else {
        print!("{}", render_status(&body));
    }
    Ok(())
}

/// Stops the running upgrade and returns traffic to the old revision.
pub async fn run_abort(args: AbortArgs) -> Result<(), LocalError> {
    let (status, body) = call(args.admin, &args.token, "POST", "/abort", None).await?;
    if status != 202 {
        return Err(refused(status, &body));
    }
    println!("aborting: traffic returns to the current revision; see `sluice status`");
    Ok(())
}

/// The human form of `GET /status`.
fn render_status(v: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet {} on {}: phase {}",
        s(&v["fleet"]),
        s(&v["listen"]),
        s(&v["phase"])
    );
    let _ = writeln!(
        out,
        "revisions: current {}, update {}",
        s(&v["currentRevision"]),
        s(&v["updateRevision"])
    );
    let _ = writeln!(
        out,
        "instances: {} live, {} ready, {} serving",
        n(&v["replicas"]),
        n(&v["readyReplicas"]),
        n(&v["servingReplicas"])
    );
    if let Some(conditions) = v["conditions"].as_array() {
        for c in conditions {
            let _ = writeln!(
                out,
                "{}={} {}: {}",
                s(&c["type"]),
                s(&c["status"]),
                s(&c["reason"]),
                s(&c["message"])
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<12} {:<6} {:<8} {:>11}  EVACUATION",
        "NAME", "REVISION", "READY", "SERVING", "CONNECTIONS"
    );
    for i in v["instances"].as_array().into_iter().flatten() {
        let evacuation = if i["failed"].as_bool() == Some(true) {
            "failed".to_owned()
        } else {
            i["evacuation"]["state"].as_str().unwrap_or("-").to_owned()
        };
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<6} {:<8} {:>11}  {evacuation}",
            s(&i["name"]),
            s(&i["revision"]),
            i["ready"].as_bool().unwrap_or(false),
            i["serving"].as_bool().unwrap_or(false),
            n(&i["connections"]),
        );
    }
    out
}
