//! Real MQTT clients behind the proxy (rumqttc, paho-mqtt, mosquitto_sub, each in
//! MQTT 3.1.1 and 5) against a real broker: each is evicted and reconnects by
//! itself; and the evidence behind the default MQTT 5 eviction mode.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::admin::{EvacuationRequest, path};
use support::proxy_extra::{ClientStats, LineClient, Proxy, publish, rumqttc_client};
use support::{Mosquitto, wait_until};

/// How a client is observed, whatever it is.
enum Client {
    Rumqttc(Arc<ClientStats>),
    Paho(LineClient),
    MosquittoSub(LineClient),
}

impl Client {
    fn start(
        kind: &str,
        rt: &tokio::runtime::Runtime,
        port: u16,
        id: &str,
        v5: bool,
        topic: &str,
    ) -> Client {
        match kind {
            "rumqttc" => {
                let stats = Arc::new(ClientStats::default());
                rt.spawn(rumqttc_client(
                    port,
                    id.into(),
                    v5,
                    topic.into(),
                    Arc::clone(&stats),
                ));
                Client::Rumqttc(stats)
            }
            "paho" => Client::Paho(LineClient::paho(port, id, v5, topic, 120)),
            _ => Client::MosquittoSub(LineClient::mosquitto_sub(port, id, v5, topic)),
        }
    }

    /// Successful connects so far, as the client itself reports them.
    fn connects(&self) -> usize {
        match self {
            Client::Rumqttc(s) => s.connacks() as usize,
            Client::Paho(p) => p.count("connected rc=0"),
            Client::MosquittoSub(m) => m.count("received CONNACK (0)"),
        }
    }

    /// Messages received with `payload`.
    fn received(&self, payload: &str) -> bool {
        match self {
            Client::Rumqttc(s) => s.messages() > 0,
            Client::Paho(p) => p.count(&format!("payload={payload}")) > 0,
            Client::MosquittoSub(m) => m.lines().iter().any(|l| l == payload),
        }
    }

    fn output(&self) -> String {
        match self {
            Client::Rumqttc(s) => format!("{s:?}"),
            Client::Paho(c) | Client::MosquittoSub(c) => c.lines().join("\n"),
        }
    }
}

