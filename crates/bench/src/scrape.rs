//! Reading the evacuators' Prometheus metrics: connections per instance.
//!
//! A GET through [`sluice_http`] and a small parser of the text exposition
//! format (`name{labels} value` lines) are all the sampler needs.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_api::metrics::{EVICTIONS, UPSTREAM_CONNECTIONS, label};

/// A `http://HOST:PORT/PATH` URL of a metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// Host (name or address; IPv6 without brackets).
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl MetricsUrl {
    /// `host:port`, used to tell apart instances of the same name.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for MetricsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("'{s}' {why} (write e.g. http://127.0.0.1:9100/metrics)");
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("has a bad port"))?,
            None => 80,
        };
        Ok(MetricsUrl {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

/// Why a scrape failed (it only costs that sample its instances).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, writing or reading failed.
    #[error("metrics request failed: {0}")]
    Io(#[from] std::io::Error),
    /// It took longer than the timeout.
    #[error("metrics request timed out")]
    Timeout,
    /// The answer is not HTTP 200 with a readable body.
    #[error("bad metrics response: {0}")]
    Http(String),
}

/// GETs `url` and returns the body.
pub async fn fetch(url: &MetricsUrl, timeout: Duration) -> Result<String, ScrapeError> {
    let headers = [("Accept", "text/plain")];
    let r = sluice_http::request(url.authority(), "GET", &url.path, &headers, b"", timeout)
        .await
        .map_err(|e| match e {
            sluice_http::Error::Io(e) => ScrapeError::Io(e),
            sluice_http::Error::Timeout { .. } => ScrapeError::Timeout,
            e => ScrapeError::Http(e.to_string()),
        })?;
    if r.status != 200 {
        return Err(ScrapeError::Http(format!(
            "status line '{}'",
            r.status_line()
        )));
    }
    Ok(r.body_text())
}

/// One sample line of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format; lines it cannot read are skipped.
pub fn parse_text(body: &str) -> Vec<Sample> {
    body.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    end = i + 1;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
        rest = &inner[end..];
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Connections per upstream in one scrape: the `upstream` label of
/// [`UPSTREAM_CONNECTIONS`], summed over protocols.
pub fn upstream_connections(samples: &[Sample]) -> BTreeMap<String, u64> {
    per_upstream(samples, UPSTREAM_CONNECTIONS)
}

/// Evictions per upstream in one scrape: [`EVICTIONS`] summed over its other
/// labels (the proxy's `reason`); `None` when no upstream reports it.
pub fn upstream_evictions(samples: &[Sample]) -> Option<BTreeMap<String, u64>> {
    let out = per_upstream(samples, EVICTIONS);
    (!out.is_empty()).then_some(out)
}

/// The `revision` label of each upstream's [`UPSTREAM_CONNECTIONS`], where
/// the exporter sets one (`sluice up` does).
pub fn upstream_revisions(samples: &[Sample]) -> BTreeMap<String, String> {
    samples
        .iter()
        .filter(|s| s.name == UPSTREAM_CONNECTIONS)
        .filter_map(|s| {
            Some((
                s.label(label::UPSTREAM)?.to_owned(),
                s.label(label::REVISION)?.to_owned(),
            ))
        })
        .collect()
}

fn per_upstream(samples: &[Sample], metric: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == metric) {
        if let Some(upstream) = s.label(label::UPSTREAM) {
            *out.entry(upstream.to_owned()).or_insert(0) += s.value.max(0.0).round() as u64;
        }
    }
    out
}

/// Names instances: the upstream name, prefixed with `host:port/` when two
/// URLs report an upstream of the same name. `seen` holds every
/// (url index, upstream) pair seen during the run.
pub fn instance_names(urls: &[MetricsUrl], seen: &[(usize, String)]) -> Vec<String> {
    seen.iter()
        .map(|(url, name)| {
            let shared = seen.iter().any(|(u, n)| n == name && u != url);
            match urls.get(*url) {
                Some(u) if shared => format!("{}/{name}", u.authority()),
                _ => name.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_api::metrics::label::{PROTOCOL, UPSTREAM};

    fn body() -> String {
        let c = UPSTREAM_CONNECTIONS;
        format!(
            "# HELP {c} Current connections.\n\
             # TYPE {c} gauge\n\
             {c}{{{UPSTREAM}=\"blue\",{PROTOCOL}=\"mqtt\"}} 120\n\
             {c}{{{PROTOCOL}=\"tcp\",{UPSTREAM}=\"blue\"}} 3\n\
             {c}{{{UPSTREAM}=\"gr\\\"een\",{PROTOCOL}=\"mqtt\"}} 7 1700000000\n\
             {EVICTIONS}{{{UPSTREAM}=\"blue\"}} 9\n\
             process_open_fds 33\n\
             garbage{{ line\n"
        )
    }

    #[test]
    fn parses_the_text_format() {
        let samples = parse_text(&body());
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0].label(UPSTREAM), Some("blue"));
        assert_eq!(samples[4].name, "process_open_fds");
        let per = upstream_connections(&samples);
        assert_eq!(per.get("blue"), Some(&123));
        assert_eq!(per.get("gr\"een"), Some(&7));
        assert_eq!(per.len(), 2);
        assert_eq!(
            upstream_evictions(&samples),
            Some([("blue".into(), 9)].into())
        );
        assert!(upstream_revisions(&samples).is_empty());
        let up = parse_text(
            "sluice_upstream_connections{upstream=\"a-0\",revision=\"a\",protocol=\"mqtt\"} 5\n",
        );
        assert_eq!(upstream_revisions(&up), [("a-0".into(), "a".into())].into());
        assert_eq!(upstream_evictions(&up), None);
    }

    #[test]
    fn urls() {
        let u: MetricsUrl = "http://127.0.0.1:9100/metrics".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9100, "/metrics")
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:9100/metrics");
        let v6: MetricsUrl = "http://[::1]:80".parse().unwrap();
        assert_eq!(v6.authority(), "[::1]:80");
        assert_eq!(v6.path, "/metrics");
        assert!("https://x/metrics".parse::<MetricsUrl>().is_err());
        assert!("http://x:port/metrics".parse::<MetricsUrl>().is_err());
    }

    #[test]
    fn same_upstream_name_on_two_urls_gets_a_prefix() {
        let urls: Vec<MetricsUrl> = ["http://127.0.0.1:1/metrics", "http://127.0.0.1:2/metrics"]
            .iter()
            .map(|u| u.parse().unwrap())
            .collect();
        let seen = vec![
            (0, "app".to_owned()),
            (1, "app".to_owned()),
            (1, "other".to_owned()),
        ];
        assert_eq!(
            instance_names(&urls, &seen),
            ["127.0.0.1:1/app", "127.0.0.1:2/app", "other"]
        );
    }
}
