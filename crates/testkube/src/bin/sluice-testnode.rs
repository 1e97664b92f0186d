//! `sluice-testnode`: runs a node double (and its service proxy) against the
//! cluster of a kubeconfig until SIGINT or SIGTERM, then cleans up.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_testkube::{NodeConfig, TestNode};

/// A Kubernetes node that runs pods as local processes, for tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Admin kubeconfig of the cluster (default: $SLUICE_KUBECONFIG).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Node's name (its network namespace is sluice-node-NAME).
    #[arg(long, default_value = "sluice-testnode")]
    name: String,
    /// Only run pods of this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// The pod network a.b.c.0 (a /24; the node is a.b.c.1).
    #[arg(long, default_value = "10.244.0.0")]
    pod_net: Ipv4Addr,
    /// Where container output goes (default: $TMPDIR/sluice-testnode/NAME).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Do not run the service proxy.
    #[arg(long)]
    no_service_proxy: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.pod_net.octets()[3] != 0 {
        anyhow::bail!(
            "--pod-net {}: must end in .0 (a /24 network such as 10.244.0.0)",
            args.pod_net
        );
    }
    let path = match args.kubeconfig {
        Some(p) => p,
        None => sluice_testkube::kubeconfig_from_env()?,
    };
    let client = sluice_testkube::client(&path).await?;
    let mut config = NodeConfig::new(&args.name, args.namespace.as_deref());
    config.pod_net = args.pod_net;
    config.service_proxy = !args.no_service_proxy;
    config.api_server = Some(sluice_testkube::api_server(&path).await?);
    if let Some(dir) = args.log_dir {
        config.log_dir = dir;
    }
    let node = TestNode::start(client, config)
        .await
        .context("cannot start the node")?;
    eprintln!(
        "sluice-testnode: node {} is up; pods and ClusterIPs are reachable in `ip netns exec {} …`; logs in {}",
        node.name(),
        node.netns(),
        node.log_dir().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.shutdown().await.context("shutdown")?;
    Ok(())
}
