//! Reading the evacuators' Prometheus metrics: connections per instance.
//!
//! A tiny HTTP/1.1 GET over a tokio `TcpStream` and a small parser of the
//! text exposition format (`name{labels} value` lines) are all the sampler
//! needs; no HTTP client library.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The gauge `sluice proxy` exports: current connections per upstream.
pub const UPSTREAM_CONNECTIONS: &str = "sluice_upstream_connections";

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
    tokio::time::timeout(timeout, fetch_inner(url))
        .await
        .map_err(|_| ScrapeError::Timeout)?
}

async fn fetch_inner(url: &MetricsUrl) -> Result<String, ScrapeError> {
    let mut stream = TcpStream::connect((url.host.as_str(), url.port)).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_http_response(&raw)
}

/// Splits an HTTP/1.1 response into its body, undoing chunked encoding.
fn parse_http_response(raw: &[u8]) -> Result<String, ScrapeError> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::Http("no end of headers".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Http(format!("status line '{status}'")));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_owned());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size_line, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| ScrapeError::Http("truncated chunk".into()))?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ScrapeError::Http("bad chunk size".into()))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| ScrapeError::Http("truncated chunk".into()))?;
        out.push_str(chunk);
        rest = after.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
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
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == UPSTREAM_CONNECTIONS) {
        if let Some(upstream) = s.label("upstream") {
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

    const BODY: &str = "# HELP sluice_upstream_connections Current connections.\n\
        # TYPE sluice_upstream_connections gauge\n\
        sluice_upstream_connections{upstream=\"blue\",protocol=\"mqtt\"} 120\n\
        sluice_upstream_connections{protocol=\"tcp\",upstream=\"blue\"} 3\n\
        sluice_upstream_connections{upstream=\"gr\\\"een\",protocol=\"mqtt\"} 7 1700000000\n\
        sluice_evictions_total{upstream=\"blue\"} 9\n\
        process_open_fds 33\n\
        garbage{ line\n";

    #[test]
    fn parses_the_text_format() {
        let samples = parse_text(BODY);
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0].label("upstream"), Some("blue"));
        assert_eq!(samples[4].name, "process_open_fds");
        let per = upstream_connections(&samples);
        assert_eq!(per.get("blue"), Some(&123));
        assert_eq!(per.get("gr\"een"), Some(&7));
        assert_eq!(per.len(), 2);
    }

    #[test]
    fn http_bodies_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parse_http_response(plain).unwrap(), "abc");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap(), "abcde");
        assert!(parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
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
