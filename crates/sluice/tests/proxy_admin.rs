//! The admin API: strict bodies (400 naming the field), 409 on a second start,
//! 401 without the bearer token, no admin API beyond loopback without a strong
//! token (from a flag, a file or the environment), readiness, refusals while evacuating (CONNACK
//! 0x9C with Server Reference for MQTT 5, return code 3 for 3.1.1), and DELETE
//! restoring service.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::proxy_extra::{Proxy, http, proxy_command};
use support::{ChildGuard, Mosquitto, TempDir, free_port, wait_until};

/// A token long enough to be accepted (`openssl rand -hex 8`).
const TOKEN: &str = "5f0c8a1e9b7d2c4a";

/// A CONNECT (clean start, keep alive 60, client id "c1") for level 4 or 5.
fn connect_packet(level: u8) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02, 0, 60];
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&[0, 2, b'c', b'1']);
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Sends a CONNECT through the proxy; returns the CONNACK bytes and, for a
/// refusal, whether the connection was then closed cleanly (EOF).
fn connack(proxy: &Proxy, level: u8) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(proxy.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&connect_packet(level)).unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).unwrap();
    let mut rest = [0u8; 1];
    let refused = body.get(1).is_some_and(|code| *code != 0);
    let closed = refused && matches!(s.read(&mut rest), Ok(0));
    let mut packet = head.to_vec();
    packet.extend(body);
    (packet, closed)
}

