//! What the proxy understands of MQTT: recognising a client's CONNECT, following
//! packet boundaries so that a packet can be injected between two others, and the
//! few packets it writes itself (CONNACK refusals, DISCONNECTs).

use sluice_wire::codec::{put_string, put_u8, put_var_int, put_var_int_prefixed};
use sluice_wire::mqtt::{
    ConnAck, Connect, Disconnect, Framer, ProtocolVersion, parse_fixed_header,
    properties::SERVER_REFERENCE, reason,
};

use crate::cli::{EvictMode, ProtocolMode};

/// The largest CONNECT the proxy buffers while sniffing. A bigger one is forwarded
/// as opaque TCP in `auto` mode and refused in `mqtt` mode, so that a client cannot
/// make the proxy hold large buffers before a connection is even established.
pub const MAX_CONNECT_LEN: usize = 64 * 1024;

/// What the proxy keeps of a client's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The protocol level the client speaks.
    pub version: ProtocolVersion,
    /// The client identifier (may be empty: the broker assigns one).
    pub client_id: String,
    /// The client asked the broker to keep its session after a disconnect.
    pub persistent: bool,
    /// v5 Session Expiry Interval in seconds (`None`: not sent, or v3).
    pub session_expiry: Option<u32>,
}

/// The verdict on the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes yet to decide.
    NeedMore,
    /// A whole valid CONNECT of `len` bytes starts the stream.
    Mqtt {
        /// What the CONNECT says.
        info: ConnectInfo,
        /// Its length in bytes.
        len: usize,
    },
    /// Not an MQTT CONNECT: `auto` forwards it as opaque TCP.
    Opaque,
    /// Not an MQTT CONNECT in `mqtt` mode: the connection is closed.
    Invalid(String),
}

/// Classifies the first bytes a client sent under `mode` (which is `Auto` or `Mqtt`).
pub fn classify(buf: &[u8], mode: ProtocolMode) -> Sniff {
    let reject = |why: String| match mode {
        ProtocolMode::Mqtt => Sniff::Invalid(why),
        ProtocolMode::Auto | ProtocolMode::Tcp | ProtocolMode::Http => Sniff::Opaque,
    };
    let Some(&first) = buf.first() else {
        return Sniff::NeedMore;
    };
    if first != 0x10 {
        return reject(format!("first byte {first:#04x} is not an MQTT CONNECT"));
    }
    let header = match parse_fixed_header(buf) {
        Ok(None) => return Sniff::NeedMore,
        Ok(Some(h)) => h,
        Err(e) => return reject(e.to_string()),
    };
    let len = header.packet_len();
    if len > MAX_CONNECT_LEN {
        return reject(format!(
            "CONNECT of {len} bytes is larger than the {MAX_CONNECT_LEN} bytes the proxy buffers"
        ));
    }
    if buf.len() < len {
        return Sniff::NeedMore;
    }
    match Connect::decode(&buf[..len]) {
        Ok(c) => Sniff::Mqtt {
            info: ConnectInfo {
                persistent: c.wants_persistent_session(),
                version: c.version,
                session_expiry: c.session_expiry_interval,
                client_id: c.client_id,
            },
            len,
        },
        Err(e) => reject(e.to_string()),
    }
}

/// Follows packet boundaries in one direction of an MQTT connection without
/// buffering packets.
#[derive(Debug, Default)]
pub struct Tracker {
    framer: Framer,
    packets: u64,
}

impl Tracker {
    /// A tracker at the start of a stream.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Feeds forwarded bytes. After an error the stream is treated as opaque.
    pub fn observe(&mut self, chunk: &[u8]) {
        if let Ok(n) = self.framer.advance(chunk) {
            self.packets += n as u64;
        }
    }

    /// Feeds bytes up to and including the end of the first packet that ends in
    /// `chunk`, and returns how many it took (all of them if no packet ends).
    pub fn observe_to_boundary(&mut self, chunk: &[u8]) -> usize {
        match self.framer.advance_to_boundary(chunk) {
            Ok(used) => {
                if self.framer.at_boundary() && used > 0 {
                    self.packets += 1;
                }
                used
            }
            Err(_) => chunk.len(),
        }
    }

