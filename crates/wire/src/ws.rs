//! WebSocket frame boundaries (RFC 6455 §5.2), so that a proxy can inject a
//! Close frame between two whole messages, and notice the peer's Close.
//!
//! [`Frames`] follows one direction without buffering payloads: it keeps at
//! most one frame header (14 bytes) and counts payload bytes down, so a frame
//! announcing 2^63 − 1 bytes costs nothing. Garbage is an error, never a panic.

/// Opcode of a Close frame.
pub const OPCODE_CLOSE: u8 = 0x8;

/// Why bytes are not WebSocket frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    #[error("invalid control frame")]
    BadControlFrame,
    /// A 64-bit length with its most significant bit set.
    #[error("frame length has its top bit set")]
    BadLength,
    /// A continuation outside a fragmented message, or a new data frame inside one.
    #[error("unexpected continuation or data frame")]
    BadFragmentation,
}

/// Follows the frames of one direction of a WebSocket connection.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    header: [u8; 14],
    have: u8,
    payload_left: u64,
    /// Opcode of the frame whose payload is being read.
    opcode: u8,
    /// Inside a fragmented data message (a data frame without FIN came).
    in_message: bool,
    closes: u64,
    failed: bool,
}

impl Frames {
    /// A tracker at the start of a stream of frames.
    pub fn new() -> Frames {
        Frames::default()
    }

    /// Between two whole messages: no frame half read, no fragmented message
    /// open. Only here may a proxy inject a frame of its own.
    pub fn at_message_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0 && !self.in_message && !self.failed
    }

    /// Whole Close frames seen so far.
    pub fn closes(&self) -> u64 {
        self.closes
    }

    /// Feeds bytes; returns how many were taken: all of them, or with
    /// `stop_at_boundary` only up to the first message boundary reached inside
    /// `input`. After an error every later call fails too.
    pub fn advance(&mut self, input: &[u8], stop_at_boundary: bool) -> Result<usize, FrameError> {
        if self.failed {
            return Err(FrameError::BadFragmentation);
        }
        let mut used = 0;
        while used < input.len() {
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .map_or(input.len() - used, |n| n.min(input.len() - used));
                used += take;
                self.payload_left -= take as u64;
                if self.payload_left == 0 {
                    self.frame_done();
                }
            } else {
                self.header[usize::from(self.have)] = input[used];
                self.have += 1;
                used += 1;
                match self.header_complete() {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                }
            }
            if stop_at_boundary && self.at_message_boundary() {
                break;
            }
        }
        Ok(used)
    }

    /// Looks at the header bytes gathered so far; true once the whole header
    /// was read (then the payload, if any, follows).
    fn header_complete(&mut self) -> Result<bool, FrameError> {
        let h = &self.header[..usize::from(self.have)];
        if h.len() < 2 {
            return Ok(false);
        }
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0F);
        let masked = h[1] & 0x80 != 0;
        let len7 = h[1] & 0x7F;
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + ext + if masked { 4 } else { 0 };
        if h.len() < need {
            return Ok(false);
        }
        let len = match ext {
            0 => u64::from(len7),
            2 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            _ => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                n
            }
        };
        match opcode {
            0x0 if !self.in_message => return Err(FrameError::BadFragmentation),
            0x0 => self.in_message = !fin,
            0x1 | 0x2 if self.in_message => return Err(FrameError::BadFragmentation),
            0x1 | 0x2 => self.in_message = !fin,
            0x8..=0xA if !fin || len > 125 => return Err(FrameError::BadControlFrame),
            0x8..=0xA => {}
            other => return Err(FrameError::ReservedOpcode(other)),
        }
        self.opcode = opcode;
        self.have = 0;
        self.payload_left = len;
        if len == 0 {
            self.frame_done();
        }
        Ok(true)
    }

    fn frame_done(&mut self) {
        if self.opcode == OPCODE_CLOSE {
            self.closes += 1;
        }
    }
}

