//! `sluice broker`: a real MQTT broker built in, so the demo needs nothing
//! installed. It is [rumqttd](https://github.com/bytebeamio/rumqtt) (embedded, no TLS, no websocket), with one twist:
//! rumqttd serves one protocol version per listener, and here a single port
//! serves MQTT 3.1.1 and 5 alike, the version chosen per connection from its
//! CONNECT packet, and clients may ask for keep-alive 0 (see [`AnyVersion`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use rumqttd::protocol::v4::{self, V4};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Error as ProtocolError, Packet, Protocol};
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};

use crate::LocalError;

/// Default most simultaneous client connections (this host allows 20,000 open
/// files per process).
pub const DEFAULT_MAX_CONNECTIONS: usize = 19_000;

/// `sluice broker`: a sample MQTT broker (3.1.1 and 5 on one port).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Most simultaneous client connections.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

/// Runs the broker until it fails; blocks the calling thread (it builds its own
/// tokio runtime, so do not call it from inside one: use [`serve_broker`] there).
pub fn run_broker(args: BrokerArgs) -> Result<(), LocalError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(LocalError::Runtime)?;
    runtime.block_on(serve_broker(args))
}

/// Runs the broker on the current tokio runtime until it fails (a port that
/// cannot be listened on returns at once). rumqttd's router runs on a thread of
/// its own, which stays until the process exits.
pub async fn serve_broker(args: BrokerArgs) -> Result<(), LocalError> {
    let listen = SocketAddr::new(args.host, args.port);
    let router = Router::new(0, router_config(args.max_connections));
    let router_tx = router.spawn();
    let mut server = Server::new(server_settings(listen), router_tx, AnyVersion::default());
    tracing::info!(%listen, "starting the MQTT broker (3.1.1 and 5)");
    server
        .start(LinkType::Remote)
        .await
        .map_err(|e| LocalError::Broker {
            listen,
            message: e.to_string(),
        })
}

fn router_config(max_connections: usize) -> RouterConfig {
    RouterConfig {
        max_connections,
        // Packets queued per connection before the router stops reading for it.
        max_outgoing_packet_count: 200,
        // Each topic's in-memory log: 10 segments of 1 MiB at most.
        max_segment_size: 1024 * 1024,
        max_segment_count: 10,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

fn server_settings(listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: "mqtt".into(),
        listen,
        tls: None,
        // rumqttd sleeps this long after each accept; 0 accepts back to back.
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            // Time a new connection has to send CONNECT, counted from accept. Long,
            // because under a connection storm rumqttd's workers can take seconds
            // to read a CONNECT (10 s dropped clients in a 2000-client storm).
            connection_timeout_ms: 60_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// A rumqttd [`Protocol`] that speaks MQTT 3.1.1 or 5, whichever the client's
/// CONNECT asks for. rumqttd gives each connection its own clone, so the version
/// is remembered per connection. It also accepts keep-alive 0, which rumqttd
/// alone refuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyVersion {
    version: Option<Version>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

impl Protocol for AnyVersion {
    fn read_mut(
        &mut self,
        stream: &mut BytesMut,
        max_size: usize,
    ) -> Result<Packet, ProtocolError> {
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = sniff_version(stream, max_size)?;
                self.version = Some(v);
                v
            }
        };
        let mut packet = match version {
            Version::V4 => V4.read_mut(stream, max_size),
            Version::V5 => V5.read_mut(stream, max_size),
        }?;
        if let Packet::Connect(connect, ..) = &mut packet {
            // MQTT allows keep-alive 0 ("never time me out"); rumqttd closes such
            // connections without a CONNACK. Many clients (and load generators)
            // use 0, so treat it as the longest keep-alive MQTT can express.
            if connect.keep_alive == 0 {
                connect.keep_alive = u16::MAX;
            }
        }
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, ProtocolError> {
        match self.version {
            Some(Version::V5) => V5.write(packet, write),
            _ => V4.write(packet, write),
        }
    }
}

/// The protocol level of the first packet (a CONNECT), once it is all buffered:
/// 5 is MQTT 5, anything else goes to the 3.1.1 parser (which rejects what it
/// does not know with rumqttd's usual error).
fn sniff_version(stream: &BytesMut, max_size: usize) -> Result<Version, ProtocolError> {
    let header = v4::check(stream.iter(), max_size)?;
    let level = protocol_level(&stream[..header.frame_length()]);
    Ok(if level == Some(5) {
        Version::V5
    } else {
        Version::V4
    })
}

/// The protocol level byte of a complete CONNECT packet.
fn protocol_level(packet: &[u8]) -> Option<u8> {
    if packet.first()? >> 4 != 1 {
        return None; // not a CONNECT
    }
    // Skip the remaining-length varint (1 to 4 bytes).
    let varint_len = packet[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let rest = packet.get(1 + varint_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    rest.get(2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::protocol_level;

    #[test]
    fn reads_the_protocol_level_of_a_connect() {
        // CONNECT, remaining length 12, "MQTT", level 4.
        let v4 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(protocol_level(&v4), Some(4));
        let mut v5 = v4;
        v5[8] = 5;
        assert_eq!(protocol_level(&v5), Some(5));
        // MQTT 3.1: "MQIsdp", level 3; two-byte remaining length.
        let v3 = [
            0x10, 0x80, 0x01, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3,
        ];
        assert_eq!(protocol_level(&v3), Some(3));
        // Not a CONNECT, truncated, garbage: no panic.
        assert_eq!(protocol_level(&[0x30, 0]), None);
        assert_eq!(protocol_level(&[0x10]), None);
        assert_eq!(protocol_level(&[0x10, 0xff, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(protocol_level(&[]), None);
    }
}
