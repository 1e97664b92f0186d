//! `sluice proxy --accept-unix PATH`: connections handed over as file
//! descriptors (SCM_RIGHTS) are served like ones accepted on `--listen`.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice_api::admin::{UpstreamView, path};
use support::proxy_extra::http;
use support::{ChildGuard, TempDir, free_port, sluice_bin, wait_for_port, wait_until};

/// An MQTT 3.1.1 CONNECT with client id "a", clean session, keep-alive 60 s.
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a',
];

#[test]
fn a_handed_over_socket_is_proxied_and_counted() {
    let dir = TempDir::new("handoff");
    let broker_port = free_port();
    let _broker = ChildGuard(
        Command::new(sluice_bin())
            .args(["broker", "--port", &broker_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], broker_port)),
        Duration::from_secs(10),
    );

    let socket = dir.0.join("a.sock");
    std::fs::write(&socket, b"stale").unwrap(); // a killed run's leftover
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _proxy = ChildGuard(
        Command::new(sluice_bin())
            .arg("proxy")
            .arg("--accept-unix")
            .arg(&socket)
            .args(["--upstream", &format!("a=127.0.0.1:{broker_port}")])
            .args(["--admin", &admin.to_string(), "--protocol", "mqtt"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the proxy's admin API", Duration::from_secs(15), || {
        http(admin, "GET", path::HEALTHZ, None, None).is_ok_and(|(s, _)| s == 200)
    });

    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (accepted, _) = front.accept().unwrap();
    let link = UnixStream::connect(&socket).unwrap();
    sluice_proxy::handoff::send_fd(&link, accepted.as_fd()).unwrap();
    drop(accepted); // the front keeps nothing

    client.write_all(&CONNECT).unwrap();
    let mut connack = [0u8; 4];
    client.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    wait_until("the connection counted", Duration::from_secs(10), || {
        let (_, body) = http(admin, "GET", &path::upstream("a"), None, None).unwrap();
        serde_json::from_str::<UpstreamView>(&body)
            .unwrap()
            .connections
            == 1
    });
    drop(client);
    wait_until("the connection gone", Duration::from_secs(10), || {
        let (_, body) = http(admin, "GET", &path::upstream("a"), None, None).unwrap();
        serde_json::from_str::<UpstreamView>(&body)
            .unwrap()
            .connections
            == 0
    });
}

#[test]
fn neither_listen_nor_accept_unix_is_refused_with_both_names() {
    let out = Command::new(sluice_bin())
        .args([
            "proxy",
            "--upstream",
            "a=127.0.0.1:1883",
            "--admin",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen") && err.contains("--accept-unix"),
        "{err}"
    );
}
