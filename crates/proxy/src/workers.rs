//! The data path's threads: one current-thread runtime per worker (by default
//! one per core), each running the connections it is handed from the first
//! byte to the close. A connection's wake-ups never cross threads and no task
//! is stolen, which is how HAProxy and Envoy run; the admin API and the
//! evacuations stay on the main runtime.
//!
//! Each worker accepts on its own listening socket of the `--listen` group
//! (see [`bind_group`]): the kernel spreads new connections over the group,
//! so accepting costs no thread hop and no registration with another event
//! loop. A worker keeps what it accepts unless another worker has fewer
//! connections by more than a slack; then it hands the
//! connection to that one, which keeps the workers even when connections end
//! unevenly. Connections handed over by a supervisor (`--accept-unix`) go to
//! the worker with the fewest.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::{BACKLOG, Shared};

/// The worker threads; dropping this ends them (and their connections).
#[derive(Debug)]
pub struct Workers {
    /// Each worker's inbox of connections accepted elsewhere, as std sockets:
    /// a socket is registered with the runtime that polls it. Only this holds
    /// them strongly, so that dropping it closes the inboxes and ends the
    /// threads.
    inboxes: Arc<[mpsc::UnboundedSender<StdTcpStream>]>,
    /// Each worker's connections (handed over or accepted, not yet closed).
    loads: Arc<[Arc<AtomicUsize>]>,
}

/// One connection counted against its worker's load, until dropped.
#[derive(Debug)]
pub struct Load(Arc<AtomicUsize>);

impl Load {
    /// Counts one more connection on `load`.
    fn count(load: &Arc<AtomicUsize>) -> Load {
        load.fetch_add(1, Ordering::Relaxed);
        Load(Arc::clone(load))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a worker's accept loop needs to place a connection it accepted.
struct Placement {
    /// The accepting worker's index.
    me: usize,
    loads: Arc<[Arc<AtomicUsize>]>,
    /// Weak: the accept loops must not keep the inboxes open.
    inboxes: Weak<[mpsc::UnboundedSender<StdTcpStream>]>,
}

impl Placement {
    /// The connection back if this worker is to serve it; otherwise it is
    /// handed to the worker with the fewest (dropped if the workers are
    /// shutting down) and `None` comes back.
    fn keep_or_hand_over(&self, client: TcpStream) -> Option<TcpStream> {
        let target = serving_worker(&snapshot(&self.loads), self.me);
        if target == self.me {
            return Some(client);
        }
        let Some(inboxes) = self.inboxes.upgrade() else {
            return None; // shutting down
        };
        match client.into_std() {
            Ok(client) => send(&inboxes[target], &self.loads[target], client),
            Err(e) => tracing::debug!(error = %e, "cannot hand an accepted connection over"),
        }
        None
    }
}

/// The worker that serves a connection accepted by worker `me`, given each
/// worker's connections: `me`, unless another has fewer by more than a slack
/// of 2 plus 1/64 of the fewest (then the one with the fewest). The slack
/// keeps the hand-over (a wake-up of another thread and two more syscalls)
/// for real imbalance: the kernel's spread of connections over the listening
/// sockets is even on average, not connection by connection, and under
/// connection churn the loads drift apart by one or two and back all the
/// time. Beyond it the workers stay within 2 % of each other, which matters
/// more: a long-lived connection stays where it was put.
fn serving_worker(loads: &[usize], me: usize) -> usize {
    let Some((least_index, &least)) = loads.iter().enumerate().min_by_key(|(_, l)| **l) else {
        return me;
    };
    let slack = 2 + least / 64;
    match loads.get(me) {
        Some(&mine) if mine <= least + slack => me,
        _ => least_index,
    }
}

/// Each worker's connections, now.
fn snapshot(loads: &[Arc<AtomicUsize>]) -> Vec<usize> {
    loads.iter().map(|l| l.load(Ordering::Relaxed)).collect()
}

/// Queues `socket` in a worker's inbox, counted against its load.
fn send(
    inbox: &mpsc::UnboundedSender<StdTcpStream>,
    load: &Arc<AtomicUsize>,
    socket: StdTcpStream,
) {
    load.fetch_add(1, Ordering::Relaxed);
    if inbox.send(socket).is_err() {
        load.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds `count` listening sockets on `addr`, one per worker, in one
/// `SO_REUSEPORT` group (the kernel spreads new connections over them). A
/// plain socket is bound first, so that an address another process listens
/// on is refused even if that process is in a group of its own (another
/// `sluice proxy` started on the same port would otherwise share it
/// silently). Must run on a tokio runtime (the sockets pass through it).
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<StdTcpListener>> {
    let socket = || {
        let s = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        s.set_reuseaddr(true)?;
        Ok::<_, io::Error>(s)
    };
    if addr.port() != 0 {
        socket()?.bind(addr)?;
    }
    let mut listeners: Vec<StdTcpListener> = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let s = socket()?;
        s.set_reuseport(true)?;
        // After the first, the port it got (`addr` may say port 0).
        s.bind(
            listeners
                .first()
                .map_or(Ok(addr), StdTcpListener::local_addr)?,
        )?;
        listeners.push(s.listen(BACKLOG)?.into_std()?);
    }
    Ok(listeners)
}

impl Workers {
    /// Starts `count` worker threads, each serving the connections it is
    /// handed or accepts with `serve` (which holds the [`Load`] until the
    /// connection ends). `listeners` (from [`bind_group`]; empty without
    /// `--listen`) go one to each worker.
    pub fn start<F, Fut>(
        count: usize,
        shared: &Arc<Shared>,
        listeners: Vec<StdTcpListener>,
        serve: F,
    ) -> io::Result<Workers>
    where
        F: Fn(Arc<Shared>, TcpStream, Load) -> Fut + Send + Copy + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let count = count.max(listeners.len());
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let inboxes: Arc<[_]> = inboxes.into();
        let loads: Arc<[_]> = (0..count).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let mut listeners = listeners.into_iter();
        for (me, mut rx) in receivers.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let shared = Arc::clone(shared);
            let load = Arc::clone(&loads[me]);
            let listener = listeners.next();
            let placement = Placement {
                me,
                loads: Arc::clone(&loads),
                inboxes: Arc::downgrade(&inboxes),
            };
            std::thread::Builder::new()
                .name(format!("sluice-worker-{me}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        if let Some(listener) = listener {
                            accept_on(listener, &shared, &load, placement, serve);
                        }
                        while let Some(socket) = rx.recv().await {
                            match TcpStream::from_std(socket) {
                                Ok(client) => {
                                    let task =
                                        serve(Arc::clone(&shared), client, Load(Arc::clone(&load)));
                                    tokio::spawn(task);
                                }
                                Err(e) => {
                                    load.fetch_sub(1, Ordering::Relaxed);
                                    tracing::debug!(error = %e, "cannot register a connection");
                                }
                            }
                        }
                    });
                })?;
        }
        Ok(Workers { inboxes, loads })
    }

    /// Hands a connection to the worker with the fewest.
    pub fn dispatch(&self, socket: StdTcpStream) {
        let loads = snapshot(&self.loads);
        let Some(target) = (0..loads.len()).min_by_key(|&i| loads[i]) else {
            return;
        };
        send(&self.inboxes[target], &self.loads[target], socket);
    }
}

