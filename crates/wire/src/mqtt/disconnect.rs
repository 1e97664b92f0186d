//! DISCONNECT: how sluice asks an MQTT 5 client to reconnect elsewhere.

use super::header::{expect_end, packet_body, write_packet};
use super::properties::{
    Properties, PropertyValue, REASON_STRING, SERVER_REFERENCE, put_string_property,
};
use super::{DecodeError, PacketType, ProtocolVersion};
use crate::codec::{put_u8, put_var_int_prefixed};

/// A DISCONNECT with the fields sluice sends and reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// v5 reason code (see [`super::reason`]); 0 for v3.
    pub reason_code: u8,
    /// v5 property Server Reference (0x1C): where the client should go.
    pub server_reference: Option<String>,
    /// v5 property Reason String (0x1F): a human-readable cause.
    pub reason_string: Option<String>,
}

impl Disconnect {
    /// Appends a v5 DISCONNECT: reason code, then the property list (Server
    /// Reference, then Reason String, each when `Some`). The reason code and
    /// property length are always written, even when the spec would allow
    /// omitting them. Strings longer than 65535 bytes are truncated.
    pub fn encode_v5(&self, out: &mut Vec<u8>) {
        write_packet(out, 0xe0, |out| {
            put_u8(out, self.reason_code);
            put_var_int_prefixed(out, |out| {
                if let Some(reference) = &self.server_reference {
                    put_string_property(out, SERVER_REFERENCE, reference);
                }
                if let Some(reason) = &self.reason_string {
                    put_string_property(out, REASON_STRING, reason);
                }
            });
        });
    }

    /// Decodes a DISCONNECT (exactly one packet) of either version. v3: no
    /// body, reason 0. v5: remaining length 0 means reason 0x00, 1 means a
    /// reason only, more means reason and properties; properties other than
    /// Server Reference and Reason String are checked and skipped.
    pub fn decode(packet: &[u8], version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
        let mut r = packet_body(packet, PacketType::Disconnect)?;
        let mut disconnect = Disconnect::default();
        if version.is_v5() && !r.is_empty() {
            disconnect.reason_code = r.u8()?;
            if !r.is_empty() {
                for property in Properties::read(&mut r)? {
                    let property = property?;
                    let PropertyValue::String(s) = property.value else {
                        continue;
                    };
                    match property.id {
                        SERVER_REFERENCE => disconnect.server_reference = Some(s.to_owned()),
                        REASON_STRING => disconnect.reason_string = Some(s.to_owned()),
                        _ => {}
                    }
                }
            }
        }
        expect_end(r.left())?;
        Ok(disconnect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::reason;

    fn encoded(d: &Disconnect) -> Vec<u8> {
        let mut out = Vec::new();
        d.encode_v5(&mut out);
        out
    }

    #[test]
    fn server_shutting_down_bytes() {
        let d = Disconnect {
            reason_code: reason::SERVER_SHUTTING_DOWN,
            ..Default::default()
        };
        assert_eq!(encoded(&d), [0xe0, 0x02, 0x8b, 0x00]);
    }

    #[test]
    fn use_another_server_bytes() {
        let d = Disconnect {
            reason_code: reason::USE_ANOTHER_SERVER,
            server_reference: Some("127.0.0.1:18832".into()),
            reason_string: None,
        };
        let expected = [
            0xe0, 0x14, 0x9c, 0x12, 0x1c, 0x00, 0x0f, 0x31, 0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30,
            0x2e, 0x31, 0x3a, 0x31, 0x38, 0x38, 0x33, 0x32,
        ];
        assert_eq!(encoded(&d), expected);
        assert_eq!(Disconnect::decode(&expected, ProtocolVersion::V5), Ok(d));
    }

    #[test]
    fn decodes_every_v5_length_form() {
        let v5 = ProtocolVersion::V5;
        assert_eq!(
            Disconnect::decode(&[0xe0, 0x00], v5),
            Ok(Disconnect::default())
        );
        let reason_only = Disconnect::decode(&[0xe0, 0x01, 0x8b], v5).unwrap();
        assert_eq!(reason_only.reason_code, 0x8b);
        // A User Property cut off by the property length.
        let packet = [
            0xe0, 0x0e, 0x9d, 0x0c, 0x1f, 0x00, 0x02, b'u', b'p', 0x26, 0x00, 0x01, b'k', 0x00,
            0x00, 0x26,
        ];
        let d = Disconnect::decode(&packet, v5);
        assert_eq!(d, Err(DecodeError::MalformedProperties));
        // Reason String plus a User Property that is skipped.
        let packet = [
            0xe0, 0x0d, 0x9d, 0x0b, 0x1f, 0x00, 0x02, b'u', b'p', 0x26, 0x00, 0x01, b'k', 0x00,
            0x00,
        ];
        let d = Disconnect::decode(&packet, v5).unwrap();
        assert_eq!(d.reason_code, reason::SERVER_MOVED);
        assert_eq!(d.reason_string.as_deref(), Some("up"));
        assert_eq!(d.server_reference, None);
    }

    #[test]
    fn decodes_v3() {
        let v3 = ProtocolVersion::V311;
        assert_eq!(
            Disconnect::decode(&[0xe0, 0x00], v3),
            Ok(Disconnect::default())
        );
        assert_eq!(
            Disconnect::decode(&[0xe0, 0x01, 0x8b], v3),
            Err(DecodeError::TrailingBytes(1))
        );
    }
}
