//! The live progress line: one line rewritten in place on a terminal,
//! plain lines once a second otherwise (logs, tests).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::recorder::{Counters, Snapshot};

/// The progress text for one moment; `rate` is new connections per second.
pub fn line(elapsed: Duration, s: &Snapshot, target: u32, rate: f64) -> String {
    format!(
        "{:>7.1}s connected {}/{} rate {:.0}/s disconnects {} failed {}",
        elapsed.as_secs_f64(),
        s.connected,
        target,
        rate,
        s.disconnects,
        s.failures
    )
}

/// Prints progress on stderr until `stop`.
pub(crate) async fn run(
    counters: Vec<Arc<Counters>>,
    target: u32,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let mut tick = tokio::time::interval_at(start + every, every);
    let (mut last_at, mut last_connects) = (start, 0u64);
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut stop) => {
                if tty {
                    eprintln!();
                }
                return;
            }
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let s = counters
            .iter()
            .map(|c| c.snapshot())
            .fold(Snapshot::default(), |a, b| a + b);
        let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let rate = (s.connects - last_connects.min(s.connects)) as f64 / dt;
        (last_at, last_connects) = (now, s.connects);
        let text = line(now.duration_since(start), &s, target, rate);
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{text}\x1b[K")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_format() {
        let s = Snapshot {
            connected: 5,
            disconnects: 2,
            ..Default::default()
        };
        assert_eq!(
            line(Duration::from_millis(1500), &s, 10, 3.0),
            "    1.5s connected 5/10 rate 3/s disconnects 2 failed 0"
        );
    }
}
