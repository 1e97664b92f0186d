//! The front: the one TCP listener clients connect to. It holds no connection:
//! each accepted socket is handed, as a file descriptor over a Unix socket
//! (`SCM_RIGHTS`, `sluice_proxy::handoff`), to the evacuator of the serving, ready
//! instance with the fewest connections, and the front's copy is closed at once.
//! So the front needs a handful of descriptors whatever the number of clients,
//! and each evacuator holds only its own instance's connections (two descriptors
//! each), like kube-proxy hands connections to pods without holding them.
//!
//! The connection counts come from the runner, which polls every evacuator each
//! tick (≤ 200 ms); the front adds the sockets it handed to an instance since the
//! poll started, so a burst of accepts between two polls still spreads evenly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_core::balance::{Candidate, least_loaded};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::watch;

/// How long a hand-off (connect to the evacuator's socket, send) may take before
/// the front tries another instance.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One instance as the front sees it.
#[derive(Debug, Clone)]
struct Target {
    socket: PathBuf,
    eligible: bool,
    /// On the revision the fleet converges to: chosen before any other instance.
    preferred: bool,
    /// Sockets handed to it since sluice started.
    handed: u64,
    /// Connections its evacuator reported at the last poll.
    polled: u64,
    /// `handed` when that poll started.
    mark: u64,
}

impl Target {
    fn estimate(&self) -> u64 {
        self.polled + self.handed.saturating_sub(self.mark)
    }
}

/// The table the runner writes and the accept loop reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table(Arc<Mutex<BTreeMap<String, Target>>>);

impl Table {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Target>> {
        sluice_core::sync::lock(&self.0)
    }

    /// Adds an instance (not eligible until told).
    pub(crate) fn insert(&self, name: &str, socket: PathBuf) {
        self.lock().insert(
            name.to_owned(),
            Target {
                socket,
                eligible: false,
                preferred: false,
                handed: 0,
                polled: 0,
                mark: 0,
            },
        );
    }

    /// Forgets an instance.
    pub(crate) fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Whether new connections may go to `name` (ready, serving, not failed), and
    /// whether it is on the engine's target revision (preferred over the others).
    pub(crate) fn set_eligible(&self, name: &str, eligible: bool, preferred: bool) {
        if let Some(t) = self.lock().get_mut(name) {
            t.eligible = eligible;
            t.preferred = preferred;
        }
    }

    /// The hand-off counters, taken just before a poll.
    pub(crate) fn marks(&self) -> HashMap<String, u64> {
        self.lock()
            .iter()
            .map(|(n, t)| (n.clone(), t.handed))
            .collect()
    }

    /// Records a poll's result: `connections` counted after `mark` hand-offs.
    pub(crate) fn polled(&self, name: &str, connections: u64, mark: u64) {
        if let Some(t) = self.lock().get_mut(name) {
            t.polled = connections;
            t.mark = mark;
        }
    }

    /// Picks an eligible instance not in `tried` by sluice's one balancing rule
    /// ([`least_loaded`]: the target revision's first, then the fewest
    /// connections, estimated), and counts a hand-off to it.
    fn pick(&self, tried: &HashSet<String>) -> Option<(String, PathBuf)> {
        let mut table = self.lock();
        let mut eligible: Vec<(&String, &mut Target)> = table
            .iter_mut()
            .filter(|(n, t)| t.eligible && !tried.contains(*n))
            .collect();
        let chosen = least_loaded(eligible.iter().map(|(_, t)| Candidate {
            healthy: true,
            preferred: t.preferred,
            connections: t.estimate(),
        }))?;
        let (name, target) = &mut eligible[chosen];
        target.handed += 1;
        Some(((*name).clone(), target.socket.clone()))
    }

    /// Takes back a hand-off that failed.
    fn undo(&self, name: &str) {
        if let Some(t) = self.lock().get_mut(name) {
            t.handed = t.handed.saturating_sub(1).max(t.mark);
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

/// Accepts until `stop` turns true; then drops the listener (the port closes).
pub(crate) async fn run(listener: TcpListener, table: Table, mut stop: watch::Receiver<bool>) {
    let mut links: HashMap<String, UnixStream> = HashMap::new();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "front: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        links.retain(|name, _| table.contains(name));
        let mut tried = HashSet::new();
        loop {
            let Some((name, socket)) = table.pick(&tried) else {
                // Nobody serves (startup, or every instance failed): the client
                // sees a close and retries.
                if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!("front: no ready serving instance; closing a new connection");
                    last_refusal_log = Some(Instant::now());
                }
                break;
            };
            match hand(&mut links, &name, &socket, &client).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(instance = %name, error = %e, "front: hand-off failed; trying another instance");
                    links.remove(&name);
                    table.undo(&name);
                    tried.insert(name);
                }
            }
        }
        // Closes the front's copy: the evacuator holds the connection now.
        drop(client);
    }
}

/// Hands `client` to the evacuator listening on `socket`, connecting first if
/// needed.
async fn hand(
    links: &mut HashMap<String, UnixStream>,
    name: &str,
    socket: &PathBuf,
    client: &tokio::net::TcpStream,
) -> std::io::Result<()> {
    let timed = |e: tokio::time::error::Elapsed| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string())
    };
    if !links.contains_key(name) {
        let link = tokio::time::timeout(HANDOFF_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(timed)??;
        links.insert(name.to_owned(), link);
    }
    let link = links
        .get(name)
        .ok_or_else(|| std::io::Error::other("link vanished"))?;
    tokio::time::timeout(
        HANDOFF_TIMEOUT,
        sluice_proxy::handoff::send(link, client.as_fd()),
    )
    .await
    .map_err(timed)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_least_connected_counting_handoffs_since_the_poll() {
        let t = Table::default();
        for n in ["a", "b", "c"] {
            t.insert(n, PathBuf::from(n));
            t.set_eligible(n, true, true);
        }
        t.set_eligible("c", false, true);
        let none = HashSet::new();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(t.pick(&none).unwrap().0);
        }
        assert_eq!(got, ["a", "b", "a", "b"]);
        // A poll that started after the first two hand-offs to a: a has 5 now.
        t.polled("a", 5, 1);
        assert_eq!(t.pick(&none).unwrap().0, "b");
        assert_eq!(t.lock()["a"].estimate(), 6);
        let tried: HashSet<String> = ["b".to_owned()].into();
        assert_eq!(t.pick(&tried).unwrap().0, "a");
        t.remove("a");
        t.remove("b");
        assert!(t.pick(&none).is_none());
    }

    #[test]
    fn prefers_the_target_revision_even_when_busier() {
        let t = Table::default();
        for n in ["old", "new"] {
            t.insert(n, PathBuf::from(n));
        }
        t.set_eligible("old", true, false);
        t.set_eligible("new", true, true);
        t.polled("new", 500, 0);
        let none = HashSet::new();
        assert_eq!(t.pick(&none).unwrap().0, "new");
        let tried: HashSet<String> = ["new".to_owned()].into();
        assert_eq!(
            t.pick(&tried).unwrap().0,
            "old",
            "old instances still serve as a fallback"
        );
    }
}
