//! CONNECT and CONNACK: what a client asks for and what the broker answers.

use super::header::{expect_end, packet_body, write_packet};
use super::properties::{Properties, PropertyValue, SESSION_EXPIRY_INTERVAL, put_u32_property};
use super::{DecodeError, PacketType, ProtocolVersion};
use crate::codec::{put_binary, put_string, put_u8, put_u16, put_var_int_prefixed};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Decoded CONNECT: the fields a proxy and a load generator need.
///
/// The will message and the v5 properties other than Session Expiry Interval
/// are checked and skipped on decode, and never encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client speaks.
    pub version: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5).
    pub clean_start: bool,
    /// Keep alive in seconds.
    pub keep_alive: u16,
    /// v5 property Session Expiry Interval (0x11); `None` when absent or v3.
    pub session_expiry_interval: Option<u32>,
    /// The client identifier (may be empty).
    pub client_id: String,
    /// User name, when the User Name flag is set.
    pub username: Option<String>,
    /// Password, when the Password flag is set.
    pub password: Option<Vec<u8>>,
}

impl Connect {
    /// Decodes `packet`, the whole packet including the fixed header (exactly
    /// one packet). Validates the protocol name ("MQTT" for levels 4 and 5,
    /// "MQIsdp" for 3) and level; parses and skips the will and the v5
    /// properties it does not need. Semantic rules (password without user
    /// name, will QoS) are left to the broker.
    pub fn decode(packet: &[u8]) -> Result<Connect, DecodeError> {
        let mut r = packet_body(packet, PacketType::Connect)?;
        let name = r.string()?;
        if name != "MQTT" && name != "MQIsdp" {
            return Err(DecodeError::InvalidProtocolName);
        }
        let level = r.u8()?;
        let version = ProtocolVersion::from_level(level)
            .ok_or(DecodeError::UnsupportedProtocolLevel(level))?;
        if name != version.protocol_name() {
            return Err(DecodeError::InvalidProtocolName);
        }
        let flags = r.u8()?;
        if flags & RESERVED != 0 {
            return Err(DecodeError::InvalidConnectFlags(flags));
        }
        let keep_alive = r.u16()?;
        let mut session_expiry_interval = None;
        if version.is_v5() {
            for property in Properties::read(&mut r)? {
                let property = property?;
                if let (SESSION_EXPIRY_INTERVAL, PropertyValue::U32(v)) =
                    (property.id, property.value)
                {
                    session_expiry_interval = Some(v);
                }
            }
        }
        let client_id = r.string()?.to_owned();
        if flags & WILL != 0 {
            if version.is_v5() {
                Properties::read(&mut r)?.skip()?;
            }
            r.string()?; // will topic
            r.binary()?; // will payload
        }
        let username = match flags & USERNAME {
            0 => None,
            _ => Some(r.string()?.to_owned()),
        };
        let password = match flags & PASSWORD {
            0 => None,
            _ => Some(r.binary()?.to_vec()),
        };
        expect_end(r.left())?;
        Ok(Connect {
            version,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            session_expiry_interval,
            client_id,
            username,
            password,
        })
    }

    /// Appends a CONNECT packet, with the v5 property Session Expiry Interval
    /// when the version is V5 and `session_expiry_interval` is `Some`.
    /// Strings and the password longer than 65535 bytes are truncated.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let flags = flag(self.clean_start, CLEAN_START)
            | flag(self.username.is_some(), USERNAME)
            | flag(self.password.is_some(), PASSWORD);
        write_packet(out, 0x10, |out| {
            put_string(out, self.version.protocol_name());
            put_u8(out, self.version.level());
            put_u8(out, flags);
            put_u16(out, self.keep_alive);
            if self.version.is_v5() {
                put_var_int_prefixed(out, |out| {
                    if let Some(interval) = self.session_expiry_interval {
                        put_u32_property(out, SESSION_EXPIRY_INTERVAL, interval);
                    }
                });
            }
            put_string(out, &self.client_id);
            if let Some(username) = &self.username {
                put_string(out, username);
            }
            if let Some(password) = &self.password {
                put_binary(out, password);
            }
        });
    }

    /// Whether the client asked the broker to keep its session after
    /// disconnect. v3: `!clean_start`; v5: Session Expiry Interval > 0.
    pub fn wants_persistent_session(&self) -> bool {
        match self.version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => !self.clean_start,
            ProtocolVersion::V5 => self.session_expiry_interval.unwrap_or(0) > 0,
        }
    }
}