/// Starts this worker's accept loop on `listener`: what it keeps is served
/// here, the rest handed over.
fn accept_on<F, Fut>(
    listener: StdTcpListener,
    shared: &Arc<Shared>,
    load: &Arc<AtomicUsize>,
    placement: Placement,
    serve: F,
) where
    F: Fn(Arc<Shared>, TcpStream, Load) -> Fut + Send + Copy + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            // Dropped, so closed: the kernel spreads over the other sockets.
            tracing::error!(error = %e, "a worker cannot poll its listening socket; it takes no new connections");
            return;
        }
    };
    let (shared, load) = (Arc::clone(shared), Arc::clone(load));
    tokio::spawn(crate::conn::serve(
        listener,
        Arc::clone(&shared),
        move |client| {
            if let Some(client) = placement.keep_or_hand_over(client) {
                tokio::spawn(serve(Arc::clone(&shared), client, Load::count(&load)));
            }
        },
    ));
}

#[cfg(test)]
impl Load {
    /// A connection counted against a worker of its own, for tests.
    pub(crate) fn counted() -> Load {
        Load(Arc::new(AtomicUsize::new(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::serving_worker;

    #[test]
    fn the_accepting_worker_keeps_a_connection_within_the_slack() {
        assert_eq!(serving_worker(&[0, 0], 1), 1);
        assert_eq!(serving_worker(&[3, 5], 1), 1, "2 more than the fewest");
        assert_eq!(
            serving_worker(&[320, 327], 1),
            1,
            "2 + 320/64 = 7 more allowed"
        );
    }

    #[test]
    fn an_uneven_worker_hands_over_to_the_one_with_the_fewest() {
        assert_eq!(serving_worker(&[3, 6], 1), 0);
        assert_eq!(serving_worker(&[7, 2, 9], 2), 1);
        assert_eq!(
            serving_worker(&[320, 328], 1),
            0,
            "8 more than 320 is past the slack"
        );
    }

    #[test]
    fn a_lone_worker_keeps_everything() {
        assert_eq!(serving_worker(&[1000], 0), 0);
    }
}