#[test]
fn bodies_are_checked_and_errors_name_the_field() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(&[("app", broker.addr())], &["--admin-token", TOKEN]);
    let big = format!(
        r#"{{"conn_evict_rate": 1, "server_reference": "{}:1"}}"#,
        "h".repeat(5000)
    );
    for (body, field) in [
        (
            r#"{"conn_evict_rate": 10, "conn_evict_rat": 1}"#,
            Some("conn_evict_rat"),
        ),
        (r#"{"conn_evict_rate": "fast"}"#, Some("conn_evict_rate")),
        (r#"{"conn_evict_rate": 0}"#, Some("conn_evict_rate")),
        (
            r#"{"conn_evict_rate": 10, "wait_takeover": 86401}"#,
            Some("wait_takeover"),
        ),
        (r#"{"sess_evict_rate": 10}"#, Some("conn_evict_rate")),
        (
            r#"{"conn_evict_rate": 10, "mqtt5_evict": "kick"}"#,
            Some("mqtt5_evict"),
        ),
        (big.as_str(), None),
        ("not json", None),
    ] {
        let (status, err) = proxy.call("POST", "/evacuation", Some(body));
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["code"], "BAD_REQUEST", "{err}");
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{err}"
        );
        if let Some(field) = field {
            assert_eq!(err["field"], field, "{body}: {err}");
            assert!(err["message"].as_str().unwrap().contains(field), "{err}");
        }
    }
    let (status, err) = proxy.call("PUT", "/upstreams/app", Some(r#"{"serving": "yes"}"#));
    assert_eq!(
        (status, err["field"].as_str()),
        (400, Some("serving")),
        "{err}"
    );
    assert_eq!(
        proxy
            .call("PUT", "/upstreams/nope", Some(r#"{"serving": true}"#))
            .0,
        404
    );
    assert_eq!(
        proxy.ok("GET", "/evacuation", None)["state"],
        "disabled",
        "nothing started by bad bodies"
    );
}

#[test]
fn token_is_required_except_for_probes() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(&[("app", broker.addr())], &["--admin-token", TOKEN]);
    for path in ["/upstreams", "/evacuation", "/metrics"] {
        let (status, body) = http(proxy.admin, "GET", path, None, None).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(
            http(proxy.admin, "GET", path, None, Some("wrong"))
                .unwrap()
                .0,
            401,
            "{path}"
        );
        assert_eq!(
            http(proxy.admin, "GET", path, None, Some(TOKEN)).unwrap().0,
            200,
            "{path}"
        );
    }
    let (status, _) = http(
        proxy.admin,
        "POST",
        "/evacuation",
        Some(r#"{"conn_evict_rate": 1}"#),
        None,
    )
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(proxy.ok("GET", "/evacuation", None)["state"], "disabled");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http(proxy.admin, "GET", path, None, None).unwrap().0,
            200,
            "{path}"
        );
    }
}

/// Starts `sluice proxy` with its admin API on 0.0.0.0 and `extra` flags and
/// `env`, and returns how it exited (it must exit, within a generous deadline)
/// and its stderr.
fn refused_start(extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let upstream = ("app", std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = std::net::SocketAddr::from(([0, 0, 0, 0], free_port()));
    let mut cmd = proxy_command(&[upstream], listen, admin);
    cmd.args(extra)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("spawn sluice proxy"));
    let (status, stderr) = child.exit_within(Duration::from_secs(30));
    (status.code(), stderr)
}

#[test]
fn admin_beyond_loopback_needs_a_strong_token() {
    let dir = TempDir::new("token");
    let empty_file = dir.join("empty");
    std::fs::write(&empty_file, "\n").unwrap();
    let empty_file = empty_file.to_str().unwrap();
    for (extra, env, names) in [
        (&[][..], &[][..], "--admin 0.0.0.0:"),
        (
            &["--admin-token", ""][..],
            &[][..],
            "--admin-token: the admin token is empty",
        ),
        (
            &["--admin-token", "s3cret"],
            &[],
            "--admin-token: the admin token is 6 bytes",
        ),
        (
            &["--admin-token-file", empty_file],
            &[],
            "--admin-token-file",
        ),
        (
            &[],
            &[("SLUICE_ADMIN_TOKEN", "")],
            "SLUICE_ADMIN_TOKEN: the admin token is empty",
        ),
    ] {
        let (code, stderr) = refused_start(extra, env);
        assert_eq!(code, Some(2), "{extra:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(names),
            "{extra:?} {env:?}: {stderr}"
        );
        assert!(
            stderr.contains("openssl rand -hex 32"),
            "says how: {stderr}"
        );
    }

    // The same token from the flag, a file (with its final newline) or the
    // environment: without it 401 and a JSON error, with it 200.
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file = file.to_str().unwrap();
    let broker = Mosquitto::start();
    for (extra, env) in [
        (&["--admin-token", TOKEN][..], &[][..]),
        (&["--admin-token-file", file], &[]),
        (&[], &[("SLUICE_ADMIN_TOKEN", TOKEN)]),
    ] {
        let proxy = Proxy::start_with(
            &[("app", broker.addr())],
            extra,
            [0, 0, 0, 0],
            env,
            Some(TOKEN.to_owned()),
        );
        for token in [None, Some("0000000000000000")] {
            let (status, body) = http(proxy.admin, "GET", "/upstreams", None, token).unwrap();
            assert_eq!(status, 401, "{extra:?} {env:?} {token:?}: {body}");
            let body: Value = serde_json::from_str(&body).expect("a JSON error");
            assert_eq!(body["code"], "UNAUTHORIZED", "{body}");
        }
        assert_eq!(proxy.ok("GET", "/upstreams", None)[0]["name"], "app");
        assert_eq!(proxy.call("GET", "/readyz", None).0, 200);
    }
}

#[test]
fn evacuation_refuses_new_connections_until_deleted() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(
        &[("app", broker.addr())],
        &["--server-reference", "next:1883"],
    );
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 0], "accepted before");
    let started = proxy.ok(
        "POST",
        "/evacuation",
        Some(r#"{"conn_evict_rate": 200, "sess_evict_rate": 200, "wait_takeover": 0, "wait_health_check": 0}"#),
    );
    assert_eq!(started["connection_eviction_rate"], 200);
    let (status, err) = proxy.call("POST", "/evacuation", Some(r#"{"conn_evict_rate": 5}"#));
    assert_eq!(status, 409, "{err}");
    assert_eq!(proxy.call("GET", "/readyz", None).0, 503);
    wait_until("prohibiting", Duration::from_secs(5), || {
        proxy.ok("GET", "/upstreams/app/evacuation", None)["state"] == "prohibiting"
    });
    // Refusals: MQTT 3.1.1 return code 3; MQTT 5 0x9C with the Server Reference.
    let (v3, closed) = connack(&proxy, 4);
    assert_eq!(v3, [0x20, 2, 0, 3]);
    assert!(closed, "closed cleanly after the refusal");
    let (v5, closed) = connack(&proxy, 5);
    assert_eq!(&v5[..4], &[0x20, v5[1], 0, 0x9C], "{v5:?}");
    assert!(
        v5.windows(9).any(|w| w == b"next:1883"),
        "server reference in {v5:?}"
    );
    assert!(closed);
    let m = proxy.metrics();
    assert!(
        m.contains(r#"sluice_refused_connections_total{upstream="app",reason="evacuating"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"sluice_evacuation_state{upstream="app",state="prohibiting"} 1"#),
        "{m}"
    );

    let stopped = proxy.ok("DELETE", "/evacuation", None);
    assert_eq!(stopped["state"], "disabled");
    assert_eq!(proxy.call("GET", "/readyz", None).0, 200);
    assert_eq!(connack(&proxy, 5).0[3], 0, "accepted again");

    // Out of the serving set: not ready, refused; back in: served.
    proxy.set_serving("app", false);
    assert_eq!(proxy.call("GET", "/readyz", None).0, 503);
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 3]);
    proxy.set_serving("app", true);
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 0]);
    let list = proxy.ok("GET", "/upstreams", None);
    assert_eq!(list[0]["name"], "app");
    assert_eq!(list[0]["serving"], true);
}

#[test]
fn unreachable_upstream_gets_connack_unavailable_and_is_probed_back() {
    let port = support::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::start(&[("app", addr)], &["--probe-interval", "0.1"]);
    let (v5, closed) = connack(&proxy, 5);
    assert_eq!(&v5[..4], &[0x20, 3, 0, 0x88], "server unavailable");
    assert!(closed);
    assert_eq!(proxy.ok("GET", "/upstreams/app", None)["healthy"], false);
    assert_eq!(proxy.call("GET", "/readyz", None).0, 503);
    let _broker = Mosquitto::start_on(port);
    wait_until(
        "the probe to see the upstream back",
        Duration::from_secs(5),
        || proxy.ok("GET", "/upstreams/app", None)["healthy"] == true,
    );
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 0]);
}
