//! Packet boundaries in a byte stream, without buffering packets.

use super::{DecodeError, PacketType, parse_fixed_header};

/// Incremental packet-boundary tracker over a byte stream.
///
/// It does not buffer packet bodies: it keeps only the few header bytes it
/// has seen of the current packet and the count of body bytes left. A proxy
/// feeds it every chunk it forwards in one direction and asks whether the
/// stream is between two packets, so it can inject a packet there.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    state: State,
}

#[derive(Debug, Default, Clone)]
enum State {
    /// Between two packets (or before the first).
    #[default]
    Boundary,
    /// Inside a fixed header: `len` of its bytes seen so far (1 to 4).
    Header { bytes: [u8; 5], len: usize },
    /// Inside a packet body with `left` bytes (at least 1) still to come.
    Body {
        packet_type: PacketType,
        left: usize,
    },
    /// The stream is not MQTT; every later call reports this error.
    Failed(DecodeError),
}

impl Framer {
    /// A framer positioned at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes a whole chunk; returns how many packets were completed in it.
    /// After an error the framer stays failed (every later call returns the
    /// same error).
    pub fn advance(&mut self, mut chunk: &[u8]) -> Result<usize, DecodeError> {
        let mut completed = 0;
        loop {
            let (used, done) = self.step(chunk)?;
            completed += usize::from(done);
            chunk = chunk.get(used..).unwrap_or_default();
            if chunk.is_empty() {
                return Ok(completed);
            }
        }
    }

    /// Consumes at most up to the end of the first packet that completes
    /// inside `chunk`; returns the number of bytes consumed (`chunk.len()` if
    /// no packet ends in it). Lets a caller split a chunk exactly at a
    /// boundary.
    pub fn advance_to_boundary(&mut self, chunk: &[u8]) -> Result<usize, DecodeError> {
        self.step(chunk).map(|(used, _)| used)
    }

