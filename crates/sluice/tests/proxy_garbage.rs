//! Garbage from the network never crashes the proxy nor disturbs the other
//! connections: a healthy MQTT client keeps publishing and receiving through
//! the same proxy while random bytes, half CONNECTs, over-long remaining
//! lengths, silent clients and a slow reader come and go.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::proxy_extra::{ClientStats, Proxy};
use support::{Mosquitto, wait_until};

/// A v3.1.1 CONNECT with client id `id` (clean session, keep alive 60).
fn connect_packet(id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

/// Reads until EOF or `timeout`; true if the peer closed (EOF or reset).
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A healthy client publishing to itself every 20 ms through the proxy.
struct Healthy {
    stats: Arc<ClientStats>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU32>,
    _rt: tokio::runtime::Runtime,
}

impl Healthy {
    fn start(proxy: SocketAddr) -> Healthy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stats = Arc::new(ClientStats::default());
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
        );
        let (st, stp, snt) = (Arc::clone(&stats), Arc::clone(&stop), Arc::clone(&sent));
        rt.spawn(async move {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let opts = MqttOptions::new("healthy", "127.0.0.1", proxy.port());
            let (client, mut events) = AsyncClient::new(opts, 64);
            client.subscribe("healthy", QoS::AtMostOnce).await.unwrap();
            let publisher = client.clone();
            tokio::spawn(async move {
                while !stp.load(Ordering::SeqCst) {
                    if publisher
                        .publish("healthy", QoS::AtMostOnce, false, "ping")
                        .await
                        .is_ok()
                    {
                        snt.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        st.connacks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        st.messages.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        st.disconnects.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Healthy {
            stats,
            stop,
            sent,
            _rt: rt,
        }
    }

    /// Waits until 10 more messages arrived than now.
    fn keeps_receiving(&self, what: &str) {
        let before = self.stats.messages();
        wait_until(
            &format!("the healthy client to keep receiving during {what}"),
            Duration::from_secs(10),
            || self.stats.messages() >= before + 10,
        );
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn garbage_never_disturbs_a_healthy_client() {
    let broker = Mosquitto::start();
    let mqtt = Proxy::start(
        &[("broker", broker.addr())],
        &["--protocol", "mqtt", "--connect-timeout", "3"],
    );
    let auto = Proxy::start(
        &[("broker", broker.addr())],
        &["--protocol", "auto", "--connect-timeout", "1"],
    );
    let healthy = Healthy::start(mqtt.listen);
    wait_until(
        "the healthy client to receive",
        Duration::from_secs(10),
        || healthy.stats.messages() > 5,
    );

    // Random bytes, in parallel, to both proxies.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut garbage: Vec<TcpStream> = Vec::new();
    for i in 0..100 {
        let target = if i % 2 == 0 { mqtt.listen } else { auto.listen };
        let mut s = TcpStream::connect(target).unwrap();
        let _ = s.write_all(&random(1 + i * 37));
        garbage.push(s);
    }
    healthy.keeps_receiving("random bytes");
    // In mqtt mode the proxy closes them; in auto mode the broker does.
    for (i, s) in garbage.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(20)),
            "random-bytes connection {i} still open"
        );
    }

    // A 5th remaining-length byte: closed at once in mqtt mode (within
    // milliseconds; the bound only has to tell it from the 3 s CONNECT
    // timeout, with room for a loaded machine).
    let mut s = TcpStream::connect(mqtt.listen).unwrap();
    s.write_all(&[0x10, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_millis(2500)),
        "5-byte remaining length not closed before the timeout"
    );

    // Half a CONNECT, and a client that never sends anything: closed after
    // the 3 s CONNECT timeout, not before, and nobody else notices.
    let connect = connect_packet("half");
    let mut half = TcpStream::connect(mqtt.listen).unwrap();
    half.write_all(&connect[..connect.len() / 2]).unwrap();
    let mut silent = TcpStream::connect(mqtt.listen).unwrap();
    let t0 = Instant::now();
    assert!(
        closed_within(&mut half, Duration::from_secs(20)),
        "half CONNECT never closed"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)),
        "silent client never closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(2800),
        "closed before the CONNECT timeout"
    );
    healthy.keeps_receiving("half CONNECTs and silent clients");

    // A slow reader: subscribes to a flood and never reads. Backpressure must
    // hold the flood in the kernel buffers and the broker, not in the proxy,
    // and must not stall the healthy client.
    let rss_before = vm_rss_kib(mqtt.pid());
    let mut slow = TcpStream::connect(mqtt.listen).unwrap();
    slow.write_all(&connect_packet("slow")).unwrap();
    slow.write_all(&[0x82, 10, 0, 1, 0, 5, b'f', b'l', b'o', b'o', b'd', 0])
        .unwrap();
    // CONNACK (4 bytes) and SUBACK (5 bytes): subscribed; from now on it reads nothing.
    let mut acks = [0u8; 9];
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.read_exact(&mut acks).unwrap();
    assert_eq!(
        (acks[0], acks[4]),
        (0x20, 0x90),
        "CONNACK then SUBACK: {acks:?}"
    );
    let payload = vec![b'x'; 60_000];
    let flood_start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let mut opts = MqttOptions::new("flooder", "127.0.0.1", broker.port);
        opts.set_max_packet_size(200_000, 200_000);
        let (client, mut events) = AsyncClient::new(opts, 64);
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        // ~60 MB offered to a reader that takes none of it.
        for _ in 0..1000 {
            let _ = client
                .publish("flood", QoS::AtMostOnce, false, payload.clone())
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    healthy.keeps_receiving("a slow reader's flood");
    let rss_after = vm_rss_kib(mqtt.pid());
    println!(
        "proxy RSS {rss_before} KiB before the flood, {rss_after} KiB after ({:?})",
        flood_start.elapsed()
    );
    assert!(
        rss_after < rss_before + 20 * 1024,
        "the proxy grew from {rss_before} KiB to {rss_after} KiB behind a slow reader"
    );
    drop(slow);

    // Still alive and healthy, and the healthy client never lost its connection.
    for p in [&mqtt, &auto] {
        let (status, _) = p.call("GET", "/healthz", None);
        assert_eq!(status, 200);
    }
    assert_eq!(healthy.stats.disconnects(), 0);
    assert_eq!(healthy.stats.connacks(), 1);
    assert!(healthy.sent.load(Ordering::SeqCst) > 0);
    healthy.stop.store(true, Ordering::SeqCst);
}
