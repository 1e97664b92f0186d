//! Probes and lifecycle hooks, as the kubelet runs them: `tcpSocket` (connect),
//! `httpGet` (a status from 200 to 399), `exec` (exit status 0, run inside the
//! pod's network namespace with the container's environment), and preStop's
//! `sleep`. TCP and HTTP go to the pod IP from the node's network namespace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

/// Where and how a probe or hook runs: the pod's namespaces and address, the
/// container's ports and environment.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod IP.
    pub pod_ip: Ipv4Addr,
    /// The pod's network namespace.
    pub pod_netns: String,
    /// A runtime inside the node's network namespace (for TCP and HTTP).
    pub node_net: Handle,
    /// The container's environment (for `exec`).
    pub env: BTreeMap<String, String>,
    /// The container (for named ports).
    pub container: Container,
}

/// One probe action, resolved from a `Probe` or a `LifecycleHandler`.
#[derive(Debug, Clone)]
enum Action {
    Tcp(TCPSocketAction),
    Http(HTTPGetAction),
    Exec(ExecAction),
    Sleep(Duration),
}

/// Runs `probe` once; `Err` says why it failed.
pub async fn run_probe(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let action = if let Some(t) = &probe.tcp_socket {
        Action::Tcp(t.clone())
    } else if let Some(h) = &probe.http_get {
        Action::Http(h.clone())
    } else if let Some(e) = &probe.exec {
        Action::Exec(e.clone())
    } else {
        return Err("the test node runs tcpSocket, httpGet and exec probes only".into());
    };
    run(action, target, timeout).await
}

/// Runs a lifecycle hook (preStop) once, for at most `budget`.
pub async fn run_hook(
    hook: &LifecycleHandler,
    target: &Target,
    budget: Duration,
) -> Result<(), String> {
    let action = if let Some(s) = &hook.sleep {
        Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64))
    } else if let Some(h) = &hook.http_get {
        Action::Http(h.clone())
    } else if let Some(e) = &hook.exec {
        Action::Exec(e.clone())
    } else if let Some(t) = &hook.tcp_socket {
        Action::Tcp(t.clone())
    } else {
        return Err("the hook has no action".into());
    };
    run(action, target, budget).await
}

async fn run(action: Action, target: &Target, timeout: Duration) -> Result<(), String> {
    match action {
        Action::Sleep(d) => {
            tokio::time::sleep(d.min(timeout)).await;
            Ok(())
        }
        Action::Exec(e) => exec(&e, target, timeout).await,
        Action::Tcp(t) => {
            let addr = address(target, t.host.as_deref(), &t.port)?;
            net(target, timeout, async move {
                TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("tcpSocket {addr}: {e}"))
            })
            .await
        }
        Action::Http(h) => {
            let addr = address(target, h.host.as_deref(), &h.port)?;
            if h.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return Err("httpGet: only scheme HTTP is supported by the test node".into());
            }
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let headers: String = h
                .http_headers
                .iter()
                .flatten()
                .map(|hd| format!("{}: {}\r\n", hd.name, hd.value))
                .collect();
            net(target, timeout, async move {
                http_get(addr, &path, &headers).await
            })
            .await
        }
    }
}

/// Runs `fut` inside the node's network namespace with a deadline.
async fn net<F>(target: &Target, timeout: Duration, fut: F) -> Result<(), String>
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let task = target.node_net.spawn(tokio::time::timeout(timeout, fut));
    match task.await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(format!("no answer within {timeout:?}")),
        Err(e) => Err(format!("probe task: {e}")),
    }
}

async fn http_get(addr: SocketAddr, path: &str, headers: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("httpGet {addr}{path}: {e}");
    let mut s = TcpStream::connect(addr).await.map_err(fail)?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/sluice-testnode\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.map_err(fail)?;
    let mut buf = Vec::with_capacity(256);
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        if s.read_buf(&mut buf).await.map_err(fail)? == 0 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("httpGet {addr}{path}: not an HTTP answer: {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("httpGet {addr}{path}: status {code}"))
    }
}

async fn exec(e: &ExecAction, target: &Target, timeout: Duration) -> Result<(), String> {
    let words = e.command.clone().unwrap_or_default();
    if words.is_empty() {
        return Err("exec: command is empty".into());
    }
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &target.pod_netns])
        .args(&words)
        .envs(&target.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| format!("exec {words:?}: no exit within {timeout:?}"))?
        .map_err(|e| format!("exec {words:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exec {words:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The address a probe's `host` and `port` name (a number or a container port name).
fn address(target: &Target, host: Option<&str>, port: &IntOrString) -> Result<SocketAddr, String> {
    let ip = match host.filter(|h| !h.is_empty()) {
        None => target.pod_ip,
        Some(h) => h
            .parse()
            .map_err(|_| format!("probe host {h:?}: the test node needs an IPv4 address"))?,
    };
    let port = match port {
        IntOrString::Int(p) => {
            u16::try_from(*p).map_err(|_| format!("probe port {p} is out of range"))?
        }
        IntOrString::String(name) => target
            .container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("probe port {name:?}: no container port has that name"))?,
    };
    Ok(SocketAddr::from((ip, port)))
}