    /// Between two packets (and the stream still parses as MQTT).
    pub fn at_boundary(&self) -> bool {
        self.framer.at_boundary()
    }

    /// The stream stopped parsing as MQTT.
    pub fn failed(&self) -> bool {
        self.framer.error().is_some()
    }

    /// A point where the direction may stop: between two packets, or anywhere
    /// once the stream is no longer MQTT.
    pub fn can_stop(&self) -> bool {
        self.at_boundary() || self.failed()
    }

    /// Whole packets seen so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

/// The DISCONNECT an evicted MQTT 5 client receives under `mode`, if any, and the
/// metric reason naming what it was told.
pub fn eviction_packet(
    mode: EvictMode,
    version: ProtocolVersion,
    server_reference: Option<&str>,
) -> (Option<Vec<u8>>, &'static str) {
    let code = match (version, mode) {
        (ProtocolVersion::V5, EvictMode::Disconnect9c) => reason::USE_ANOTHER_SERVER,
        (ProtocolVersion::V5, EvictMode::Disconnect8b) => reason::SERVER_SHUTTING_DOWN,
        _ => return (None, "close"),
    };
    let mut out = Vec::new();
    Disconnect {
        reason_code: code,
        server_reference: server_reference
            .filter(|_| code == reason::USE_ANOTHER_SERVER)
            .map(str::to_owned),
        reason_string: Some("sluice: upstream is being evacuated".to_owned()),
    }
    .encode_v5(&mut out);
    let label = if code == reason::USE_ANOTHER_SERVER {
        "use_another_server"
    } else {
        "server_shutting_down"
    };
    (Some(out), label)
}

/// The DISCONNECT the proxy sends the broker for an evicted client: a normal
/// disconnection, so that the broker does not publish the client's will (the
/// client is not gone, it is moving).
pub fn normal_disconnect(version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    if version.is_v5() {
        Disconnect {
            reason_code: reason::NORMAL,
            ..Disconnect::default()
        }
        .encode_v5(&mut out);
    } else {
        out.extend_from_slice(&[0xE0, 0x00]);
    }
    out
}

/// Why a new MQTT connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The upstream is leaving (evacuation, drain, out of the serving set): go
    /// elsewhere.
    GoElsewhere,
    /// The upstream could not be reached.
    Unavailable,
}

