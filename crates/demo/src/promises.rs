//! The five promises, measured: pure functions over what a run recorded (the
//! bench's timeline, its disconnect counts, the fleet's status polls).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sluice_bench::TimelineSample;
use sluice_core::engine::EvictionPace;

/// How far the measured eviction rate may be from the configured one (±10 %).
pub const PACE_TOLERANCE: f64 = 0.10;
/// The largest imbalance that still counts as balanced.
pub const MAX_IMBALANCE: f64 = 0.10;
/// An old instance with fewer connections than this at its peak is not used to
/// measure the rate of a cut (too few points for a slope).
pub const MIN_CONNECTIONS_FOR_PACE: u64 = 20;

/// The five promises of one strategy's run, each with its figure and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promises {
    /// Connections leave an old instance at the configured rate.
    pub paced: Paced,
    /// Every client is disconnected at most once.
    pub once: Once,
    /// Never fewer than `replicas` instances serve.
    pub capacity: Capacity,
    /// The new instances end up with even connection counts.
    pub balanced: Balanced,
    /// Every client is connected at the end.
    pub nothing_lost: NothingLost,
}

impl Promises {
    /// All five pass.
    pub fn all_pass(&self) -> bool {
        self.paced.pass
            && self.once.pass
            && self.capacity.pass
            && self.balanced.pass
            && self.nothing_lost.pass
    }

    /// The same figures, every verdict FAIL (the upgrade was aborted).
    pub fn failed(mut self) -> Promises {
        self.paced.pass = false;
        self.once.pass = false;
        self.capacity.pass = false;
        self.balanced.pass = false;
        self.nothing_lost.pass = false;
        self
    }
}

/// Promise 1: paced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paced {
    /// `connEvictRate`, connections per second.
    pub configured_rate: f64,
    /// The measured rate. Evacuated: the old instances' evacuators' own pace,
    /// pooled (their timed evictions over their summed time). Cut (a strategy
    /// that does not evacuate): the mean rate at which their connections
    /// vanished from the timeline. `None`: nothing to measure.
    pub measured_rate: Option<f64>,
    /// Each old instance's measured rate.
    pub per_instance: BTreeMap<String, f64>,
    /// Where the figure comes from.
    #[serde(default)]
    pub measured_from: PaceSource,
    /// Evacuated: the evictions the evacuators timed (all but the first of
    /// each instance's, when it kept up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_evictions: Option<u64>,
    /// Connections were evacuated (not cut) and the rate is within ±10 %.
    pub pass: bool,
}

/// What the paced figure was measured from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PaceSource {
    /// The evacuators' own clocks ([`EvictionPace`] in their status): what the
    /// proxy did, whatever the load on the machine reading it.
    #[default]
    Evacuators,
    /// The bench's 100 ms samples of the instances' connections: only for a
    /// cut, which no evacuator times.
    ConnectionSamples,
}

/// Promise 2: once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Once {
    /// The most disconnects one client saw.
    pub max_disconnects_per_client: u64,
    /// Clients disconnected more than once.
    pub clients_disconnected_more_than_once: u64,
    /// At most one.
    pub pass: bool,
}

/// Promise 3: full capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// The fewest ready serving instances seen from the apply until done.
    pub min_serving: i64,
    /// `replicas`.
    pub replicas: i64,
    /// Never fewer than `replicas`.
    pub pass: bool,
}

/// Promise 4: balanced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balanced {
    /// (max − min) / mean of the new instances' connections at the end; `None`
    /// when they hold none.
    pub imbalance: Option<f64>,
    /// The new instances' connections at the end.
    pub connections: BTreeMap<String, u64>,
    /// At most 0.10.
    pub pass: bool,
}

/// Promise 5: nothing lost. For HTTP clients it also means no request
/// failed: zero non-2xx responses and zero socket errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NothingLost {
    /// Clients connected when the bench stopped.
    pub connected_at_end: u64,
    /// Clients played.
    pub clients: u64,
    /// HTTP clients only: responses with a status outside 200-299.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non2xx: Option<u64>,
    /// HTTP clients only: requests that failed at the socket level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_errors: Option<u64>,
    /// All of them connected (and, for HTTP, no failed request).
    pub pass: bool,
}

