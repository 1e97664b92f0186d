//! The light MQTT client: CONNECT/CONNACK, optional SUBSCRIBE, keep-alive
//! PINGREQ/PINGRESP, optional QoS 0 publishes, and reading DISCONNECT.

use std::time::Duration;

use sluice_wire::mqtt::{
    ConnAck, Connect, Disconnect, PacketType, encode_pingreq, encode_publish_qos0,
    encode_subscribe, parse_fixed_header, reason,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Conn, Ctx, Ended, cause_of, compact, publish_schedule, read_some, wait_closed};
use crate::config::expand;
use crate::recorder::Cause;

/// What one packet from the server means to the client.
enum Incoming {
    ConnAck(ConnAck),
    Disconnect(Disconnect),
    PingResp,
    Other,
}

/// Takes the first whole packet off `buf`, if there is one.
fn next_packet(ctx: &Ctx, buf: &mut Vec<u8>) -> Result<Option<Incoming>, Cause> {
    let Some(header) = parse_fixed_header(buf).map_err(|_| Cause::ProtocolError)? else {
        return Ok(None);
    };
    let len = header.packet_len();
    if buf.len() < len {
        return Ok(None);
    }
    let version = ctx.cfg.mqtt_version.wire();
    let packet = &buf[..len];
    let incoming = match header.packet_type {
        PacketType::ConnAck => {
            Incoming::ConnAck(ConnAck::decode(packet, version).map_err(|_| Cause::ProtocolError)?)
        }
        PacketType::Disconnect => Incoming::Disconnect(
            // A DISCONNECT we cannot fully decode still ends the connection.
            Disconnect::decode(packet, version).unwrap_or_default(),
        ),
        PacketType::PingResp => Incoming::PingResp,
        _ => Incoming::Other,
    };
    compact(buf, len);
    Ok(Some(incoming))
}

/// Records the Server Reference of a DISCONNECT and returns its cause.
fn disconnect_cause(ctx: &Ctx, d: &Disconnect) -> Cause {
    if let Some(reference) = &d.server_reference {
        ctx.samples.server_reference(reference);
    }
    Cause::ServerDisconnect(d.reason_code)
}

/// Sends CONNECT (and SUBSCRIBE) and waits for an accepting CONNACK.
pub(super) async fn handshake(
    stream: &mut TcpStream,
    ctx: &Ctx,
    index: u32,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), Cause> {
    let cfg = &ctx.cfg;
    let version = cfg.mqtt_version.wire();
    let connect = Connect {
        version,
        clean_start: cfg.clean,
        keep_alive: cfg.keepalive,
        session_expiry_interval: if version.is_v5() {
            cfg.session_expiry
        } else {
            None
        },
        client_id: cfg.client_id_of(index),
        username: cfg.username.clone(),
        password: cfg.password.clone().map(String::into_bytes),
    };
    let mut out = Vec::with_capacity(64);
    connect.encode(&mut out);
    stream.write_all(&out).await.map_err(|e| cause_of(&e))?;
    let wait = async {
        loop {
            while let Some(packet) = next_packet(ctx, buf)? {
                match packet {
                    Incoming::ConnAck(ack) if ack.reason_code == reason::NORMAL => return Ok(()),
                    Incoming::ConnAck(ack) => return Err(Cause::ConnAckRefused(ack.reason_code)),
                    Incoming::Disconnect(d) => return Err(disconnect_cause(ctx, &d)),
                    Incoming::PingResp | Incoming::Other => {}
                }
            }
            stream.readable().await.map_err(|e| cause_of(&e))?;
            match read_some(stream, buf) {
                Ok(0) => return Err(Cause::ClosedByPeer),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(cause_of(&e)),
            }
        }
    };
    tokio::time::timeout_at(deadline, wait)
        .await
        .map_err(|_| Cause::ConnAckTimeout)??;
    if let Some(filter) = &cfg.subscribe {
        out.clear();
        encode_subscribe(1, &expand(filter, index), 0, version, &mut out);
        stream.write_all(&out).await.map_err(|e| cause_of(&e))?;
    }
    Ok(())
}

/// Holds an MQTT connection: keep-alive, publishes, and reading until the
/// server or the network ends it, or the run stops.
pub(super) async fn hold(
    ctx: &Ctx,
    index: u32,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let Conn {
        mut stream,
        mut buf,
    } = conn;
    let cfg = &ctx.cfg;
    let version = cfg.mqtt_version.wire();
    let keepalive = Duration::from_secs(u64::from(cfg.keepalive));
    let mut last_sent = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut publish = publish_schedule(cfg.publish_rate, index);
    let topic = publish.map(|_| expand(&cfg.publish_topic, index));
    let far = Duration::from_secs(86_400 * 365);
    let mut out = Vec::new();
    // Bytes past CONNACK may already hold a DISCONNECT.
    let mut pending = !buf.is_empty();
    loop {
        if pending {
            pending = false;
            loop {
                match next_packet(ctx, &mut buf) {
                    Ok(None) => break,
                    Ok(Some(Incoming::Disconnect(d))) => {
                        return Ended::Lost(disconnect_cause(ctx, &d));
                    }
                    Ok(Some(Incoming::PingResp)) => ping_sent = None,
                    Ok(Some(_)) => {}
                    Err(cause) => return Ended::Lost(cause),
                }
            }
        }
        let ping_at = match (keepalive.is_zero(), ping_sent) {
            (true, _) => last_sent + far,
            (false, Some(sent)) => sent + keepalive,
            (false, None) => last_sent + keepalive,
        };
        let wake = publish.map_or(ping_at, |(_, at)| at.min(ping_at));
        tokio::select! {
            biased;
            _ = crate::stopped(stop) => {
                out.clear();
                if version.is_v5() {
                    Disconnect::default().encode_v5(&mut out);
                } else {
                    out.extend_from_slice(&[0xe0, 0x00]);
                }
                if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await {
                    // The server closes after DISCONNECT; letting it close
                    // first leaves TIME_WAIT (and its port) on its side, so
                    // back-to-back runs do not run out of ephemeral ports.
                    let _ = tokio::time::timeout(Duration::from_secs(1), wait_closed(&stream, &mut buf)).await;
                }
                return Ended::Stopped;
            }
            ready = stream.readable() => {
                if let Err(e) = ready {
                    return Ended::Lost(cause_of(&e));
                }
                match read_some(&stream, &mut buf) {
                    Ok(0) => return Ended::Lost(Cause::ClosedByPeer),
                    Ok(_) => pending = true,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Ended::Lost(cause_of(&e)),
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                out.clear();
                if let Some(sent) = ping_sent {
                    if now >= sent + keepalive {
                        return Ended::Lost(Cause::KeepAliveTimeout);
                    }
                } else if !keepalive.is_zero() && now >= last_sent + keepalive {
                    encode_pingreq(&mut out);
                    ping_sent = Some(now);
                }
                if let (Some((every, at)), Some(topic)) = (publish.as_mut(), topic.as_deref())
                    && now >= *at
                {
                    encode_publish_qos0(topic, &payload(cfg.payload_size), version, &mut out);
                    *at += *every;
                    if *at < now {
                        *at = now + *every;
                    }
                }
                if !out.is_empty() {
                    last_sent = now;
                    if let Err(e) = stream.write_all(&out).await {
                        return Ended::Lost(cause_of(&e));
                    }
                }
            }
        }
    }
}

/// A payload of `size` bytes.
pub(super) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}