const KINDS: [&str; 3] = ["rumqttc", "paho", "mosquitto_sub"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Moves every connection from `from` to `to`: `to` serves, `from` leaves the
/// serving set and is evacuated with `mode` (None: the proxy's default).
fn move_all(proxy: &Proxy, from: &str, to: &str, mode: Option<&str>) {
    proxy.ok("DELETE", &path::upstream_evacuation(to), None);
    proxy.set_serving(to, true);
    proxy.set_serving(from, false);
    proxy.start_evacuation(
        &path::upstream_evacuation(from),
        &EvacuationRequest {
            wait_takeover: Some(0),
            mqtt5_evict: mode.map(str::to_owned),
            ..EvacuationRequest::at_rate(50)
        },
    );
}

#[test]
fn every_real_client_is_evicted_once_and_reconnects_by_itself() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let proxy = Proxy::start(&[("a", a.addr()), ("b", b.addr())], &[]);
    proxy.set_serving("b", false);
    let rt = runtime();
    let port = proxy.listen.port();
    let mut clients = Vec::new();
    for kind in KINDS {
        for v5 in [false, true] {
            let name = format!("{kind}-v{}", if v5 { 5 } else { 3 });
            let topic = format!("clients/{name}");
            clients.push((
                name.clone(),
                topic.clone(),
                Client::start(kind, &rt, port, &name, v5, &topic),
            ));
        }
    }
    let n = clients.len() as u64;
    wait_until(
        "every client connected through a",
        Duration::from_secs(20),
        || clients.iter().all(|(_, _, c)| c.connects() == 1) && proxy.connections("a") == n,
    );

    move_all(&proxy, "a", "b", None);
    wait_until(
        "every client reconnected through b",
        Duration::from_secs(20),
        || clients.iter().all(|(_, _, c)| c.connects() == 2) && proxy.connections("b") == n,
    );
    // Each is really back: a message published on b reaches it (re-publish
    // until the client's new subscription is in place).
    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, topic, client) in &clients {
        while !client.received("after-move") {
            assert!(
                Instant::now() < deadline,
                "{name} got no message after the move:\n{}",
                client.output()
            );
            publish(b.port, topic, "after-move");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (name, _, client) in &mut clients {
        assert_eq!(client.connects(), 2, "{name}:\n{}", client.output());
        match client {
            Client::Rumqttc(s) => assert_eq!(s.disconnects(), 1, "{name}"),
            Client::Paho(p) => assert_eq!(
                p.count("disconnected"),
                1,
                "{name}:\n{}",
                p.lines().join("\n")
            ),
            Client::MosquittoSub(m) => {
                assert!(m.running(), "{name} exited:\n{}", m.lines().join("\n"))
            }
        }
    }
    assert_eq!(proxy.connections("a"), 0);
    drop(rt);
}

/// For each MQTT 5 eviction mode, whether each real MQTT 5 client reconnects by
/// itself. Prints the table documented in docs/proxy.md and checks that the
/// default mode keeps every client reconnecting.
#[test]
fn mqtt5_eviction_modes_evidence() {
    let mut table = Vec::new();
    for mode in ["disconnect-9c", "disconnect-8b", "close"] {
        // Everything fresh per mode, so that no client of one mode blurs the next.
        let (a, b) = (Mosquitto::start(), Mosquitto::start());
        let proxy = Proxy::start(&[("a", a.addr()), ("b", b.addr())], &[]);
        proxy.set_serving("b", false);
        let rt = runtime();
        let clients: Vec<(&str, Client)> = KINDS
            .iter()
            .map(|kind| {
                let id = format!("evidence-{kind}");
                (
                    *kind,
                    Client::start(kind, &rt, proxy.listen.port(), &id, true, "evidence"),
                )
            })
            .collect();
        wait_until(
            &format!("clients connected through a ({mode})"),
            Duration::from_secs(20),
            || clients.iter().all(|(_, c)| c.connects() == 1) && proxy.connections("a") == 3,
        );
        move_all(&proxy, "a", "b", Some(mode));
        // paho and libmosquitto wait about 1 s before reconnecting; 6 s is ample.
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline && !clients.iter().all(|(_, c)| c.connects() == 2) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let row: Vec<(&str, bool)> = clients
            .iter()
            .map(|(k, c)| (*k, c.connects() == 2))
            .collect();
        table.push((mode, row));
    }
    println!("| mode | rumqttc v5 | paho-mqtt v5 | mosquitto_sub -V 5 |");
    println!("|---|---|---|---|");
    for (mode, row) in &table {
        let cells: Vec<&str> = row
            .iter()
            .map(|(_, ok)| if *ok { "reconnects" } else { "stops" })
            .collect();
        println!("| {mode} | {} |", cells.join(" | "));
    }
    let default = table
        .iter()
        .find(|(m, _)| *m == "close")
        .expect("close row");
    assert!(
        default.1.iter().all(|(_, ok)| *ok),
        "the default mode must keep every client reconnecting: {table:?}"
    );
}

/// The proxy tells the broker an evicted client left normally (DISCONNECT at a
/// packet boundary), so its will, meant for a client that died, is not published
/// for one that only moves.
#[test]
fn an_evicted_clients_will_is_not_published() {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(&[("app", broker.addr())], &[]);
    let watcher = LineClient::mosquitto_sub(broker.port, "will-watcher", false, "wills/#");
    wait_until("the watcher to subscribe", Duration::from_secs(10), || {
        watcher.count("received SUBACK") == 1
    });
    let rt = runtime();
    let connected: Vec<Arc<ClientStats>> = [false, true]
        .into_iter()
        .map(|v5| {
            let stats = Arc::new(ClientStats::default());
            let s = Arc::clone(&stats);
            let port = proxy.listen.port();
            rt.spawn(async move {
                let id = format!("will-v{}", if v5 { 5 } else { 3 });
                if v5 {
                    use rumqttc::v5::mqttbytes::{QoS, v5::LastWill};
                    let mut o = rumqttc::v5::MqttOptions::new(&id, "127.0.0.1", port);
                    o.set_last_will(LastWill::new(
                        format!("wills/{id}"),
                        "died",
                        QoS::AtMostOnce,
                        false,
                        None,
                    ));
                    let (_c, mut ev) = rumqttc::v5::AsyncClient::new(o, 8);
                    while let Ok(e) = ev.poll().await {
                        if let rumqttc::v5::Event::Incoming(
                            rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_),
                        ) = e
                        {
                            s.connacks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                } else {
                    let mut o = rumqttc::MqttOptions::new(&id, "127.0.0.1", port);
                    o.set_last_will(rumqttc::LastWill::new(
                        format!("wills/{id}"),
                        "died",
                        rumqttc::QoS::AtMostOnce,
                        false,
                    ));
                    let (_c, mut ev) = rumqttc::AsyncClient::new(o, 8);
                    while let Ok(e) = ev.poll().await {
                        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = e {
                            s.connacks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
                s.disconnects
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            stats
        })
        .collect();
    wait_until("both clients connected", Duration::from_secs(10), || {
        connected.iter().all(|s| s.connacks() == 1) && proxy.connections("app") == 2
    });
    proxy.start_evacuation(
        path::EVACUATION,
        &EvacuationRequest {
            wait_takeover: Some(0),
            ..EvacuationRequest::at_rate(100)
        },
    );
    wait_until("both clients evicted", Duration::from_secs(10), || {
        connected.iter().all(|s| s.disconnects() == 1) && proxy.connections("app") == 0
    });
    // A marker published after the evictions arrives after any will would have.
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.count("marker") == 0 {
        assert!(
            Instant::now() < deadline,
            "the marker never arrived:\n{}",
            watcher.lines().join("\n")
        );
        publish(broker.port, "wills/marker", "marker");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        watcher.count("died"),
        0,
        "a will was published:\n{}",
        watcher.lines().join("\n")
    );
    drop(rt);
}