/// Decoded CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// The broker resumed a stored session.
    pub session_present: bool,
    /// v5 reason code, or v3 return code.
    pub reason_code: u8,
}

impl ConnAck {
    /// Decodes `packet` (exactly one packet). v5 properties are checked and
    /// skipped; a v5 CONNACK without a property length is accepted.
    pub fn decode(packet: &[u8], version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let mut r = packet_body(packet, PacketType::ConnAck)?;
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(DecodeError::InvalidConnAckFlags(flags));
        }
        let reason_code = r.u8()?;
        if version.is_v5() && !r.is_empty() {
            Properties::read(&mut r)?.skip()?;
        }
        expect_end(r.left())?;
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            reason_code,
        })
    }

    /// Appends a CONNACK; v5 with an empty property list.
    pub fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        write_packet(out, 0x20, |out| {
            put_u8(out, u8::from(self.session_present));
            put_u8(out, self.reason_code);
            if version.is_v5() {
                put_u8(out, 0);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::reason;

    /// A 3.1.1 CONNECT as mosquitto_pub sends it: clean session, keep alive
    /// 60, client id "cli-1", user "u", password "pw".
    const CONNECT_V311: &[u8] = &[
        0x10, 0x18, // CONNECT, remaining length 24
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // "MQTT", level 4
        0xc2, // username, password, clean session
        0x00, 0x3c, // keep alive 60
        0x00, 0x05, b'c', b'l', b'i', b'-', b'1', // client id
        0x00, 0x01, b'u', // username
        0x00, 0x02, b'p', b'w', // password
    ];

    /// A v5 CONNECT with a will: Session Expiry Interval 3600, Receive
    /// Maximum 20, a User Property; will delay 5 and a content type; will
    /// topic "w/t", payload "bye".
    const CONNECT_V5_WILL: &[u8] = &[
        0x10, 0x39, // CONNECT, remaining length 57
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, // "MQTT", level 5
        0x2c, // will retain, will QoS 1, will flag; clean start off
        0x00, 0x1e, // keep alive 30
        0x11, // property length 17
        0x11, 0x00, 0x00, 0x0e, 0x10, // session expiry 3600
        0x21, 0x00, 0x14, // receive maximum 20
        0x26, 0x00, 0x03, b'e', b'n', b'v', 0x00, 0x01, b'x', // user property
        0x00, 0x02, b'c', b'5', // client id "c5"
        0x0e, // will property length 14
        0x18, 0x00, 0x00, 0x00, 0x05, // will delay 5
        0x03, 0x00, 0x06, b't', b'e', b'x', b't', b'/', b'p', // content type
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will payload
    ];

    #[test]
    fn decodes_a_v311_connect() {
        let c = Connect::decode(CONNECT_V311).unwrap();
        assert_eq!(
            c,
            Connect {
                version: ProtocolVersion::V311,
                clean_start: true,
                keep_alive: 60,
                session_expiry_interval: None,
                client_id: "cli-1".into(),
                username: Some("u".into()),
                password: Some(b"pw".to_vec()),
            }
        );
        assert!(!c.wants_persistent_session());
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(out, CONNECT_V311);
    }

    #[test]
    fn decodes_a_v5_connect_with_properties_and_will() {
        assert_eq!(CONNECT_V5_WILL.len(), 59);
        let c = Connect::decode(CONNECT_V5_WILL).unwrap();
        assert_eq!(
            c,
            Connect {
                version: ProtocolVersion::V5,
                clean_start: false,
                keep_alive: 30,
                session_expiry_interval: Some(3600),
                client_id: "c5".into(),
                username: None,
                password: None,
            }
        );
        assert!(c.wants_persistent_session());
    }

    #[test]
    fn decodes_a_v31_connect() {
        let packet = [
            0x10, 0x0f, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x00, 0x00, 0x0a,
            0x00, 0x01, b'a',
        ];
        let c = Connect::decode(&packet).unwrap();
        assert_eq!(
            (c.version, c.clean_start, c.keep_alive),
            (ProtocolVersion::V31, false, 10)
        );
        assert!(c.wants_persistent_session());
    }

    #[test]
    fn rejects_bad_connects() {
        let mut bad_name = CONNECT_V311.to_vec();
        bad_name[5] = b'X';
        assert_eq!(
            Connect::decode(&bad_name),
            Err(DecodeError::InvalidProtocolName)
        );
        let mut name_level_mismatch = CONNECT_V311.to_vec();
        name_level_mismatch[8] = 3;
        assert_eq!(
            Connect::decode(&name_level_mismatch),
            Err(DecodeError::InvalidProtocolName)
        );
        let mut bad_level = CONNECT_V311.to_vec();
        bad_level[8] = 6;
        assert_eq!(
            Connect::decode(&bad_level),
            Err(DecodeError::UnsupportedProtocolLevel(6))
        );
        let mut reserved = CONNECT_V311.to_vec();
        reserved[9] |= 1;
        assert_eq!(
            Connect::decode(&reserved),
            Err(DecodeError::InvalidConnectFlags(0xc3))
        );
        // Claims a password that is not there.
        let mut short = CONNECT_V311.to_vec();
        short.truncate(short.len() - 4);
        short[1] -= 4;
        assert_eq!(Connect::decode(&short), Err(DecodeError::Truncated));
        // Buffer holds more than the packet.
        let mut two = CONNECT_V311.to_vec();
        two.extend_from_slice(&[0xc0, 0x00]);
        assert_eq!(Connect::decode(&two), Err(DecodeError::TrailingBytes(2)));
        // Unknown v5 property id 0x05.
        let mut unknown = CONNECT_V5_WILL.to_vec();
        unknown[13] = 0x05;
        assert_eq!(
            Connect::decode(&unknown),
            Err(DecodeError::UnknownProperty(5))
        );
        assert!(matches!(
            Connect::decode(&[0x20, 0x02, 0x00, 0x00]),
            Err(DecodeError::UnexpectedPacket { .. })
        ));
    }

    #[test]
    fn encodes_session_expiry_for_v5_only() {
        let mut c = Connect::decode(CONNECT_V5_WILL).unwrap();
        c.session_expiry_interval = Some(0);
        assert!(!c.wants_persistent_session());
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(&out[12..18], &[0x05, 0x11, 0, 0, 0, 0]);
        assert_eq!(Connect::decode(&out), Ok(c.clone()));

        c.version = ProtocolVersion::V311;
        out.clear();
        c.encode(&mut out);
        c.session_expiry_interval = None;
        assert_eq!(Connect::decode(&out), Ok(c));
    }

    #[test]
    fn connack_both_versions() {
        // 3.1.1: session present, accepted.
        let v3 = [0x20, 0x02, 0x01, 0x00];
        let ack = ConnAck::decode(&v3, ProtocolVersion::V311).unwrap();
        assert_eq!(
            ack,
            ConnAck {
                session_present: true,
                reason_code: 0
            }
        );
        let mut out = Vec::new();
        ack.encode(ProtocolVersion::V311, &mut out);
        assert_eq!(out, v3);

        // v5: server unavailable, with Assigned Client Identifier and
        // Receive Maximum properties.
        let v5 = [
            0x20, 0x0c, 0x00, 0x88, 0x09, 0x12, 0x00, 0x03, b'a', b'b', b'c', 0x21, 0x00, 0x0a,
        ];
        let ack = ConnAck::decode(&v5, ProtocolVersion::V5).unwrap();
        assert_eq!(
            ack,
            ConnAck {
                session_present: false,
                reason_code: reason::SERVER_UNAVAILABLE
            }
        );
        out.clear();
        ack.encode(ProtocolVersion::V5, &mut out);
        assert_eq!(out, [0x20, 0x03, 0x00, 0x88, 0x00]);
        assert_eq!(ConnAck::decode(&out, ProtocolVersion::V5), Ok(ack));

        // v5 CONNACK without a property length is tolerated.
        assert!(ConnAck::decode(&[0x20, 0x02, 0x00, 0x00], ProtocolVersion::V5).is_ok());
        // A v5 CONNACK read as 3.1.1 has trailing bytes.
        assert_eq!(
            ConnAck::decode(&out, ProtocolVersion::V311),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            ConnAck::decode(&[0x20, 0x02, 0x02, 0x00], ProtocolVersion::V311),
            Err(DecodeError::InvalidConnAckFlags(2))
        );
    }
}
