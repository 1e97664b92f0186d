//! The MQTT clients of the Kubernetes upgrade tests: half MQTT 3.1.1, half
//! MQTT 5, through a Service's ClusterIP. `sluice bench conn` speaks one
//! version per run, so these are two runs (distinct client ids, so that no two
//! clients take over each other's session), summed.

use std::path::PathBuf;
use std::time::Duration;

use super::Env;
use crate::support::bench_extra::{BenchRun, read_json};

/// The two `sluice bench conn` runs.
pub struct Clients {
    runs: Vec<(BenchRun, u64, PathBuf)>,
}

/// What the clients saw, summed over both runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tally {
    /// Clients by how many times they were disconnected (index = disconnects).
    pub histogram: Vec<u64>,
    /// The most disconnects of one client.
    pub max_disconnects: u64,
    /// Disconnects in all.
    pub disconnects: u64,
    /// Clients connected when the runs stopped.
    pub connected_at_end: u64,
}

impl Clients {
    /// Starts `total` clients to `ip:1883` from the node's namespace: the
    /// first half MQTT 3.1.1 (ids `v311_N`), the rest MQTT 5 (`v5_N`).
    pub fn start(env: &Env, ip: &str, total: u64) -> Clients {
        let half = total / 2;
        let runs = [("3.1.1", "v311_%i", half), ("5", "v5_%i", total - half)]
            .into_iter()
            .map(|(version, id, n)| {
                let summary = env.dir.join(format!("bench-mqtt{version}.json"));
                let run = env.start_bench_with(ip, n, &summary, &["-V", version, "-I", id]);
                (run, n, summary)
            })
            .collect();
        Clients { runs }
    }

    /// Clients connected now (the runs' latest progress lines).
    pub fn connected(&self) -> u64 {
        self.runs.iter().map(|(r, _, _)| r.connected()).sum()
    }

    /// Waits until every client is connected.
    pub fn wait_connected(&self, timeout: Duration) {
        for (run, n, _) in &self.runs {
            run.wait_connected(*n, timeout);
        }
    }

    /// Stops both runs (SIGTERM) and sums their summaries.
    pub fn stop(self) -> Tally {
        let mut tally = Tally {
            histogram: Vec::new(),
            max_disconnects: 0,
            disconnects: 0,
            connected_at_end: 0,
        };
        for (run, _, summary) in self.runs {
            let out = run.stop();
            assert!(out.success, "bench failed: {}", out.stderr);
            let s = read_json(&summary);
            let histogram: Vec<u64> =
                serde_json::from_value(s["disconnectHistogram"].clone()).expect("histogram");
            if tally.histogram.len() < histogram.len() {
                tally.histogram.resize(histogram.len(), 0);
            }
            for (k, n) in histogram.iter().enumerate() {
                tally.histogram[k] += n;
            }
            let number = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
            tally.max_disconnects = tally.max_disconnects.max(number("maxDisconnectsPerClient"));
            tally.disconnects += number("disconnects");
            tally.connected_at_end += number("connectedAtEnd");
        }
        tally
    }
}
