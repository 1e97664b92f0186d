//! The timeline: every 100 ms, how many clients are connected and, from the
//! evacuators' `/metrics`, how many connections each instance holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::recorder::{Counters, HttpCounts, Snapshot};
use crate::scrape::{self, MetricsUrl};
use crate::summary::TimelineSample;

/// How often the timeline is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What one scrape of one metrics URL said, per upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scraped {
    /// Connections now.
    pub connections: BTreeMap<String, u64>,
    /// Evictions so far (a counter); `None` when the URL does not export it.
    pub evictions: Option<BTreeMap<String, u64>>,
    /// The `revision` label, where there is one.
    pub revisions: BTreeMap<String, String>,
}

impl Scraped {
    fn of(body: &str) -> Scraped {
        let samples = scrape::parse_text(body);
        Scraped {
            connections: scrape::upstream_connections(&samples),
            evictions: scrape::upstream_evictions(&samples),
            revisions: scrape::upstream_revisions(&samples),
        }
    }
}

/// The latest scrape of each metrics URL (`None`: the last one failed).
pub(crate) type Latest = Arc<Mutex<Vec<Option<Scraped>>>>;

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
                    .map(|body| Scraped::of(&body));
                if let Ok(mut slots) = latest.lock() {
                    slots[i] = got;
                }
            }
        });
    }
    latest
}

/// One recorded sample as numbers: instance values keyed by series number.
#[derive(Debug)]
struct RawSample {
    t: f64,
    connected: u64,
    reconnects: u64,
    /// Evictions counted so far over all series.
    evicted: u64,
    http: Option<HttpCounts>,
    instances: Vec<(usize, u64)>,
}

/// One instance as seen through one URL.
#[derive(Debug)]
struct Series {
    url: usize,
    name: String,
    revision: Option<String>,
    /// Its eviction counter at the last scrape that had one.
    evicted: u64,
}

/// Samples as recorded: instance values keyed by series number.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    samples: Vec<RawSample>,
    series: Vec<Series>,
    evicted: u64,
    /// Some URL exported the eviction counter.
    evictions_seen: bool,
}

/// The finished timeline.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Samples with instance names.
    pub samples: Vec<TimelineSample>,
    /// Each instance's revision, where the metrics say.
    pub revisions: BTreeMap<String, String>,
    /// Instance names in the order of the URLs that report them, then in
    /// first-seen order: the order the user gave, not the order in which
    /// scrapes first succeeded (a slow first scrape of the old set must not
    /// make the new set read as the old one).
    pub instances: Vec<String>,
}

impl Recording {
    /// Adds a sample at `t` seconds: clients connected, reconnections and
    /// (for protocols that count requests) request counts so far (the
    /// bench's own counts), and the latest scrapes.
    pub(crate) fn push(
        &mut self,
        t: f64,
        connected: u64,
        reconnects: u64,
        http: Option<HttpCounts>,
        scrapes: &[Option<Scraped>],
    ) {
        let mut instances = Vec::new();
        for (url, scrape) in scrapes.iter().enumerate() {
            let Some(scrape) = scrape else { continue };
            self.evictions_seen |= scrape.evictions.is_some();
            for (name, value) in &scrape.connections {
                let counter = scrape.evictions.as_ref().and_then(|e| e.get(name)).copied();
                let id = match self
                    .series
                    .iter()
                    .position(|s| s.url == url && &s.name == name)
                {
                    Some(id) => id,
                    None => {
                        // First seen: what its counter holds happened before the
                        // run (a proxy creates the counter at its first eviction:
                        // none yet counts from 0).
                        self.series.push(Series {
                            url,
                            name: name.clone(),
                            revision: None,
                            evicted: counter.unwrap_or(0),
                        });
                        self.series.len() - 1
                    }
                };
                let series = &mut self.series[id];
                if let Some(r) = scrape.revisions.get(name) {
                    series.revision = Some(r.clone());
                }
                if let Some(now) = counter {
                    // A counter that went back: the evacuator restarted.
                    self.evicted += now.checked_sub(series.evicted).unwrap_or(now);
                    series.evicted = now;
                }
                instances.push((id, *value));
            }
        }
        self.samples.push(RawSample {
            t,
            connected,
            reconnects,
            evicted: self.evicted,
            http,
            instances,
        });
    }