/// An unmasked Close frame with status `code` and no reason, as a server
/// sends it (RFC 6455 §5.5.1): e.g. `88 02 03 E9` for 1001.
pub fn close_frame(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x88, 0x02, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, masked: bool, payload_len: usize) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => out.push(m | payload_len as u8),
            126..=65535 => {
                out.push(m | 126);
                out.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                out.push(m | 127);
                out.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[1, 2, 3, 4]);
        }
        out.extend(std::iter::repeat_n(b'x', payload_len));
        out
    }

    #[test]
    fn close_frames() {
        assert_eq!(close_frame(1001), [0x88, 0x02, 0x03, 0xE9]);
        assert_eq!(close_frame(1012), [0x88, 0x02, 0x03, 0xF4]);
        let mut f = Frames::new();
        assert_eq!(f.advance(&close_frame(1001), false), Ok(4));
        assert_eq!(f.closes(), 1);
        let masked_close = frame(true, 8, true, 2);
        assert_eq!(f.advance(&masked_close, false), Ok(masked_close.len()));
        assert_eq!(f.closes(), 2);
    }

    #[test]
    fn boundaries_are_between_whole_messages() {
        let stream = [
            frame(false, 1, false, 3),
            frame(true, 9, false, 0), // a ping inside the fragmented message
            frame(true, 0, false, 70_000),
            frame(true, 2, true, 126),
        ]
        .concat();
        let first_message_end = stream.len() - frame(true, 2, true, 126).len();
        for step in [1, 2, 7, 1000, stream.len()] {
            let mut f = Frames::new();
            let mut boundaries = Vec::new();
            let mut pos = 0;
            for piece in stream.chunks(step) {
                let mut p = piece;
                while !p.is_empty() {
                    let n = f.advance(p, true).unwrap();
                    pos += n;
                    p = &p[n..];
                    if f.at_message_boundary() {
                        boundaries.push(pos);
                    }
                }
            }
            boundaries.dedup();
            assert_eq!(boundaries, [first_message_end, stream.len()], "step {step}");
        }
    }

    #[test]
    fn huge_lengths_are_counted_not_allocated() {
        let mut f = Frames::new();
        let mut h = vec![0x82, 127];
        h.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_eq!(f.advance(&h, true), Ok(10));
        assert_eq!(f.advance(&[0; 100], true), Ok(100));
        assert!(!f.at_message_boundary());
        let mut g = Frames::new();
        let mut bad = vec![0x82, 127];
        bad.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(g.advance(&bad, false), Err(FrameError::BadLength));
        assert!(g.advance(&[0], false).is_err(), "stays failed");
    }

    #[test]
    fn garbage_is_an_error() {
        let err = |raw: &[u8]| Frames::new().advance(raw, false).unwrap_err();
        assert_eq!(err(&[0x83, 0]), FrameError::ReservedOpcode(3));
        assert_eq!(err(&[0x08, 0]), FrameError::BadControlFrame);
        assert_eq!(err(&[0x89, 126, 0, 200]), FrameError::BadControlFrame);
        assert_eq!(err(&[0x80, 0]), FrameError::BadFragmentation);
        assert_eq!(err(&[0x01, 0, 0x81, 0]), FrameError::BadFragmentation);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_splits_agree(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300), step in 1usize..20) {
            let mut whole = Frames::new();
            let w = whole.advance(&raw, false);
            let mut split = Frames::new();
            let mut s = Ok(0);
            for piece in raw.chunks(step) {
                match split.advance(piece, false) {
                    Ok(n) => s = s.map(|t| t + n),
                    Err(e) => { s = Err(e); break; }
                }
            }
            proptest::prop_assert_eq!(w.is_ok(), s.is_ok());
            if w.is_ok() {
                proptest::prop_assert_eq!(whole.at_message_boundary(), split.at_message_boundary());
                proptest::prop_assert_eq!(whole.closes(), split.closes());
            }
        }
    }
}
