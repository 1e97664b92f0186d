//! The admin API: strict bodies (400 naming the field), 409 on a second start,
//! 401 without the bearer token, no admin API beyond loopback without a strong
//! token (from a flag, a file or the environment), readiness, refusals while evacuating (CONNACK
//! 0x9C with Server Reference for MQTT 5, return code 3 for 3.1.1), and DELETE
//! restoring service.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use sluice_api::admin::{ErrorBody, ErrorCode, EvacuationRequest, UpstreamView, field, path};
use sluice_api::metrics::{EVACUATION_STATE, REFUSED_CONNECTIONS, label};
use sluice_core::engine::EvacuationState;
use support::proxy_extra::{Proxy, http, metric, proxy_command};
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
    use field::{CONN_EVICT_RATE, MQTT5_EVICT, SERVER_REFERENCE, SESS_EVICT_RATE, WAIT_TAKEOVER};
    let typo = &CONN_EVICT_RATE[..CONN_EVICT_RATE.len() - 1];
    let big = json!({ CONN_EVICT_RATE: 1, SERVER_REFERENCE: format!("{}:1", "h".repeat(5000)) })
        .to_string();
    for (body, blamed) in [
        (
            json!({ CONN_EVICT_RATE: 10, typo: 1 }).to_string(),
            Some(typo),
        ),
        (
            json!({ CONN_EVICT_RATE: "fast" }).to_string(),
            Some(CONN_EVICT_RATE),
        ),
        (
            json!({ CONN_EVICT_RATE: 0 }).to_string(),
            Some(CONN_EVICT_RATE),
        ),
        (
            json!({ CONN_EVICT_RATE: 10, WAIT_TAKEOVER: 86401 }).to_string(),
            Some(WAIT_TAKEOVER),
        ),
        (
            json!({ SESS_EVICT_RATE: 10 }).to_string(),
            Some(CONN_EVICT_RATE),
        ),
        (
            json!({ CONN_EVICT_RATE: 10, MQTT5_EVICT: "kick" }).to_string(),
            Some(MQTT5_EVICT),
        ),
        (big, None),
        ("not json".to_owned(), None),
    ] {
        let (status, err) = proxy.error("POST", path::EVACUATION, Some(&body));
        assert_eq!(status, 400, "{body}: {err:?}");
        assert_eq!(err.code, ErrorCode::BadRequest, "{err:?}");
        assert!(!err.message.is_empty(), "{err:?}");
        if let Some(blamed) = blamed {
            assert_eq!(err.field.as_deref(), Some(blamed), "{body}: {err:?}");
            assert!(err.message.contains(blamed), "{err:?}");
        }
    }
    let (status, err) = proxy.error(
        "PUT",
        &path::upstream("app"),
        Some(&json!({ field::SERVING: "yes" }).to_string()),
    );
    assert_eq!(
        (status, err.field.as_deref()),
        (400, Some(field::SERVING)),
        "{err:?}"
    );
    let (status, err) = proxy.error(
        "PUT",
        &path::upstream("nope"),
        Some(&json!({ field::SERVING: true }).to_string()),
    );
    assert_eq!((status, err.code), (404, ErrorCode::NotFound));
    assert_eq!(
        proxy.evacuation(path::EVACUATION).state,
        EvacuationState::Disabled,
        "nothing started by bad bodies"
    );
}

#[test]
fn token_is_required_except_for_probes() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(&[("app", broker.addr())], &["--admin-token", TOKEN]);
    for path in [path::UPSTREAMS, path::EVACUATION, path::METRICS] {
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
    let start = serde_json::to_string(&EvacuationRequest::at_rate(1)).unwrap();
    let (status, _) = http(proxy.admin, "POST", path::EVACUATION, Some(&start), None).unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        proxy.evacuation(path::EVACUATION).state,
        EvacuationState::Disabled
    );
    for path in [path::HEALTHZ, path::READYZ] {
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
            let (status, body) = http(proxy.admin, "GET", path::UPSTREAMS, None, token).unwrap();
            assert_eq!(status, 401, "{extra:?} {env:?} {token:?}: {body}");
            let body: ErrorBody = serde_json::from_str(&body).expect("a JSON error");
            assert_eq!(body.code, ErrorCode::Unauthorized, "{body:?}");
        }
        assert_eq!(proxy.upstream("app").name, "app");
        assert_eq!(proxy.call("GET", path::READYZ, None).0, 200);
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
    let started = proxy.start_evacuation(
        path::EVACUATION,
        &EvacuationRequest {
            sess_evict_rate: Some(200),
            wait_takeover: Some(0),
            wait_health_check: Some(0),
            ..EvacuationRequest::at_rate(200)
        },
    );
    assert_eq!(started.connection_eviction_rate, 200);
    let again = serde_json::to_string(&EvacuationRequest::at_rate(5)).unwrap();
    let (status, err) = proxy.error("POST", path::EVACUATION, Some(&again));
    assert_eq!((status, err.code), (409, ErrorCode::Conflict), "{err:?}");
    assert_eq!(proxy.call("GET", path::READYZ, None).0, 503);
    wait_until("prohibiting", Duration::from_secs(5), || {
        proxy.evacuation(&path::upstream_evacuation("app")).state == EvacuationState::Prohibiting
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
    let app = (label::UPSTREAM, "app");
    assert_eq!(
        metric(
            &m,
            REFUSED_CONNECTIONS,
            &[app, (label::REASON, "evacuating")]
        ),
        2.0,
        "{m}"
    );
    let prohibiting = (label::STATE, EvacuationState::Prohibiting.as_str());
    assert_eq!(
        metric(&m, EVACUATION_STATE, &[app, prohibiting]),
        1.0,
        "{m}"
    );

    let stopped: sluice_api::admin::EvacuationStatus =
        proxy.typed("DELETE", path::EVACUATION, None);
    assert_eq!(stopped.state, EvacuationState::Disabled);
    assert_eq!(proxy.call("GET", path::READYZ, None).0, 200);
    assert_eq!(connack(&proxy, 5).0[3], 0, "accepted again");

    // Out of the serving set: not ready, refused; back in: served.
    proxy.set_serving("app", false);
    assert_eq!(proxy.call("GET", path::READYZ, None).0, 503);
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 3]);
    proxy.set_serving("app", true);
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 0]);
    let list: Vec<UpstreamView> = proxy.typed("GET", path::UPSTREAMS, None);
    assert_eq!(list[0].name, "app");
    assert!(list[0].serving);
}

#[test]
fn unreachable_upstream_gets_connack_unavailable_and_is_probed_back() {
    let port = support::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy::start(&[("app", addr)], &["--probe-interval", "0.1"]);
    let (v5, closed) = connack(&proxy, 5);
    assert_eq!(&v5[..4], &[0x20, 3, 0, 0x88], "server unavailable");
    assert!(closed);
    assert!(!proxy.upstream("app").healthy);
    assert_eq!(proxy.call("GET", path::READYZ, None).0, 503);
    let _broker = Mosquitto::start_on(port);
    wait_until(
        "the probe to see the upstream back",
        Duration::from_secs(5),
        || proxy.upstream("app").healthy,
    );
    assert_eq!(connack(&proxy, 4).0, [0x20, 2, 0, 0]);
}
