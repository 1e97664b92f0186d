//! The timeline: every 100 ms, how many clients are connected and, from the
//! evacuators' `/metrics`, how many connections each instance holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::recorder::Counters;
use crate::scrape::{self, MetricsUrl};
use crate::summary::TimelineSample;

/// How often the timeline is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The latest scrape of each metrics URL (`None`: the last one failed).
pub(crate) type Latest = Arc<Mutex<Vec<Option<BTreeMap<String, u64>>>>>;

/// Starts one scraping task per URL, each refreshing its slot of the
/// returned table every [`SAMPLE_EVERY`] until `stop`.
pub(crate) fn spawn_scrapers(urls: &[MetricsUrl], stop: &watch::Receiver<bool>) -> Latest {
    let latest: Latest = Arc::new(Mutex::new(vec![None; urls.len()]));
    for (i, url) in urls.iter().enumerate() {
        let (url, latest, mut stop) = (url.clone(), latest.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = crate::stopped(&mut stop) => return,
                    _ = tick.tick() => {}
                }
                let got = scrape::fetch(&url, Duration::from_secs(1))
                    .await
                    .ok()
                    .map(|body| scrape::upstream_connections(&scrape::parse_text(&body)));
                if let Ok(mut slots) = latest.lock() {
                    slots[i] = got;
                }
            }
        });
    }
    latest
}

/// One recorded sample: seconds, connected, (series number, connections).
type RawSample = (f64, u64, Vec<(usize, u64)>);

/// Samples as recorded: instance values keyed by series number.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    samples: Vec<RawSample>,
    /// Series number → (url index, upstream name).
    series: Vec<(usize, String)>,
}

impl Recording {
    /// Adds a sample at `t` seconds.
    pub(crate) fn push(
        &mut self,
        t: f64,
        connected: u64,
        scrapes: &[Option<BTreeMap<String, u64>>],
    ) {
        let mut instances = Vec::new();
        for (url, scrape) in scrapes.iter().enumerate() {
            for (name, value) in scrape.iter().flatten() {
                let id = match self.series.iter().position(|(u, n)| *u == url && n == name) {
                    Some(id) => id,
                    None => {
                        self.series.push((url, name.clone()));
                        self.series.len() - 1
                    }
                };
                instances.push((id, *value));
            }
        }
        self.samples.push((t, connected, instances));
    }

    /// The samples with instance names (see [`scrape::instance_names`]).
    pub(crate) fn finish(self, urls: &[MetricsUrl]) -> Vec<TimelineSample> {
        let names = scrape::instance_names(urls, &self.series);
        self.samples
            .into_iter()
            .map(|(t, connected, instances)| TimelineSample {
                t,
                connected,
                per_instance: instances
                    .into_iter()
                    .map(|(id, v)| (names[id].clone(), v))
                    .collect(),
            })
            .collect()
    }
}

/// Samples every [`SAMPLE_EVERY`] from `start` until `stop`: the sum of the
/// processes' connected clients and the latest scrapes.
pub(crate) async fn record(
    start: Instant,
    counters: Vec<Arc<Counters>>,
    latest: Latest,
    mut stop: watch::Receiver<bool>,
) -> Recording {
    let mut recording = Recording::default();
    let mut tick = tokio::time::interval_at(start, SAMPLE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(&mut stop) => return recording,
            _ = tick.tick() => {}
        }
        let connected = counters.iter().map(|c| c.snapshot().connected).sum();
        let scrapes = latest.lock().map(|s| s.clone()).unwrap_or_default();
        let t = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        recording.push(t, connected, &scrapes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_names_across_samples() {
        let urls: Vec<MetricsUrl> = ["http://a:1/metrics", "http://b:2/metrics"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect();
        let mut r = Recording::default();
        let one =
            |pairs: &[(&str, u64)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect());
        r.push(0.0, 10, &[one(&[("blue", 10)]), None]);
        r.push(0.1, 10, &[one(&[("blue", 4)]), one(&[("green", 6)])]);
        r.push(0.2, 10, &[None, one(&[("green", 10)])]);
        let samples = r.finish(&urls);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].per_instance.get("blue"), Some(&10));
        assert_eq!(samples[1].per_instance.len(), 2);
        assert_eq!(samples[2].per_instance.get("green"), Some(&10));
        assert!(!samples[2].per_instance.contains_key("blue"));
    }
}
