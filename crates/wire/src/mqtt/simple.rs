//! Encoders for the packets a light client (the load generator) sends.

use super::ProtocolVersion;
use super::header::write_packet;
use crate::codec::{U16_FIELD_MAX, VAR_INT_MAX, put_string, put_u8, put_u16};

/// Appends a PINGREQ (`c0 00`).
pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xc0, 0x00]);
}

/// Appends a PINGRESP (`d0 00`).
pub fn encode_pingresp(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0xd0, 0x00]);
}

/// Appends a SUBSCRIBE for one topic filter. The options byte is
/// `qos & 0b11` (v5: no other subscription options; empty property list).
pub fn encode_subscribe(
    packet_id: u16,
    topic: &str,
    qos: u8,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) {
    write_packet(out, 0x82, |out| {
        put_u16(out, packet_id);
        if version.is_v5() {
            put_u8(out, 0);
        }
        put_string(out, topic);
        put_u8(out, qos & 0b11);
    });
}

/// Appends a QoS 0 PUBLISH (v5: empty property list). A payload too large
/// for the 268,435,455-byte remaining length is truncated to fit.
pub fn encode_publish_qos0(
    topic: &str,
    payload: &[u8],
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) {
    let fixed = 2 + topic.len().min(U16_FIELD_MAX) + usize::from(version.is_v5());
    let payload = &payload[..payload.len().min(VAR_INT_MAX as usize - fixed)];
    write_packet(out, 0x30, |out| {
        put_string(out, topic);
        if version.is_v5() {
            put_u8(out, 0);
        }
        out.extend_from_slice(payload);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings() {
        let mut out = Vec::new();
        encode_pingreq(&mut out);
        encode_pingresp(&mut out);
        assert_eq!(out, [0xc0, 0x00, 0xd0, 0x00]);
    }

    #[test]
    fn subscribe_both_versions() {
        let mut out = Vec::new();
        encode_subscribe(7, "a/#", 1, ProtocolVersion::V311, &mut out);
        assert_eq!(
            out,
            [0x82, 0x08, 0x00, 0x07, 0x00, 0x03, b'a', b'/', b'#', 0x01]
        );
        out.clear();
        encode_subscribe(7, "a/#", 1, ProtocolVersion::V5, &mut out);
        assert_eq!(
            out,
            [
                0x82, 0x09, 0x00, 0x07, 0x00, 0x00, 0x03, b'a', b'/', b'#', 0x01
            ]
        );
    }

    #[test]
    fn publish_both_versions() {
        let mut out = Vec::new();
        encode_publish_qos0("t", b"hi", ProtocolVersion::V311, &mut out);
        assert_eq!(out, [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i']);
        out.clear();
        encode_publish_qos0("t", b"hi", ProtocolVersion::V5, &mut out);
        assert_eq!(out, [0x30, 0x06, 0x00, 0x01, b't', 0x00, b'h', b'i']);
    }
}
