//! Spreading a run over worker processes.
//!
//! A process may hold only so many open files (20,000 on this project's
//! machines, a hard limit), so past that many clients the run starts
//! `sluice bench worker` processes (the same binary), gives each a
//! [`Slice`] of the clients on stdin, reads their live counts and final
//! [`Aggregate`] as JSON lines on stdout, and stops them by closing stdin.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::BenchError;
use crate::config::ConnConfig;
use crate::fleet::{self, Slice};
use crate::procinfo;
use crate::recorder::{Aggregate, Counters, Snapshot};

/// File descriptors a process keeps for itself besides its clients'.
const FD_HEADROOM: u64 = 1000;

/// How many clients one process may hold under its open-files limit.
pub fn clients_per_process() -> u64 {
    procinfo::open_files_limit()
        .unwrap_or(1024)
        .saturating_sub(FD_HEADROOM)
        .max(100)
}

/// The number of processes `count` clients need.
pub fn auto_workers(count: u32) -> u32 {
    u64::from(count).div_ceil(clients_per_process()).max(1) as u32
}

/// What the parent sends a worker: the run and its share of it.
#[derive(Debug, Serialize, Deserialize)]
struct Assignment {
    config: ConnConfig,
    slice: Slice,
}

/// What a worker sends its parent, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Report {
    /// Live counts, every 100 ms.
    Progress(Snapshot),
    /// The final aggregate, after the stop.
    Done(Box<Aggregate>),
    /// The worker could not run.
    Failed(String),
}

/// A running worker process, seen from the parent.
pub(crate) struct Worker {
    /// Its latest live counts.
    pub counters: Arc<Counters>,
    stdin: Option<ChildStdin>,
    done: JoinHandle<Result<Aggregate, BenchError>>,
    _child: Child,
}

impl Worker {
    /// Starts worker `slice.index` running `cfg`; a worker that ends
    /// without its final record reports on `failed`.
    pub(crate) async fn spawn(
        exe: &PathBuf,
        cfg: &ConnConfig,
        slice: Slice,
        failed: mpsc::UnboundedSender<BenchError>,
    ) -> Result<Worker, BenchError> {
        let spawn_error =
            |e: std::io::Error| BenchError::Worker(format!("cannot start {}: {e}", exe.display()));
        let mut child = Command::new(exe)
            .args(["bench", "worker"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| BenchError::Worker("no stdin pipe".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Worker("no stdout pipe".into()))?;
        let mut line = serde_json::to_string(&Assignment {
            config: cfg.clone(),
            slice,
        })?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(spawn_error)?;
        let counters = Arc::new(Counters::default());
        let done = tokio::spawn(read_reports(slice.index, stdout, counters.clone(), failed));
        Ok(Worker {
            counters,
            stdin: Some(stdin),
            done,
            _child: child,
        })
    }

    /// Tells the worker to stop (closes its stdin).
    pub(crate) fn stop(&mut self) {
        self.stdin = None;
    }

    /// Waits for the worker's final record.
    pub(crate) async fn finish(mut self) -> Result<Aggregate, BenchError> {
        self.stop();
        self.done
            .await
            .map_err(|e| BenchError::Worker(format!("worker reader failed: {e}")))?
    }
}

async fn read_reports(
    index: u32,
    stdout: tokio::process::ChildStdout,
    counters: Arc<Counters>,
    failed: mpsc::UnboundedSender<BenchError>,
) -> Result<Aggregate, BenchError> {
    let mut lines = BufReader::new(stdout).lines();
    let result = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Report>(&line) {
                Ok(Report::Progress(s)) => counters.store(s),
                Ok(Report::Done(agg)) => return Ok(*agg),
                Ok(Report::Failed(why)) => {
                    break BenchError::Worker(format!("worker {index}: {why}"));
                }
                Err(e) => {
                    break BenchError::Worker(format!(
                        "worker {index} sent an unreadable line: {e}"
                    ));
                }
            },
            Ok(None) => {
                break BenchError::Worker(format!("worker {index} exited without its record"));
            }
            Err(e) => break BenchError::Worker(format!("reading worker {index}: {e}")),
        }
    };
    let _ = failed.send(BenchError::Worker(result.to_string()));
    Err(result)
}

/// The body of `sluice bench worker`: read the assignment, run the slice
/// until stdin closes, write the aggregate.
pub async fn worker_main() -> Result<(), BenchError> {
    // Ctrl-C on a terminal reaches the whole process group; the parent
    // decides when workers stop, so keep SIGINT from killing this one.
    let _sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let assignment: Assignment = match lines.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line)?,
        _ => return Err(BenchError::Worker("no assignment on stdin".into())),
    };
    let mut out = tokio::io::stdout();
    let target = match crate::runner::resolve(&assignment.config).await {
        Ok(t) => t,
        Err(e) => {
            send(&mut out, &Report::Failed(e.to_string())).await;
            return Err(e);
        }
    };
    let counters = Arc::new(Counters::default());
    let (tx, rx) = watch::channel(false);
    let slice = tokio::spawn(fleet::run_slice(
        Arc::new(assignment.config),
        target,
        assignment.slice,
        counters.clone(),
        rx,
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let connected_at_stop = loop {
        tokio::select! {
            line = lines.next_line() => {
                if !matches!(line, Ok(Some(_))) {
                    break fleet::stop(&counters, &tx);
                }
            }
            _ = tick.tick() => send(&mut out, &Report::Progress(counters.snapshot())).await,
        }
    };
    let mut agg = slice
        .await
        .map_err(|e| BenchError::Worker(format!("clients failed: {e}")))?;
    agg.connected_at_stop = connected_at_stop;
    send(&mut out, &Report::Done(Box::new(agg))).await;
    Ok(())
}

async fn send(out: &mut tokio::io::Stdout, report: &Report) {
    if let Ok(mut line) = serde_json::to_string(report) {
        line.push('\n');
        let _ = out.write_all(line.as_bytes()).await;
        let _ = out.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_follow_the_fd_limit() {
        let per = clients_per_process();
        assert!(per >= 100);
        assert_eq!(auto_workers(1), 1);
        assert_eq!(auto_workers(per as u32), 1);
        assert_eq!(auto_workers(per as u32 + 1), 2);
    }

    #[test]
    fn reports_round_trip() {
        let line = serde_json::to_string(&Report::Progress(Snapshot {
            connected: 3,
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(
            serde_json::from_str::<Report>(&line).unwrap(),
            Report::Progress(Snapshot { connected: 3, .. })
        ));
    }
}
