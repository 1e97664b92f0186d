//! The data path's threads: one current-thread runtime per worker (by default
//! one per core), each running the connections it is handed from the first
//! byte to the close. A connection's wake-ups never cross threads and no task
//! is stolen, which is how HAProxy and Envoy run; the accept loop, the admin
//! API and the evacuations stay on the main runtime. New connections go to
//! the worker with the fewest.

use std::io;
use std::net::TcpStream as StdTcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::Shared;

/// The worker threads; dropping this ends them (and their connections).
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    /// Accepted connections, as std sockets: a socket is registered with the
    /// runtime that polls it.
    inbox: mpsc::UnboundedSender<StdTcpStream>,
    /// Its connections (handed over and not yet closed).
    load: Arc<AtomicUsize>,
}

/// One connection counted against its worker's load, until dropped.
#[derive(Debug)]
pub struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads, each serving the connections it is
    /// handed with `serve` (which holds the [`Load`] until the connection ends).
    pub fn start<F, Fut>(count: usize, shared: &Arc<Shared>, serve: F) -> io::Result<Workers>
    where
        F: Fn(Arc<Shared>, TcpStream, Load) -> Fut + Send + Copy + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let (inbox, mut rx) = mpsc::unbounded_channel::<StdTcpStream>();
            let load = Arc::new(AtomicUsize::new(0));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (shared, task_load) = (Arc::clone(shared), Arc::clone(&load));
            std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some(socket) = rx.recv().await {
                            let load = Load(Arc::clone(&task_load));
                            match TcpStream::from_std(socket) {
                                Ok(client) => {
                                    tokio::spawn(serve(Arc::clone(&shared), client, load));
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "cannot register a connection");
                                }
                            }
                        }
                    });
                })?;
            workers.push(Worker { inbox, load });
        }
        Ok(Workers { workers })
    }

    /// Hands a connection to the worker with the fewest.
    pub fn dispatch(&self, socket: StdTcpStream) {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            return;
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        if worker.inbox.send(socket).is_err() {
            worker.load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
#[cfg(test)]
impl Load {
    /// A connection counted against a worker of its own, for tests.
    pub(crate) fn counted() -> Load {
        Load(Arc::new(AtomicUsize::new(1)))
    }
}