/// The time series of one instance's connections: `(t, count)` for every
/// timeline sample from its first appearance on; once it has disappeared from the
/// metrics (deleted), it counts 0.
pub fn series(timeline: &[TimelineSample], instance: &str) -> Vec<(f64, f64)> {
    let Some(first) = timeline
        .iter()
        .position(|s| s.per_instance.contains_key(instance))
    else {
        return Vec::new();
    };
    let last = timeline
        .iter()
        .rposition(|s| s.per_instance.contains_key(instance))
        .unwrap_or(first);
    timeline[first..]
        .iter()
        .enumerate()
        .filter_map(|(k, s)| match s.per_instance.get(instance) {
            Some(n) => Some((s.t, *n as f64)),
            // A gap (a missed scrape) is skipped; after the last sighting it is gone.
            None if first + k > last => Some((s.t, 0.0)),
            None => None,
        })
        .collect()
}

/// The rate at which an instance was emptied: from its last peak, the slope
/// between the moments it crossed 90 % and 10 % of that peak (linear
/// interpolation between samples), in connections per second. `None` when the
/// peak is below [`MIN_CONNECTIONS_FOR_PACE`] or it never fell to 10 %.
pub fn eviction_rate(series: &[(f64, f64)]) -> Option<f64> {
    let peak = series.iter().map(|p| p.1).fold(0.0, f64::max);
    if peak < MIN_CONNECTIONS_FOR_PACE as f64 {
        return None;
    }
    let from = series.iter().rposition(|p| p.1 >= peak)?;
    let tail = &series[from..];
    let high = crossing(tail, peak * 0.9)?;
    let low = crossing(tail, peak * 0.1)?;
    let dt = low - high;
    // Both crossings inside one sampling interval of a step: a cut. Give the rate
    // over that interval instead of dividing by zero.
    let dt = if dt > 0.0 { dt } else { sample_interval(tail) };
    Some(peak * 0.8 / dt)
}

/// When `series` first falls to `level` or below, interpolated.
fn crossing(series: &[(f64, f64)], level: f64) -> Option<f64> {
    let k = series.iter().position(|p| p.1 <= level)?;
    if k == 0 {
        return Some(series[0].0);
    }
    let (t0, v0) = series[k - 1];
    let (t1, v1) = series[k];
    if v0 <= v1 {
        return Some(t1);
    }
    Some(t0 + (t1 - t0) * (v0 - level) / (v0 - v1))
}

fn sample_interval(series: &[(f64, f64)]) -> f64 {
    match series {
        [a, b, ..] if b.0 > a.0 => b.0 - a.0,
        _ => 0.1,
    }
}

/// Promise 1 of an evacuation, from the pace each `old` instance's evacuator
/// reported (`paces`, by instance): PASS when the pooled pace is within
/// [`PACE_TOLERANCE`] of `configured_rate`.
pub fn paced(
    paces: &BTreeMap<String, EvictionPace>,
    old: &BTreeSet<String>,
    configured_rate: f64,
) -> Paced {
    let old_paces: Vec<(&String, &EvictionPace)> = paces
        .iter()
        .filter(|(name, _)| old.contains(*name))
        .collect();
    let pooled = old_paces
        .iter()
        .fold(EvictionPace::default(), |sum, (_, p)| sum.plus(**p));
    let measured_rate = pooled.per_second();
    Paced {
        configured_rate,
        measured_rate: measured_rate.map(round1),
        per_instance: old_paces
            .iter()
            .filter_map(|(name, p)| Some(((*name).clone(), round1(p.per_second()?))))
            .collect(),
        measured_from: PaceSource::Evacuators,
        timed_evictions: Some(pooled.evictions),
        pass: measured_rate
            .is_some_and(|m| (m - configured_rate).abs() <= configured_rate * PACE_TOLERANCE),
    }
}

