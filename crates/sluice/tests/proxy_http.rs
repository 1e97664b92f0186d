//! HTTP/1.1 keep-alive evacuation under real load tools: wrk, oha and
//! `h2load --h1` each run at full speed through `sluice proxy --protocol http`
//! to two nginx upstreams while one of them is evacuated at 200 connections/s.
//! Each tool must report zero non-2xx responses and zero socket errors, and
//! every connection must have left the evacuated upstream while the load ran.
//! Side by side, the same run through `--protocol tcp` (eviction as a plain
//! close) must show errors: the measurement can fail.

mod support;

use std::time::{Duration, Instant};

use support::http_extra::{Load, Nginx, Tool};
use support::proxy_extra::Proxy;
use support::wait_until;

/// Keep-alive connections each tool opens.
const CONNECTIONS: u32 = 50;
/// How long each tool runs.
const SECONDS: u32 = 10;

/// Runs `tool` through `proxy`, evacuates upstream `a` once both upstreams
/// carry connections, checks that `a` empties while the tool still runs, and
/// returns the tool's summary. The evacuation is stopped afterwards.
fn evacuate_under(proxy: &Proxy, tool: Tool) -> Load {
    let url = format!("http://{}/", proxy.listen);
    let started = Instant::now();
    let child = tool.start(&url, CONNECTIONS, SECONDS);
    wait_until(
        &format!("{tool:?}'s connections on both upstreams"),
        Duration::from_secs(15),
        || proxy.connections("a") > 0 && proxy.connections("b") > 0,
    );
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(r#"{"conn_evict_rate": 200, "wait_health_check": 0, "deadline": 60}"#),
    );
    wait_until(
        &format!("every {tool:?} connection to leave upstream a"),
        Duration::from_secs(30),
        || proxy.connections("a") == 0,
    );
    wait_until(
        &format!("all {CONNECTIONS} {tool:?} connections on upstream b"),
        Duration::from_secs(5),
        || proxy.connections("b") == u64::from(CONNECTIONS),
    );
    let emptied = started.elapsed();
    let load = tool.finish(child);
    assert!(
        emptied < Duration::from_secs(SECONDS.into()),
        "{tool:?}: the connections moved after {emptied:?}, not while the load ran"
    );
    proxy.ok("DELETE", "/upstreams/a/evacuation", None);
    load
}

#[test]
fn http_evacuation_under_wrk_oha_and_h2load_has_no_errors() {
    let nginx = Nginx::start();
    let upstreams = [("a", nginx.addrs[0]), ("b", nginx.addrs[1])];
    let http = Proxy::start(&upstreams, &["--protocol", "http"]);
    for tool in [Tool::Wrk, Tool::H2load, Tool::Oha] {
        let load = evacuate_under(&http, tool);
        eprintln!(
            "{tool:?} through --protocol http: {} responses, {} non-2xx, {} socket errors",
            load.responses, load.non_2xx, load.socket_errors
        );
        assert_eq!(
            (load.non_2xx, load.socket_errors),
            (0, 0),
            "{tool:?} saw errors through --protocol http:\n{}",
            load.raw
        );
    }
    let metrics = http.metrics();
    assert!(
        metrics.contains(r#"sluice_evictions_total{upstream="a",reason="connection_close"}"#),
        "evictions are counted as connection_close:\n{metrics}"
    );

    // The same under wrk with eviction as a plain TCP close: errors show.
    let tcp = Proxy::start(&upstreams, &["--protocol", "tcp"]);
    let load = evacuate_under(&tcp, Tool::Wrk);
    eprintln!(
        "Wrk through --protocol tcp: {} responses, {} non-2xx, {} socket errors",
        load.responses, load.non_2xx, load.socket_errors
    );
    assert!(
        load.socket_errors > 0,
        "evicting HTTP as plain TCP should make wrk see errors:\n{}",
        load.raw
    );
}
