//! The fixed header every MQTT packet starts with, and the helpers the
//! decoders and encoders share to get at a packet's body.

use super::{DecodeError, PacketType};
#[cfg(doc)]
use crate::codec::VAR_INT_MAX;
use crate::codec::{Reader, put_var_int_prefixed};

/// The first 2 to 5 bytes of an MQTT packet: its type, flags and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The control packet type (high nibble of the first byte).
    pub packet_type: PacketType,
    /// The low nibble of the first byte (PUBLISH: DUP, QoS, RETAIN).
    pub flags: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
    /// Bytes of the packet after the fixed header.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// The whole packet's length: `header_len + remaining_len`.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Parses the fixed header at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. Packet type 0 is an error as soon
/// as the first byte is seen; a remaining length whose fourth byte has the
/// continuation bit set (announcing a fifth byte) is an error as soon as that
/// byte is seen. Flags are reported, not checked.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let type_nibble = first >> 4;
    let packet_type =
        PacketType::from_u8(type_nibble).ok_or(DecodeError::InvalidPacketType(type_nibble))?;
    let mut remaining_len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                packet_type,
                flags: first & 0x0f,
                header_len: 2 + i,
                remaining_len,
            }));
        }
    }
    Err(DecodeError::RemainingLengthTooLong)
}

/// Checks that `packet` is exactly one packet of type `expected` with the
/// flags the spec requires, and returns a reader over its body.
pub(crate) fn packet_body(packet: &[u8], expected: PacketType) -> Result<Reader<'_>, DecodeError> {
    let header = parse_fixed_header(packet)?.ok_or(DecodeError::Truncated)?;
    if header.packet_type != expected {
        return Err(DecodeError::UnexpectedPacket {
            expected,
            got: header.packet_type,
        });
    }
    if let Some(flags) = expected.required_flags()
        && header.flags != flags
    {
        return Err(DecodeError::InvalidFlags {
            packet_type: expected,
            flags: header.flags,
        });
    }
    let body = packet
        .get(header.header_len..header.packet_len())
        .ok_or(DecodeError::Truncated)?;
    expect_end(packet.len() - header.packet_len())?;
    Ok(Reader::new(body))
}

/// `Err(TrailingBytes)` unless `left` is 0.
pub(crate) fn expect_end(left: usize) -> Result<(), DecodeError> {
    match left {
        0 => Ok(()),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

/// Appends a packet: `first_byte`, the remaining length, then whatever
/// `body` writes. The body must stay within [`VAR_INT_MAX`] bytes.
pub(crate) fn write_packet(out: &mut Vec<u8>, first_byte: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(first_byte);
    put_var_int_prefixed(out, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: &[u8]) -> FixedHeader {
        parse_fixed_header(bytes).unwrap().unwrap()
    }

    #[test]
    fn remaining_length_boundaries() {
        for (bytes, header_len, remaining_len) in [
            (&[0x30, 0x00][..], 2, 0),
            (&[0x30, 0x7f], 2, 127),
            (&[0x30, 0x80, 0x01], 3, 128),
            (&[0x30, 0xff, 0x7f], 3, 16_383),
            (&[0x30, 0x80, 0x80, 0x01], 4, 16_384),
            (&[0x30, 0xff, 0xff, 0xff, 0x7f], 5, 268_435_455),
        ] {
            let h = header(bytes);
            assert_eq!(h.packet_type, PacketType::Publish);
            assert_eq!((h.header_len, h.remaining_len), (header_len, remaining_len));
            assert_eq!(h.packet_len(), header_len + remaining_len);
        }
    }

    #[test]
    fn incomplete_headers_need_more_bytes() {
        for bytes in [&[][..], &[0x10], &[0x10, 0x80], &[0x10, 0xff, 0xff, 0xff]] {
            assert_eq!(parse_fixed_header(bytes), Ok(None), "{bytes:x?}");
        }
    }

    #[test]
    fn fifth_length_byte_is_an_error_as_soon_as_announced() {
        let err = Err(DecodeError::RemainingLengthTooLong);
        assert_eq!(parse_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff]), err);
        assert_eq!(
            parse_fixed_header(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]),
            err
        );
    }

    #[test]
    fn type_zero_is_an_error_from_the_first_byte() {
        assert_eq!(
            parse_fixed_header(&[0x00]),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert_eq!(
            parse_fixed_header(&[0x0f, 0x00]),
            Err(DecodeError::InvalidPacketType(0))
        );
    }

    #[test]
    fn flags_and_type_are_split() {
        let h = header(&[0x3b, 0x00]);
        assert_eq!((h.packet_type, h.flags), (PacketType::Publish, 0x0b));
        assert_eq!(header(&[0xf0, 0x00]).packet_type, PacketType::Auth);
    }

    #[test]
    fn write_packet_prefixes_the_length() {
        let mut out = vec![0xaa];
        write_packet(&mut out, 0x30, |o| o.extend_from_slice(&[7; 200]));
        assert_eq!(&out[..4], &[0xaa, 0x30, 0xc8, 0x01]);
        assert_eq!(out.len(), 1 + 3 + 200);
    }

    #[test]
    fn packet_body_checks_type_flags_and_length() {
        assert_eq!(
            packet_body(&[0xe0, 0x00], PacketType::Connect).err(),
            Some(DecodeError::UnexpectedPacket {
                expected: PacketType::Connect,
                got: PacketType::Disconnect
            })
        );
        assert_eq!(
            packet_body(&[0xe1, 0x00], PacketType::Disconnect).err(),
            Some(DecodeError::InvalidFlags {
                packet_type: PacketType::Disconnect,
                flags: 1
            })
        );
        assert_eq!(
            packet_body(&[0xe0, 0x02, 0x00], PacketType::Disconnect).err(),
            Some(DecodeError::Truncated)
        );
        assert_eq!(
            packet_body(&[0xe0, 0x00, 0x00], PacketType::Disconnect).err(),
            Some(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            packet_body(&[0xe0, 0x01, 0x8b], PacketType::Disconnect)
                .unwrap()
                .rest(),
            &[0x8b]
        );
    }
}
