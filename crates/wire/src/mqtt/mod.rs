//! MQTT 3.1, 3.1.1 and 5 framing: packet boundaries, CONNECT / CONNACK /
//! DISCONNECT, and the few encoders a light client needs.
//!
//! Framing ([`parse_fixed_header`], [`Framer`]) is deliberately lenient: it
//! only needs the packet type nibble and the remaining length, so it forwards
//! packets whose flags or bodies it does not understand. The decoders are
//! strict about structure (lengths, property types, UTF-8, reserved bits) but
//! do not police the protocol's semantic rules; that is the broker's job.

mod connect;
mod disconnect;
mod framer;
mod header;
pub mod properties;
pub mod reason;
mod simple;

pub use connect::{ConnAck, Connect};
pub use disconnect::Disconnect;
pub use framer::Framer;
pub use header::{FixedHeader, parse_fixed_header};
pub use simple::{encode_pingreq, encode_pingresp, encode_publish_qos0, encode_subscribe};

use crate::codec::CodecError;

/// MQTT protocol level from CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// MQTT 3.1: level 3, protocol name "MQIsdp".
    V31,
    /// MQTT 3.1.1: level 4, protocol name "MQTT".
    V311,
    /// MQTT 5: level 5, protocol name "MQTT".
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte carried in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// The version for a CONNECT protocol level byte, if sluice supports it.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(Self::V31),
            4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// The protocol name CONNECT must carry for this level.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            Self::V311 | Self::V5 => "MQTT",
        }
    }

    /// Whether packets carry properties and reason codes (MQTT 5).
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// The control packet type, the high nibble of a packet's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names are the spec's
pub enum PacketType {
    Connect = 1,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
    Auth,
}

impl PacketType {
    const ALL: [Self; 15] = [
        Self::Connect,
        Self::ConnAck,
        Self::Publish,
        Self::PubAck,
        Self::PubRec,
        Self::PubRel,
        Self::PubComp,
        Self::Subscribe,
        Self::SubAck,
        Self::Unsubscribe,
        Self::UnsubAck,
        Self::PingReq,
        Self::PingResp,
        Self::Disconnect,
        Self::Auth,
    ];

    /// The type for a high-nibble value; `None` for 0 (reserved) and above 15.
    pub fn from_u8(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value).checked_sub(1)?).copied()
    }

    /// The flags (low nibble of the first byte) the spec requires for this
    /// type, or `None` for PUBLISH whose flags carry DUP/QoS/RETAIN.
    pub fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// Why a byte sequence is not the MQTT packet the caller expected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The packet type nibble is 0 (reserved).
    #[error("invalid MQTT packet type {0}")]
    InvalidPacketType(u8),
    /// The remaining length has a continuation bit on its fourth byte.
    #[error("MQTT remaining length is longer than 4 bytes")]
    RemainingLengthTooLong,
    /// The packet, or a field inside it, ends early.
    #[error("MQTT packet is truncated")]
    Truncated,
    /// Bytes are left after the packet's last field, or after the packet.
    #[error("{0} unexpected bytes after the end of the MQTT packet")]
    TrailingBytes(usize),
    /// A variable byte integer inside the packet is longer than 4 bytes.
    #[error("variable byte integer is longer than 4 bytes")]
    VarIntTooLong,
    /// A string field is not valid UTF-8.
    #[error("MQTT string is not valid UTF-8")]
    InvalidUtf8,
    /// The packet is not of the type the decoder handles.
    #[error("expected an MQTT {expected:?} packet, got {got:?}")]
    UnexpectedPacket {
        /// What the decoder handles.
        expected: PacketType,
        /// What the bytes are.
        got: PacketType,
    },
    /// The fixed header flags differ from the ones the spec requires.
    #[error("invalid fixed header flags {flags:#06b} for MQTT {packet_type:?}")]
    InvalidFlags {
        /// The packet's type.
        packet_type: PacketType,
        /// The flags it carried.
        flags: u8,
    },
    /// CONNECT's protocol name is neither "MQTT" nor "MQIsdp", or does not
    /// match the protocol level.
    #[error("invalid MQTT protocol name in CONNECT")]
    InvalidProtocolName,
    /// CONNECT's protocol level is not 3, 4 or 5.
    #[error("unsupported MQTT protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT's reserved flag bit is set.
    #[error("reserved bit set in CONNECT flags {0:#010b}")]
    InvalidConnectFlags(u8),
    /// CONNACK's acknowledge flags have a reserved bit set.
    #[error("reserved bits set in CONNACK flags {0:#010b}")]
    InvalidConnAckFlags(u8),
    /// A property identifier the MQTT 5 spec does not define.
    #[error("unknown MQTT 5 property identifier {0:#04x}")]
    UnknownProperty(u32),
    /// A property's value does not fit in the property length.
    #[error("malformed MQTT 5 properties")]
    MalformedProperties,
}

impl From<CodecError> for DecodeError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Truncated => Self::Truncated,
            CodecError::InvalidUtf8 => Self::InvalidUtf8,
            CodecError::VarIntTooLong => Self::VarIntTooLong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_type_numbers_match_the_spec() {
        assert_eq!(PacketType::from_u8(0), None);
        assert_eq!(PacketType::from_u8(16), None);
        for n in 1..=15u8 {
            assert_eq!(PacketType::from_u8(n).map(|t| t as u8), Some(n));
        }
        assert_eq!(PacketType::from_u8(14), Some(PacketType::Disconnect));
    }

    #[test]
    fn protocol_levels() {
        for v in [
            ProtocolVersion::V31,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
        ] {
            assert_eq!(ProtocolVersion::from_level(v.level()), Some(v));
        }
        assert_eq!(ProtocolVersion::from_level(6), None);
        assert_eq!(ProtocolVersion::V311.level(), 4);
    }
}
