//! `sluice plan`: estimates printed before anyone upgrades.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_core::plan::{self, BlueGreenPlan, DrainPlan};
use sluice_core::rolling::{self, Budget, Step};
use sluice_core::spec::{
    EvacuationStrategy, IntOrPercent, InvalidField, RollingUpdate, check_range,
};

/// What to estimate.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Each blue node's evacuation phases and the total time of a blue-green upgrade.
    BlueGreen(BlueGreenArgs),
    /// The step-by-step scale-ups and scale-downs of a rolling update.
    Rolling(RollingArgs),
    /// The preStop wait and terminationGracePeriodSeconds a pod needs.
    Drain(DrainArgs),
}

/// Flags of `sluice plan blue-green`.
#[derive(Debug, Args)]
pub struct BlueGreenArgs {
    /// Instances in the blue (old) set.
    #[arg(long, allow_negative_numbers = true)]
    replicas: i64,
    /// Connections held by the whole blue set (spread evenly over its instances).
    #[arg(long, allow_negative_numbers = true)]
    connections: i64,
    /// Persistent sessions held by the whole blue set.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    sessions: i64,
    /// Connections evicted per second (connEvictRate).
    #[arg(long, default_value_t = sluice_core::spec::DEFAULT_CONN_EVICT_RATE.into(), allow_negative_numbers = true)]
    conn_evict_rate: i64,
    /// Sessions evicted per second (sessEvictRate).
    #[arg(long, default_value_t = sluice_core::spec::DEFAULT_SESS_EVICT_RATE.into(), allow_negative_numbers = true)]
    sess_evict_rate: i64,
    /// Seconds to wait for session takeover (waitTakeover).
    #[arg(long, default_value_t = sluice_core::spec::DEFAULT_WAIT_TAKEOVER.into(), allow_negative_numbers = true)]
    wait_takeover: i64,
    /// Seconds an evacuating node keeps accepting first (waitHealthCheck).
    #[arg(long, default_value_t = sluice_core::spec::DEFAULT_WAIT_HEALTH_CHECK.into(), allow_negative_numbers = true)]
    wait_health_check: i64,
    /// Seconds between the green set serving and the first evacuation (initialDelaySeconds).
    #[arg(long, default_value_t = sluice_core::spec::DEFAULT_INITIAL_DELAY_SECONDS.into(), allow_negative_numbers = true)]
    initial_delay: i64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `sluice plan rolling`.
#[derive(Debug, Args)]
pub struct RollingArgs {
    /// Desired instance count.
    #[arg(long, allow_negative_numbers = true)]
    replicas: i64,
    /// Instances allowed above replicas: a count (3) or a percentage (25%), rounds up.
    #[arg(long, default_value = "25%", allow_hyphen_values = true)]
    max_surge: IntOrPercent,
    /// Instances allowed below replicas: a count or a percentage, rounds down.
    #[arg(long, default_value = "25%", allow_hyphen_values = true)]
    max_unavailable: IntOrPercent,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `sluice plan drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Seconds each cache between clients and the pod takes to forget it, comma
    /// separated (e.g. Eureka, Ribbon and the client: 30,30,30).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    propagation: Vec<i64>,
    /// Seconds the longest request may take to finish.
    #[arg(long, allow_negative_numbers = true)]
    request_time: i64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs a plan subcommand and returns what to print.
pub fn run(cmd: PlanCommand) -> Result<String> {
    match cmd {
        PlanCommand::BlueGreen(a) => blue_green(&a),
        PlanCommand::Rolling(a) => rolling(&a),
        PlanCommand::Drain(a) => drain(&a),
    }
}

/// Narrows a flag's value to i32, naming the flag when it does not fit.
fn small(flag: &str, value: i64) -> Result<i32> {
    i32::try_from(value).map_err(|_| anyhow::anyhow!("{flag}: {value} is out of range"))
}

/// Rewrites a spec error so it names the command-line flag the user typed.
fn flag_error(e: InvalidField) -> anyhow::Error {
    let flag = match e.field.rsplit('.').next().unwrap_or(&e.field) {
        "connEvictRate" => "--conn-evict-rate",
        "sessEvictRate" => "--sess-evict-rate",
        "waitTakeover" => "--wait-takeover",
        "waitHealthCheck" => "--wait-health-check",
        "initialDelaySeconds" => "--initial-delay",
        "maxSurge" => "--max-surge",
        "maxUnavailable" => "--max-unavailable",
        "propagation" => "--propagation",
        _ => "--replicas",
    };
    anyhow::anyhow!("{flag} ({}): {}", e.field, e.problem)
}

fn to_json(value: &impl Serialize) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

fn blue_green(a: &BlueGreenArgs) -> Result<String> {
    check_range("replicas", a.replicas, 1, 100_000).map_err(flag_error)?;
    if a.connections < 0 {
        bail!("--connections: must be at least 0 (got {})", a.connections);
    }
    if a.sessions < 0 {
        bail!("--sessions: must be at least 0 (got {})", a.sessions);
    }
    let evacuation = EvacuationStrategy {
        conn_evict_rate: small("--conn-evict-rate", a.conn_evict_rate)?,
        sess_evict_rate: small("--sess-evict-rate", a.sess_evict_rate)?,
        wait_takeover: small("--wait-takeover", a.wait_takeover)?,
        wait_health_check: small("--wait-health-check", a.wait_health_check)?,
    };
    let p = plan::blue_green(
        small("--replicas", a.replicas)?,
        a.connections.unsigned_abs(),
        a.sessions.unsigned_abs(),
        small("--initial-delay", a.initial_delay)?,
        &evacuation,
    )
    .map_err(flag_error)?;
    if a.json {
        to_json(&p)
    } else {
        Ok(blue_green_table(&p))
    }
}

fn blue_green_table(p: &BlueGreenPlan) -> String {
    let mut out = format!(
        "initial delay {:>10.1} s   (green ready and serving, before the first evacuation)\n\n",
        p.initial_delay_seconds
    );
    let _ = writeln!(
        out,
        "{:<5} {:>11} {:>9} {:>13} {:>15} {:>16} {:>17} {:>9}",
        "node",
        "connections",
        "sessions",
        "health check",
        "evicting conns",
        "waiting takeover",
        "evicting sessions",
        "total"
    );
    for n in &p.nodes {
        let s = |i: usize| n.phases.get(i).map_or(0.0, |ph| ph.seconds);
        let _ = writeln!(
            out,
            "{:<5} {:>11} {:>9} {:>11.1} s {:>13.1} s {:>14.1} s {:>15.1} s {:>7.1} s",
            n.node,
            n.connections,
            n.sessions,
            s(0),
            s(1),
            s(2),
            s(3),
            n.seconds
        );
    }
    let _ = writeln!(
        out,
        "\ntotal {:.1} s ({:.1} min)",
        p.total_seconds,
        p.total_seconds / 60.0
    );
    out
}

/// `plan rolling --json`: the budget and the steps.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RollingPlan {
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    max_pods: i32,
    min_available: i32,
    steps: Vec<Step>,
}

fn rolling(a: &RollingArgs) -> Result<String> {
    check_range("replicas", a.replicas, 1, 100_000).map_err(flag_error)?;
    let update = RollingUpdate {
        max_surge: a.max_surge,
        max_unavailable: a.max_unavailable,
    };
    update.validate().map_err(flag_error)?;
    let budget = Budget::new(small("--replicas", a.replicas)?, &update);
    let p = RollingPlan {
        replicas: budget.replicas,
        max_surge: budget.max_surge,
        max_unavailable: budget.max_unavailable,
        max_pods: budget.max_pods(),
        min_available: budget.min_available(),
        steps: rolling::steps(&budget),
    };
    if a.json {
        return to_json(&p);
    }
    let mut out = format!(
        "replicas {}: maxSurge {} → {}, maxUnavailable {} → {}; at most {} instances, at least {} available\n\n",
        p.replicas,
        a.max_surge,
        p.max_surge,
        a.max_unavailable,
        p.max_unavailable,
        p.max_pods,
        p.min_available
    );
    let _ = writeln!(
        out,
        "{:<6} {:>9} {:>11} {:>5} {:>5} {:>6} {:>10}",
        "round", "scale up", "scale down", "old", "new", "total", "available"
    );
    for s in &p.steps {
        let _ = writeln!(
            out,
            "{:<6} {:>9} {:>11} {:>5} {:>5} {:>6} {:>10}",
            s.round,
            format!("+{}", s.scale_up),
            format!("-{}", s.scale_down),
            s.old,
            s.new,
            s.total,
            s.available
        );
    }
    out.push_str(
        "\n(new instances become ready between rounds; available counts them once they are)\n",
    );
    Ok(out)
}

fn drain(a: &DrainArgs) -> Result<String> {
    let seconds = |flag: &str, v: i64| {
        u32::try_from(v)
            .map_err(|_| anyhow::anyhow!("{flag}: must be a whole number of seconds ≥ 0 (got {v})"))
    };
    let propagation = a
        .propagation
        .iter()
        .map(|v| seconds("--propagation", *v))
        .collect::<Result<Vec<_>>>()?;
    let p: DrainPlan = plan::drain(&propagation, seconds("--request-time", a.request_time)?)
        .map_err(flag_error)?;
    if a.json {
        return to_json(&p);
    }
    let sum = propagation
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" + ");
    Ok(format!(
        "preStop: sleep {} s          ({sum}: until every cache has forgotten the pod)\n\
         terminationGracePeriodSeconds: {}   (preStop + {} s for the last request)\n",
        p.pre_stop_seconds, p.termination_grace_period_seconds, a.request_time
    ))
}
