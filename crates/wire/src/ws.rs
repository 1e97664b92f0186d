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
        let Some(head) = parse_head(&self.header[..usize::from(self.have)])? else {
            return Ok(false);
        };
        match head.opcode {
            0x0 if !self.in_message => return Err(FrameError::BadFragmentation),
            0x0 => self.in_message = !head.fin,
            0x1 | 0x2 if self.in_message => return Err(FrameError::BadFragmentation),
            0x1 | 0x2 => self.in_message = !head.fin,
            _ => {}
        }
        self.opcode = head.opcode;
        self.have = 0;
        self.payload_left = head.len;
        if head.len == 0 {
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

/// A frame header (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The last frame of its message.
    pub fin: bool,
    /// 0x0 continuation, 0x1 text, 0x2 binary, 0x8 Close, 0x9 Ping, 0xA Pong.
    pub opcode: u8,
    /// The masking key, when the frame is masked (client to server).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
    /// Header length: where the payload starts.
    pub header_len: usize,
}

/// Parses the frame header at the start of `buf`: `Ok(None)` until it is
/// whole. Reserved opcodes, bad control frames and 64-bit lengths with the
/// top bit set are errors; fragmentation is the caller's to follow.
pub fn parse_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(None);
    }
    let len = match ext {
        0 => u64::from(len7),
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        _ => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            n
        }
    };
    match opcode {
        0x0..=0x2 => {}
        0x8..=0xA if !fin || len > 125 => return Err(FrameError::BadControlFrame),
        0x8..=0xA => {}
        other => return Err(FrameError::ReservedOpcode(other)),
    }
    let mask = masked.then(|| {
        let m = &buf[2 + ext..header_len];
        [m[0], m[1], m[2], m[3]]
    });
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        len,
        header_len,
    }))
}

/// A whole masked frame as a client sends it (RFC 6455 §5.3): FIN set,
/// `opcode`, `payload` XORed with `mask`.
pub fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// An unmasked Close frame with status `code` and no reason, as a server
/// sends it (RFC 6455 §5.5.1): e.g. `88 02 03 E9` for 1001.
pub fn close_frame(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x88, 0x02, hi, lo]
}

/// A masked Close frame with status `code` and no reason, as a client sends
/// it (RFC 6455 §5.3: the payload XORed with `mask`, which goes in the header).
pub fn masked_close_frame(code: u16, mask: [u8; 4]) -> Vec<u8> {
    masked_frame(OPCODE_CLOSE, &code.to_be_bytes(), mask)
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
        let ours = masked_close_frame(1001, [0x10, 0x20, 0x30, 0x40]);
        assert_eq!(ours, [0x88, 0x82, 0x10, 0x20, 0x30, 0x40, 0x13, 0xC9]);
        let head = parse_head(&ours).unwrap().unwrap();
        assert_eq!(
            (head.opcode, head.mask, head.len, head.header_len),
            (OPCODE_CLOSE, Some([0x10, 0x20, 0x30, 0x40]), 2, 6)
        );
        assert_eq!(parse_head(&ours[..5]), Ok(None));
        let big = masked_frame(0x2, &[7; 300], [1, 2, 3, 4]);
        let head = parse_head(&big).unwrap().unwrap();
        assert_eq!((head.len, head.header_len, big.len()), (300, 8, 308));
        assert_eq!(f.advance(&ours, false), Ok(8));
        assert_eq!(f.closes(), 3);
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