    /// The samples with instance names (see [`scrape::instance_names`]).
    pub(crate) fn finish(self, urls: &[MetricsUrl]) -> Timeline {
        let seen: Vec<(usize, String)> = self
            .series
            .iter()
            .map(|s| (s.url, s.name.clone()))
            .collect();
        let names = scrape::instance_names(urls, &seen);
        let evictions_seen = self.evictions_seen;
        let samples = self
            .samples
            .into_iter()
            .map(|x| TimelineSample {
                t: x.t,
                connected: x.connected,
                reconnects: Some(x.reconnects),
                evicted: evictions_seen.then_some(x.evicted),
                http: x.http,
                per_instance: x
                    .instances
                    .into_iter()
                    .map(|(id, v)| (names[id].clone(), v))
                    .collect(),
            })
            .collect();
        let revisions = self
            .series
            .iter()
            .zip(&names)
            .filter_map(|(s, name)| Some((name.clone(), s.revision.clone()?)))
            .collect();
        let mut order: Vec<usize> = (0..self.series.len()).collect();
        order.sort_by_key(|&id| self.series[id].url);
        let instances = order.into_iter().map(|id| names[id].clone()).collect();
        Timeline {
            samples,
            revisions,
            instances,
        }
    }
}

/// Samples every [`SAMPLE_EVERY`] from `start` until `stop`: the sum of the
/// processes' connected clients, reconnections and, when `counts_requests`,
/// request counts, and the latest scrapes.
pub(crate) async fn record(
    start: Instant,
    counts_requests: bool,
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
        let now = counters
            .iter()
            .map(|c| c.snapshot())
            .fold(Snapshot::default(), |a, b| a + b);
        let scrapes = latest.lock().map(|s| s.clone()).unwrap_or_default();
        let t = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let reconnects = now.connects.saturating_sub(now.ever_connected);
        let http = counts_requests.then_some(now.http);
        recording.push(t, now.connected, reconnects, http, &scrapes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scraped(pairs: &[(&str, u64)], evictions: Option<&[(&str, u64)]>) -> Option<Scraped> {
        let map = |p: &[(&str, u64)]| p.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Some(Scraped {
            connections: map(pairs),
            evictions: evictions.map(map),
            revisions: pairs
                .iter()
                .map(|(k, _)| (k.to_string(), format!("rev-{k}")))
                .collect(),
        })
    }

    fn two_urls() -> Vec<MetricsUrl> {
        ["http://a:1/metrics", "http://b:2/metrics"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect()
    }

    #[test]
    fn series_keep_their_names_across_samples() {
        let urls = two_urls();
        let mut r = Recording::default();
        r.push(0.0, 10, 0, None, &[scraped(&[("blue", 10)], None), None]);
        r.push(
            0.1,
            10,
            1,
            None,
            &[
                scraped(&[("blue", 4)], None),
                scraped(&[("green", 6)], None),
            ],
        );
        let http = HttpCounts {
            requests: 7,
            non2xx: 1,
            socket_errors: 2,
        };
        r.push(
            0.2,
            10,
            2,
            Some(http),
            &[None, scraped(&[("green", 10)], None)],
        );
        let t = r.finish(&urls);
        let samples = t.samples;
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].per_instance.get("blue"), Some(&10));
        assert_eq!(samples[1].per_instance.len(), 2);
        assert_eq!(samples[2].per_instance.get("green"), Some(&10));
        assert!(!samples[2].per_instance.contains_key("blue"));
        assert_eq!(samples[2].reconnects, Some(2));
        assert_eq!(samples[2].evicted, None, "no eviction counter: unknown");
        assert_eq!(samples[2].http, Some(http));
        assert_eq!(samples[1].http, None);
        assert_eq!(t.revisions["green"], "rev-green");
    }

    #[test]
    fn instances_follow_the_order_of_the_urls_not_of_the_first_scrape() {
        let urls = two_urls();
        let mut r = Recording::default();
        // The first scrape of the first URL failed: green is seen first.
        r.push(0.0, 10, 0, None, &[None, scraped(&[("green", 0)], None)]);
        r.push(0.1, 10, 0, None, &[scraped(&[("blue", 10)], None), None]);
        assert_eq!(r.finish(&urls).instances, ["blue", "green"]);
    }

    #[test]
    fn evictions_count_from_each_counter_s_first_sight() {
        let urls: Vec<MetricsUrl> = vec!["http://a:1/metrics".parse().unwrap()];
        let mut r = Recording::default();
        // blue's counter holds 7 from before the run; green's appears late.
        r.push(
            0.0,
            0,
            0,
            None,
            &[scraped(&[("blue", 9), ("green", 0)], Some(&[("blue", 7)]))],
        );
        r.push(
            0.1,
            0,
            0,
            None,
            &[scraped(&[("blue", 5), ("green", 4)], Some(&[("blue", 11)]))],
        );
        r.push(
            0.2,
            0,
            0,
            None,
            &[scraped(
                &[("blue", 2), ("green", 7)],
                Some(&[("blue", 14), ("green", 2)]),
            )],
        );
        // green restarted: its counter went back to 1.
        r.push(
            0.3,
            0,
            0,
            None,
            &[scraped(&[("green", 9)], Some(&[("green", 1)]))],
        );
        let evicted: Vec<_> = r.finish(&urls).samples.iter().map(|s| s.evicted).collect();
        assert_eq!(evicted, [Some(0), Some(4), Some(9), Some(10)]);
    }
}
