//! One process's share of the clients: start them on schedule, let them
//! run until told to stop, and fold their records into an [`Aggregate`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{self, Ctx};
use crate::config::ConnConfig;
use crate::procinfo;
use crate::recorder::{Aggregate, Counters, SharedSamples};

/// Which clients a process plays: indices `index, index + of, …` below
/// `count`, so client numbers and the connection schedule are the same
/// whether a run uses one process or many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slice {
    /// This process's number, from 0.
    pub index: u32,
    /// How many processes share the run.
    pub of: u32,
}

impl Slice {
    /// The whole run in one process.
    pub const ALL: Slice = Slice { index: 0, of: 1 };

    /// The client indices of this slice.
    pub fn clients(self, count: u32) -> impl Iterator<Item = u32> {
        (self.index..count).step_by(self.of.max(1) as usize)
    }
}

/// Tells the clients to stop and returns how many were connected at that
/// moment (read before they start closing).
pub(crate) fn stop(counters: &Counters, tx: &watch::Sender<bool>) -> u64 {
    let connected = counters.connected.load(Ordering::Relaxed);
    let _ = tx.send(true);
    connected
}

/// Runs `slice` of the clients against `target` until `stop` turns true;
/// `connected_at_stop` is filled in by whoever stops it (see [`stop`]).
pub(crate) async fn run_slice(
    cfg: Arc<ConnConfig>,
    target: SocketAddr,
    slice: Slice,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Aggregate {
    let rss_baseline = procinfo::rss_bytes();
    let ctx = Arc::new(Ctx {
        slice_len: slice.clients(cfg.count).count() as u64,
        cfg: cfg.clone(),
        target,
        counters,
        samples: SharedSamples::default(),
        connecting: Semaphore::new(cfg.max_connecting as usize),
        stop: stop.clone(),
        first_attempt: OnceLock::new(),
        all_connected: OnceLock::new(),
    });
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for index in slice.clients(cfg.count) {
        let at = start + cfg.first_attempt_at(index);
        if at > Instant::now() {
            tokio::select! {
                biased;
                _ = crate::stopped(&mut stop) => break,
                _ = tokio::time::sleep_until(at) => {}
            }
        } else if *stop.borrow() {
            break;
        }
        tasks.spawn(client::run(ctx.clone(), index));
        if tasks.len() % 256 == 0 {
            // Let the spawned clients run between bursts when the schedule
            // is behind (interval 0).
            tokio::task::yield_now().await;
        }
    }
    let _ = crate::stopped(&mut stop).await;
    let mut agg = Aggregate {
        processes: 1,
        rss_baseline_bytes: rss_baseline,
        ..Default::default()
    };
    while let Some(done) = tasks.join_next().await {
        if let Ok(record) = done {
            agg.add_client(&record);
        }
    }
    agg.take_samples(&ctx.samples);
    agg.ramp_secs = match (ctx.first_attempt.get(), ctx.all_connected.get()) {
        (Some(first), Some(all)) => Some(all.duration_since(*first).as_secs_f64()),
        _ => None,
    };
    agg.rss_peak_bytes = procinfo::rss_peak_bytes();
    agg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_client_once() {
        let mut all: Vec<u32> = (0..3)
            .flat_map(|i| Slice { index: i, of: 3 }.clients(10))
            .collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(Slice::ALL.clients(4).count(), 4);
    }
}