/// Promise 1 of a strategy that cuts instead of evacuating: the mean rate at
/// which the `old` instances' connections vanished from the timeline (a
/// burst). It fails whatever the figure.
pub fn cut(timeline: &[TimelineSample], old: &BTreeSet<String>, configured_rate: f64) -> Paced {
    let per_instance: BTreeMap<String, f64> = old
        .iter()
        .filter_map(|name| Some((name.clone(), eviction_rate(&series(timeline, name))?)))
        .collect();
    let measured_rate = (!per_instance.is_empty())
        .then(|| per_instance.values().sum::<f64>() / per_instance.len() as f64);
    Paced {
        configured_rate,
        measured_rate: measured_rate.map(round1),
        per_instance: per_instance
            .into_iter()
            .map(|(k, v)| (k, round1(v)))
            .collect(),
        measured_from: PaceSource::ConnectionSamples,
        timed_evictions: None,
        pass: false,
    }
}

/// Promise 2 from the bench's per-client disconnect histogram (index n: clients
/// that saw n disconnects).
pub fn once(histogram: &[u64]) -> Once {
    let max = histogram.iter().rposition(|&n| n > 0).unwrap_or(0) as u64;
    Once {
        max_disconnects_per_client: max,
        clients_disconnected_more_than_once: histogram.iter().skip(2).sum(),
        pass: max <= 1,
    }
}

/// Promise 3: the fewest serving instances seen against `replicas`.
pub fn capacity(min_serving: i64, replicas: i64) -> Capacity {
    Capacity {
        min_serving,
        replicas,
        pass: min_serving >= replicas,
    }
}

/// (max − min) / mean of `counts`; `None` when empty or all zero.
pub fn imbalance(counts: &[u64]) -> Option<f64> {
    let max = *counts.iter().max()?;
    let min = *counts.iter().min()?;
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    (mean > 0.0).then(|| (max - min) as f64 / mean)
}

/// Promise 4 from the new instances' connections at the end.
pub fn balanced(connections: BTreeMap<String, u64>) -> Balanced {
    let counts: Vec<u64> = connections.values().copied().collect();
    let imbalance = imbalance(&counts);
    Balanced {
        imbalance: imbalance.map(|x| (x * 1000.0).round() / 1000.0),
        connections,
        pass: imbalance.is_some_and(|x| x <= MAX_IMBALANCE),
    }
}

/// Promise 5.
pub fn nothing_lost(connected_at_end: u64, clients: u64) -> NothingLost {
    NothingLost {
        connected_at_end,
        clients,
        non2xx: None,
        socket_errors: None,
        pass: connected_at_end == clients,
    }
}

