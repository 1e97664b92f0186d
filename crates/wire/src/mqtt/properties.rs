//! MQTT 5 properties (spec section 2.2.2.2).
//!
//! Decoders must walk every property to find the end of a property list, so
//! each identifier's value type must be known even for properties sluice
//! ignores. [`Properties`] iterates over a property list, typed.

use super::DecodeError;
use crate::codec::{CodecError, Reader, put_string, put_u8, put_u32};

/// Payload Format Indicator (byte).
pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
/// Message Expiry Interval (four byte integer).
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
/// Content Type (UTF-8 string).
pub const CONTENT_TYPE: u8 = 0x03;
/// Response Topic (UTF-8 string).
pub const RESPONSE_TOPIC: u8 = 0x08;
/// Correlation Data (binary data).
pub const CORRELATION_DATA: u8 = 0x09;
/// Subscription Identifier (variable byte integer).
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
/// Session Expiry Interval (four byte integer).
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
/// Assigned Client Identifier (UTF-8 string).
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
/// Server Keep Alive (two byte integer).
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
/// Authentication Method (UTF-8 string).
pub const AUTHENTICATION_METHOD: u8 = 0x15;
/// Authentication Data (binary data).
pub const AUTHENTICATION_DATA: u8 = 0x16;
/// Request Problem Information (byte).
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
/// Will Delay Interval (four byte integer).
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
/// Request Response Information (byte).
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
/// Response Information (UTF-8 string).
pub const RESPONSE_INFORMATION: u8 = 0x1A;
/// Server Reference (UTF-8 string).
pub const SERVER_REFERENCE: u8 = 0x1C;
/// Reason String (UTF-8 string).
pub const REASON_STRING: u8 = 0x1F;
/// Receive Maximum (two byte integer).
pub const RECEIVE_MAXIMUM: u8 = 0x21;
/// Topic Alias Maximum (two byte integer).
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Topic Alias (two byte integer).
pub const TOPIC_ALIAS: u8 = 0x23;
/// Maximum QoS (byte).
pub const MAXIMUM_QOS: u8 = 0x24;
/// Retain Available (byte).
pub const RETAIN_AVAILABLE: u8 = 0x25;
/// User Property (UTF-8 string pair).
pub const USER_PROPERTY: u8 = 0x26;
/// Maximum Packet Size (four byte integer).
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Wildcard Subscription Available (byte).
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
/// Subscription Identifier Available (byte).
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
/// Shared Subscription Available (byte).
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// One property's value, typed by its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyValue<'a> {
    /// A byte.
    Byte(u8),
    /// A two byte integer.
    U16(u16),
    /// A four byte integer.
    U32(u32),
    /// A variable byte integer.
    VarInt(u32),
    /// A UTF-8 string.
    String(&'a str),
    /// Binary data.
    Binary(&'a [u8]),
    /// A UTF-8 string pair (User Property).
    StringPair(&'a str, &'a str),
}

/// One decoded property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property<'a> {
    /// The property identifier (one of this module's constants).
    pub id: u8,
    /// Its value.
    pub value: PropertyValue<'a>,
}

/// An iterator over a property list. It yields an error at most once, then
/// stops.
#[derive(Debug, Clone)]
pub struct Properties<'a> {
    reader: Reader<'a>,
}