    /// True when no partial packet is pending (also true at the very start).
    /// False once the framer has failed.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Boundary)
    }

    /// The type of the packet currently in progress, once its first byte was
    /// seen.
    pub fn current_packet_type(&self) -> Option<PacketType> {
        match &self.state {
            State::Header { bytes, .. } => PacketType::from_u8(bytes[0] >> 4),
            State::Body { packet_type, .. } => Some(*packet_type),
            State::Boundary | State::Failed(_) => None,
        }
    }

    /// The error that stopped the framer, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Consumes bytes up to and including the end of the first packet that
    /// completes in `chunk`; returns the bytes used and whether a packet
    /// completed.
    fn step(&mut self, chunk: &[u8]) -> Result<(usize, bool), DecodeError> {
        let mut used = 0;
        while let Some(rest) = chunk.get(used..).filter(|r| !r.is_empty()) {
            match &mut self.state {
                State::Failed(e) => return Err(e.clone()),
                State::Body { left, .. } => {
                    let n = rest.len().min(*left);
                    used += n;
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Boundary;
                        return Ok((used, true));
                    }
                }
                State::Boundary => {
                    self.state = State::Header {
                        bytes: [0; 5],
                        len: 0,
                    };
                }
                State::Header { bytes, len } => {
                    // parse_fixed_header decides by the fifth byte at the
                    // latest, so `len` stays below 5 here.
                    let Some(slot) = bytes.get_mut(*len) else {
                        return Err(self.fail(DecodeError::RemainingLengthTooLong));
                    };
                    *slot = rest[0];
                    *len += 1;
                    used += 1;
                    match parse_fixed_header(&bytes[..*len]) {
                        Err(e) => return Err(self.fail(e)),
                        Ok(None) => {}
                        Ok(Some(header)) if header.remaining_len == 0 => {
                            self.state = State::Boundary;
                            return Ok((used, true));
                        }
                        Ok(Some(header)) => {
                            self.state = State::Body {
                                packet_type: header.packet_type,
                                left: header.remaining_len,
                            };
                        }
                    }
                }
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok((used, false)),
        }
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.state = State::Failed(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packet ends found by parsing a whole buffer with parse_fixed_header.
    fn reference_ends(mut buf: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut offset = 0;
        while !buf.is_empty() {
            let len = parse_fixed_header(buf).unwrap().unwrap().packet_len();
            offset += len;
            ends.push(offset);
            buf = &buf[len..];
        }
        ends
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend_from_slice(&[0xc0, 0x00]); // PINGREQ
        s.extend_from_slice(&[0x30, 0x03, 0x00, 0x01, b't']); // PUBLISH
        s.push(0x32); // PUBLISH QoS 1, 200-byte body: two-byte length
        s.extend_from_slice(&[0xc8, 0x01]);
        s.extend(std::iter::repeat_n(0xab, 200));
        s.extend_from_slice(&[0xe0, 0x02, 0x8b, 0x00]); // DISCONNECT
        s.push(0x30); // 16384-byte body: three-byte length
        s.extend_from_slice(&[0x80, 0x80, 0x01]);
        s.extend(std::iter::repeat_n(0, 16_384));
        s.extend_from_slice(&[0xd0, 0x00]); // PINGRESP
        s
    }

    /// Feeds `chunks` and records the offsets where the framer is at a
    /// boundary, checking the packet counts match.
    fn boundaries_seen<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<usize>, usize) {
        let mut framer = Framer::new();
        let (mut offset, mut count, mut seen) = (0, 0, Vec::new());
        for chunk in chunks {
            count += framer.advance(chunk).unwrap();
            offset += chunk.len();
            if framer.at_boundary() {
                seen.push(offset);
            }
        }
        (seen, count)
    }

    #[test]
    fn byte_by_byte_matches_whole_buffer_parse() {
        let s = stream();
        let ends = reference_ends(&s);
        assert_eq!(ends.len(), 6);
        let (seen, count) = boundaries_seen(s.chunks(1));
        assert_eq!(seen, ends);
        assert_eq!(count, ends.len());
    }

    #[test]
    fn random_splits_match_whole_buffer_parse() {
        let s = stream();
        let ends = reference_ends(&s);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            let mut chunks = Vec::new();
            let mut rest = &s[..];
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = (seed % 300) as usize % rest.len() + 1;
                let (a, b) = rest.split_at(n);
                chunks.push(a);
                rest = b;
            }
            let (seen, count) = boundaries_seen(chunks.iter().copied());
            assert_eq!(count, ends.len());
            // A boundary is seen exactly when a chunk ends at a packet end.
            let mut offset = 0;
            let chunk_ends: Vec<usize> = chunks
                .iter()
                .map(|c| {
                    offset += c.len();
                    offset
                })
                .collect();
            let expected: Vec<usize> = chunk_ends
                .into_iter()
                .filter(|o| ends.contains(o))
                .collect();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn advance_to_boundary_splits_exactly() {
        let s = stream();
        let ends = reference_ends(&s);
        let mut framer = Framer::new();
        let mut offset = 0;
        let mut found = Vec::new();
        while offset < s.len() {
            offset += framer.advance_to_boundary(&s[offset..]).unwrap();
            assert!(framer.at_boundary());
            found.push(offset);
        }
        assert_eq!(found, ends);

        // Starting mid-packet: consume up to that packet's end only.
        let mut framer = Framer::new();
        assert_eq!(framer.advance_to_boundary(&s[..4]).unwrap(), 2);
        assert_eq!(framer.advance_to_boundary(&s[2..4]).unwrap(), 2);
        assert!(!framer.at_boundary());
        assert_eq!(framer.current_packet_type(), Some(PacketType::Publish));
        assert_eq!(framer.advance_to_boundary(&s[4..]).unwrap(), 3);
        assert!(framer.at_boundary());
        assert_eq!(framer.current_packet_type(), None);
        // No packet ends in the chunk: all of it is consumed.
        assert_eq!(framer.advance_to_boundary(&s[7..9]).unwrap(), 2);
        assert_eq!(framer.advance_to_boundary(&[]).unwrap(), 0);
    }

    #[test]
    fn current_packet_type_from_the_first_byte() {
        let mut framer = Framer::new();
        assert!(framer.at_boundary());
        assert_eq!(framer.current_packet_type(), None);
        assert_eq!(framer.advance(&[0x82]), Ok(0));
        assert_eq!(framer.current_packet_type(), Some(PacketType::Subscribe));
        assert!(!framer.at_boundary());
        assert_eq!(framer.advance(&[0x01, 0x00, 0xc0]), Ok(1));
        assert_eq!(framer.current_packet_type(), Some(PacketType::PingReq));
    }

    #[test]
    fn errors_are_sticky() {
        let mut framer = Framer::new();
        assert_eq!(
            framer.advance(&[0xc0, 0x00, 0x00]),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert!(!framer.at_boundary());
        assert_eq!(framer.error(), Some(&DecodeError::InvalidPacketType(0)));
        assert_eq!(
            framer.advance(&[0xc0, 0x00]),
            Err(DecodeError::InvalidPacketType(0))
        );
        assert_eq!(framer.advance(&[]), Err(DecodeError::InvalidPacketType(0)));
        assert_eq!(
            framer.advance_to_boundary(&[0xc0]),
            Err(DecodeError::InvalidPacketType(0))
        );

        let mut framer = Framer::new();
        let long = [0x30, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            framer.advance(&long),
            Err(DecodeError::RemainingLengthTooLong)
        );
        assert_eq!(
            framer.advance(&[0x7f]),
            Err(DecodeError::RemainingLengthTooLong)
        );
    }

    #[test]
    fn largest_packet_is_tracked_without_buffering() {
        let mut framer = Framer::new();
        assert_eq!(framer.advance(&[0x30, 0xff, 0xff, 0xff, 0x7f]), Ok(0));
        let body = vec![0u8; 1 << 20];
        for _ in 0..255 {
            assert_eq!(framer.advance(&body), Ok(0));
        }
        assert_eq!(framer.advance(&body[..(1 << 20) - 1]), Ok(1));
        assert!(framer.at_boundary());
    }
}