/// Promise 5 for HTTP clients: every client connected at the end, no
/// non-2xx response and no socket error.
pub fn nothing_lost_http(
    connected_at_end: u64,
    clients: u64,
    non2xx: u64,
    socket_errors: u64,
) -> NothingLost {
    NothingLost {
        non2xx: Some(non2xx),
        socket_errors: Some(socket_errors),
        pass: connected_at_end == clients && non2xx == 0 && socket_errors == 0,
        ..nothing_lost(connected_at_end, clients)
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline every 100 ms from `counts(t)` per instance (`None`: absent).
    fn timeline(
        secs: f64,
        counts: impl Fn(f64) -> Vec<(&'static str, Option<u64>)>,
    ) -> Vec<TimelineSample> {
        let n = (secs * 10.0).round() as usize;
        (0..=n)
            .map(|k| {
                let t = k as f64 / 10.0;
                TimelineSample {
                    t,
                    connected: 0,
                    per_instance: counts(t)
                        .into_iter()
                        .filter_map(|(name, c)| Some((name.to_owned(), c?)))
                        .collect(),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// 1000 connections from t=0, drained at `rate`/s from `start`, gone
    /// (deleted) one second after empty.
    fn drained(t: f64, start: f64, rate: f64) -> Option<u64> {
        let left = 1000.0 - (t - start).max(0.0) * rate;
        if left <= 0.0 && t > start + 1000.0 / rate + 1.0 {
            None
        } else {
            Some(left.max(0.0).round() as u64)
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// `evictions` timed at `rate` per second by an evacuator's clock.
    fn pace(evictions: u64, rate: f64) -> EvictionPace {
        EvictionPace {
            evictions,
            micros: (evictions as f64 * 1e6 / rate).round() as u64,
        }
    }

    #[test]
    fn an_evacuation_is_measured_by_the_evacuators_clocks() {
        let paces: BTreeMap<String, EvictionPace> = [
            ("blue-0".to_owned(), pace(999, 500.0)),
            ("blue-1".to_owned(), pace(999, 480.0)),
            // A new instance's evacuator (a later upgrade) is not this one's.
            ("green-0".to_owned(), pace(10, 50.0)),
        ]
        .into();
        let p = paced(&paces, &names(&["blue-0", "blue-1"]), 500.0);
        assert_eq!(p.measured_from, PaceSource::Evacuators);
        assert_eq!(p.timed_evictions, Some(1998));
        assert_eq!(p.per_instance.len(), 2);
        assert_eq!(p.per_instance["blue-1"], 480.0);
        // Pooled: all timed evictions over all the time they took.
        let m = p.measured_rate.unwrap();
        assert!((m - 489.8).abs() < 0.1, "{p:?}");
        assert!(p.pass);
        // Within ±10 % either way passes; beyond fails.
        for (rate, pass) in [(451.0, true), (549.0, true), (449.0, false), (551.0, false)] {
            let one: BTreeMap<String, EvictionPace> =
                [("blue-0".to_owned(), pace(1000, rate))].into();
            let p = paced(&one, &names(&["blue-0"]), 500.0);
            assert_eq!(p.pass, pass, "{rate}/s: {p:?}");
        }
        // The pooled pace weighs each instance by its time, not one vote each:
        // a small instance that was slow moves it little.
        let mixed: BTreeMap<String, EvictionPace> = [
            ("blue-0".to_owned(), pace(2000, 500.0)),
            ("blue-1".to_owned(), pace(20, 250.0)),
        ]
        .into();
        let p = paced(&mixed, &names(&["blue-0", "blue-1"]), 500.0);
        assert!(p.pass && p.measured_rate.unwrap() > 490.0, "{p:?}");
    }

    #[test]
    fn no_timed_eviction_gives_no_rate_and_fails() {
        let p = paced(&BTreeMap::new(), &names(&["blue-0"]), 500.0);
        assert_eq!((p.measured_rate, p.timed_evictions), (None, Some(0)));
        assert!(!p.pass);
        let one: BTreeMap<String, EvictionPace> =
            [("blue-0".to_owned(), EvictionPace::default())].into();
        assert!(!paced(&one, &names(&["blue-0"]), 500.0).pass);
    }

    #[test]
    fn a_cut_is_a_burst_and_fails() {
        // 1000 connections, then gone in one sample.
        let tl = timeline(5.0, |t| {
            vec![("blue-0", (t < 2.0).then_some(1000)), ("green-0", Some(0))]
        });
        let s = series(&tl, "blue-0");
        assert_eq!(s.last(), Some(&(5.0, 0.0)));
        let rate = eviction_rate(&s).unwrap();
        assert!(rate >= 7000.0, "{rate}");
        let p = cut(&tl, &names(&["blue-0"]), 500.0);
        assert_eq!(p.measured_from, PaceSource::ConnectionSamples);
        assert!(!p.pass);
        // Even a cut that happened to look paced fails when nothing was evacuated.
        let tl = timeline(20.0, |t| vec![("blue-0", drained(t, 2.0, 500.0))]);
        let p = cut(&tl, &names(&["blue-0"]), 500.0);
        assert!((p.measured_rate.unwrap() - 500.0).abs() < 5.0, "{p:?}");
        assert!(!p.pass);
    }

    #[test]
    fn the_last_peak_counts_when_an_instance_grows_before_it_goes() {
        // 500, then 1000 (clients of a killed neighbour), then cut.
        let tl = timeline(6.0, |t| {
            let c = if t < 1.0 {
                Some(500)
            } else if t < 3.0 {
                Some(1000)
            } else {
                None
            };
            vec![("blue-1", c)]
        });
        let rate = eviction_rate(&series(&tl, "blue-1")).unwrap();
        assert!((rate - 10_000.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn too_few_connections_or_no_drain_give_no_rate() {
        let tl = timeline(5.0, |_| vec![("blue-0", Some(10))]);
        assert_eq!(eviction_rate(&series(&tl, "blue-0")), None);
        let tl = timeline(5.0, |_| vec![("blue-0", Some(1000))]);
        assert_eq!(eviction_rate(&series(&tl, "blue-0")), None);
        let p = cut(&tl, &names(&["blue-0", "missing"]), 500.0);
        assert_eq!(p.measured_rate, None);
        assert!(!p.pass);
    }

    #[test]
    fn gaps_in_the_metrics_are_skipped_not_zero() {
        let tl = timeline(2.0, |t| {
            let missed = (0.45..0.55).contains(&t);
            vec![("a", (!missed).then_some(7)), ("b", Some(1))]
        });
        let s = series(&tl, "a");
        assert!(s.iter().all(|p| p.1 == 7.0));
        assert_eq!(s.len(), tl.len() - 1);
    }

    #[test]
    fn once_reads_the_histogram() {
        let o = once(&[2000, 1000]);
        assert_eq!(o.max_disconnects_per_client, 1);
        assert!(o.pass);
        let o = once(&[100, 2000, 700, 0, 3, 0]);
        assert_eq!(o.max_disconnects_per_client, 4);
        assert_eq!(o.clients_disconnected_more_than_once, 703);
        assert!(!o.pass);
        assert!(once(&[]).pass);
    }

    #[test]
    fn imbalance_is_spread_over_mean() {
        assert_eq!(imbalance(&[1000, 1000, 1000]), Some(0.0));
        let x = imbalance(&[950, 1000, 1050]).unwrap();
        assert!((x - 0.1).abs() < 1e-9, "{x}");
        assert_eq!(imbalance(&[]), None);
        assert_eq!(imbalance(&[0, 0]), None);
        let b = balanced([("g0".into(), 900), ("g1".into(), 1100)].into());
        assert_eq!(b.imbalance, Some(0.2));
        assert!(!b.pass);
        assert!(balanced([("g0".into(), 1000), ("g1".into(), 1001)].into()).pass);
        assert!(!balanced(BTreeMap::new()).pass);
    }

    #[test]
    fn capacity_and_nothing_lost() {
        assert!(capacity(3, 3).pass);
        assert!(!capacity(2, 3).pass);
        assert!(nothing_lost(3000, 3000).pass);
        assert!(!nothing_lost(2999, 3000).pass);
        assert!(nothing_lost_http(3, 3, 0, 0).pass);
        assert!(!nothing_lost_http(3, 3, 0, 1).pass);
        assert!(!nothing_lost_http(3, 3, 1, 0).pass);
        assert!(!nothing_lost_http(2, 3, 0, 0).pass);
    }

    #[test]
    fn failed_promises_keep_their_figures() {
        let p = Promises {
            paced: Paced {
                configured_rate: 500.0,
                measured_rate: Some(498.0),
                per_instance: BTreeMap::new(),
                measured_from: PaceSource::Evacuators,
                timed_evictions: Some(2997),
                pass: true,
            },
            once: once(&[1, 2]),
            capacity: capacity(3, 3),
            balanced: balanced([("g".into(), 5)].into()),
            nothing_lost: nothing_lost(3, 3),
        };
        assert!(p.all_pass());
        let f = p.clone().failed();
        assert!(!f.all_pass() && !f.once.pass && !f.nothing_lost.pass);
        assert_eq!(f.paced.measured_rate, Some(498.0));
    }
}