impl<'a> Properties<'a> {
    /// Reads the property length from `r` and takes that many bytes as the
    /// property list.
    pub fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let len = r.var_int()?;
        let reader = r.sub(len as usize)?;
        Ok(Self { reader })
    }

    /// Checks every property and discards them.
    pub fn skip(mut self) -> Result<(), DecodeError> {
        self.try_for_each(|p| p.map(drop))
    }

    fn next_property(&mut self) -> Result<Property<'a>, DecodeError> {
        let r = &mut self.reader;
        let id = r.var_int().map_err(in_properties)?;
        let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(id))?;
        let value = match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE => r.u8().map(PropertyValue::Byte),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
                r.u16().map(PropertyValue::U16)
            }
            MESSAGE_EXPIRY_INTERVAL
            | SESSION_EXPIRY_INTERVAL
            | WILL_DELAY_INTERVAL
            | MAXIMUM_PACKET_SIZE => r.u32().map(PropertyValue::U32),
            SUBSCRIPTION_IDENTIFIER => r.var_int().map(PropertyValue::VarInt),
            CONTENT_TYPE
            | RESPONSE_TOPIC
            | ASSIGNED_CLIENT_IDENTIFIER
            | AUTHENTICATION_METHOD
            | RESPONSE_INFORMATION
            | SERVER_REFERENCE
            | REASON_STRING => r.string().map(PropertyValue::String),
            CORRELATION_DATA | AUTHENTICATION_DATA => r.binary().map(PropertyValue::Binary),
            USER_PROPERTY => r
                .string()
                .and_then(|k| Ok(PropertyValue::StringPair(k, r.string()?))),
            _ => return Err(DecodeError::UnknownProperty(id.into())),
        };
        Ok(Property {
            id,
            value: value.map_err(in_properties)?,
        })
    }
}

impl<'a> Iterator for Properties<'a> {
    type Item = Result<Property<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.is_empty() {
            return None;
        }
        let item = self.next_property();
        if item.is_err() {
            self.reader.take_rest();
        }
        Some(item)
    }
}

/// A field that runs past the property length is a malformed property list,
/// not a truncated packet.
fn in_properties(e: CodecError) -> DecodeError {
    match e {
        CodecError::InvalidUtf8 => DecodeError::InvalidUtf8,
        CodecError::Truncated | CodecError::VarIntTooLong => DecodeError::MalformedProperties,
    }
}

/// Appends a UTF-8 string property.
pub(crate) fn put_string_property(out: &mut Vec<u8>, id: u8, value: &str) {
    put_u8(out, id);
    put_string(out, value);
}

/// Appends a four byte integer property.
pub(crate) fn put_u32_property(out: &mut Vec<u8>, id: u8, value: u32) {
    put_u8(out, id);
    put_u32(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(bytes: &[u8]) -> Vec<Result<Property<'_>, DecodeError>> {
        let mut r = Reader::new(bytes);
        Properties::read(&mut r).unwrap().collect()
    }

    #[test]
    fn every_type_decodes() {
        let bytes = [
            29, // property length
            0x01, 1, // payload format indicator
            0x21, 0x00, 0x0a, // receive maximum 10
            0x11, 0, 0, 0x0e, 0x10, // session expiry 3600
            0x0b, 0x80, 0x01, // subscription identifier 128
            0x1f, 0, 1, b'r', // reason string
            0x09, 0, 2, 0xff, 0x00, // correlation data
            0x26, 0, 1, b'k', 0, 1, b'v', // user property
        ];
        let got: Vec<_> = props(&bytes).into_iter().map(Result::unwrap).collect();
        let values: Vec<_> = got.iter().map(|p| (p.id, p.value)).collect();
        assert_eq!(
            values,
            [
                (0x01, PropertyValue::Byte(1)),
                (0x21, PropertyValue::U16(10)),
                (0x11, PropertyValue::U32(3600)),
                (0x0b, PropertyValue::VarInt(128)),
                (0x1f, PropertyValue::String("r")),
                (0x09, PropertyValue::Binary(&[0xff, 0x00])),
                (0x26, PropertyValue::StringPair("k", "v")),
            ]
        );
    }

    #[test]
    fn errors_stop_the_iteration() {
        assert_eq!(props(&[2, 0x05, 0]), [Err(DecodeError::UnknownProperty(5))]);
        // Receive Maximum needs two bytes, only one is inside the list.
        assert_eq!(
            props(&[2, 0x21, 0]),
            [Err(DecodeError::MalformedProperties)]
        );
        assert_eq!(
            props(&[4, 0x1f, 0, 1, 0xff]),
            [Err(DecodeError::InvalidUtf8)]
        );
        // Identifier that does not fit a byte.
        assert_eq!(
            props(&[2, 0x80, 0x01]),
            [Err(DecodeError::UnknownProperty(128))]
        );
        // Property length beyond the input is a truncated packet.
        assert_eq!(
            Properties::read(&mut Reader::new(&[3, 1])).err(),
            Some(DecodeError::Truncated)
        );
    }
}