/// The CONNACK that refuses a client: v5 0x9C (with Server Reference when known)
/// or 0x88; v3 return code 3 "server unavailable".
pub fn refusal_connack(
    version: ProtocolVersion,
    kind: RefusalKind,
    server_reference: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::new();
    if !version.is_v5() {
        ConnAck {
            session_present: false,
            reason_code: reason::V3_SERVER_UNAVAILABLE,
        }
        .encode(version, &mut out);
        return out;
    }
    let (code, reference) = match kind {
        RefusalKind::GoElsewhere => (reason::USE_ANOTHER_SERVER, server_reference),
        RefusalKind::Unavailable => (reason::SERVER_UNAVAILABLE, None),
    };
    let mut body = Vec::new();
    put_u8(&mut body, 0);
    put_u8(&mut body, code);
    put_var_int_prefixed(&mut body, |props| {
        if let Some(r) = reference {
            put_u8(props, SERVER_REFERENCE);
            put_string(props, r);
        }
    });
    put_u8(&mut out, 0x20);
    // A CONNACK body is far below the 268 MB a variable byte integer can say.
    put_var_int(&mut out, u32::try_from(body.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(version: ProtocolVersion, clean: bool, expiry: Option<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        Connect {
            version,
            clean_start: clean,
            keep_alive: 30,
            session_expiry_interval: expiry,
            client_id: "c1".into(),
            username: None,
            password: None,
        }
        .encode(&mut out);
        out
    }

    #[test]
    fn whole_connect_is_recognised_byte_by_byte() {
        let bytes = connect(ProtocolVersion::V5, true, Some(300));
        for cut in 0..bytes.len() {
            assert_eq!(
                classify(&bytes[..cut], ProtocolMode::Mqtt),
                Sniff::NeedMore,
                "cut {cut}"
            );
        }
        let mut with_more = bytes.clone();
        with_more.extend_from_slice(&[0xC0, 0x00]);
        match classify(&with_more, ProtocolMode::Auto) {
            Sniff::Mqtt { info, len } => {
                assert_eq!(len, bytes.len());
                assert_eq!(info.client_id, "c1");
                assert!(info.persistent);
                assert_eq!(info.session_expiry, Some(300));
            }
            other => panic!("{other:?}"),
        }
        let v3 = connect(ProtocolVersion::V311, false, None);
        let Sniff::Mqtt { info, .. } = classify(&v3, ProtocolMode::Mqtt) else {
            panic!()
        };
        assert!(info.persistent);
        assert_eq!(info.version, ProtocolVersion::V311);
    }

    #[test]
    fn other_bytes_are_opaque_in_auto_and_invalid_in_mqtt() {
        for garbage in [
            &b"GET / HTTP/1.1\r\n"[..],
            &[0x10, 0xff, 0xff, 0xff, 0xff, 0x01][..], // 5th remaining-length byte
            &[0x10, 0x02, 0x00, 0x00][..],             // too short to be a CONNECT
            &[0x10, 0xff, 0xff, 0x7f][..],             // far too large
        ] {
            assert_eq!(
                classify(garbage, ProtocolMode::Auto),
                Sniff::Opaque,
                "{garbage:?}"
            );
            assert!(
                matches!(classify(garbage, ProtocolMode::Mqtt), Sniff::Invalid(_)),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn tracker_finds_boundaries_and_tolerates_garbage() {
        let mut t = Tracker::new();
        assert!(t.at_boundary());
        t.observe(&[0x20, 0x02, 0x00]); // CONNACK, one byte missing
        assert!(!t.can_stop());
        let pingresp = [0x00, 0xD0, 0x00, 0x30];
        // Up to the end of the CONNACK only.
        assert_eq!(t.observe_to_boundary(&pingresp), 1);
        assert!(t.at_boundary());
        assert_eq!(t.packets(), 1);
        t.observe(&[0xD0, 0x00, 0x30, 0x05]);
        assert_eq!(t.packets(), 2);
        assert!(!t.can_stop());
        t.observe(&[0; 5]); // the PUBLISH's body
        assert_eq!(t.packets(), 3);
        t.observe(&[0x30, 0xff, 0xff, 0xff, 0xff]); // 5th remaining-length byte
        assert!(t.failed() && t.can_stop());
    }

    #[test]
    fn packets_the_proxy_writes() {
        let (pkt, label) =
            eviction_packet(EvictMode::Disconnect9c, ProtocolVersion::V5, Some("b:1883"));
        let d = Disconnect::decode(&pkt.unwrap(), ProtocolVersion::V5).unwrap();
        assert_eq!((d.reason_code, label), (0x9C, "use_another_server"));
        assert_eq!(d.server_reference.as_deref(), Some("b:1883"));
        let (pkt, label) =
            eviction_packet(EvictMode::Disconnect8b, ProtocolVersion::V5, Some("x:1"));
        let d = Disconnect::decode(&pkt.unwrap(), ProtocolVersion::V5).unwrap();
        assert_eq!(
            (d.reason_code, label, d.server_reference),
            (0x8B, "server_shutting_down", None)
        );
        assert_eq!(
            eviction_packet(EvictMode::Disconnect9c, ProtocolVersion::V311, None),
            (None, "close")
        );
        assert_eq!(normal_disconnect(ProtocolVersion::V311), vec![0xE0, 0]);

        let v5 = refusal_connack(ProtocolVersion::V5, RefusalKind::GoElsewhere, Some("b:1"));
        assert_eq!(
            ConnAck::decode(&v5, ProtocolVersion::V5)
                .unwrap()
                .reason_code,
            0x9C
        );
        assert_eq!(&v5[..5], &[0x20, 9, 0, 0x9C, 6]);
        let v3 = refusal_connack(ProtocolVersion::V311, RefusalKind::GoElsewhere, Some("b:1"));
        assert_eq!(v3, vec![0x20, 2, 0, 3]);
        let v5u = refusal_connack(ProtocolVersion::V5, RefusalKind::Unavailable, Some("b:1"));
        assert_eq!(v5u, vec![0x20, 3, 0, 0x88, 0]);
    }
}
