//! HTTP/2 frame boundaries (RFC 9113 §4.1) for a proxy that does not
//! terminate HTTP/2: it follows 9-byte frame headers, never decodes header
//! blocks (no HPACK), and injects frames of its own (GOAWAY, PING) only
//! between frames and outside a HEADERS/CONTINUATION sequence.
//!
//! [`Splicer`] is sans-IO: given the bytes buffered so far it answers how many
//! to forward, how many to drop (the ACK of the proxy's own PING), or that a
//! whole frame header is needed first. Payloads are never buffered, so a
//! header announcing 16 MB costs nothing.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types the proxy cares about.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// END_STREAM flag (DATA, HEADERS).
pub const END_STREAM: u8 = 0x1;
/// ACK flag (PING, SETTINGS).
pub const ACK: u8 = 0x1;
/// END_HEADERS flag (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const END_HEADERS: u8 = 0x4;
/// The largest stream id: the first GOAWAY of a graceful shutdown names it.
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length (24 bits).
    pub len: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id (31 bits; 0 for the connection).
    pub stream: u32,
}

impl FrameHeader {
    /// Reads the 9-byte header at the start of `b` (`None` if shorter).
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let h = b.get(..9)?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_STREAM_ID,
        })
    }

    /// The frame ends its stream in the sender's direction.
    pub fn ends_stream(&self) -> bool {
        matches!(self.kind, kind::DATA | kind::HEADERS) && self.flags & END_STREAM != 0
    }
}

fn frame(kind: u8, flags: u8, payload: [u8; 8]) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[2] = 8;
    out[3] = kind;
    out[4] = flags;
    out[9..].copy_from_slice(&payload);
    out
}

/// A GOAWAY frame naming `last_stream` with error `code` (0: NO_ERROR).
pub fn goaway(last_stream: u32, code: u32) -> [u8; 17] {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&(last_stream & MAX_STREAM_ID).to_be_bytes());
    payload[4..].copy_from_slice(&code.to_be_bytes());
    frame(kind::GOAWAY, 0, payload)
}

/// A PING frame (not an ACK) carrying `opaque`.
pub fn ping(opaque: [u8; 8]) -> [u8; 17] {
    frame(kind::PING, 0, opaque)
}

/// Why bytes are not HTTP/2 frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H2Error {
    /// The client did not start with the connection preface.
    #[error("no HTTP/2 connection preface")]
    BadPreface,
    /// A frame other than CONTINUATION inside a header block.
    #[error("frame type {0:#x} inside a header block")]
    BrokenHeaderBlock(u8),
}

/// What to do with the next bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes; a frame header among them is reported.
    Forward(usize, Option<FrameHeader>),
    /// Drop this many bytes: the ACK of the proxy's own PING.
    Drop(usize),
    /// A whole frame header (or the whole PING ACK) is needed first.
    NeedMore,
}

/// Follows one direction of an HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Splicer {
    preface_left: usize,
    payload_left: u32,
    in_header_block: bool,
    swallow: Option<[u8; 8]>,
    frames: u64,
}

impl Splicer {
    /// The client→server direction: the preface, then frames.
    pub fn client() -> Splicer {
        Splicer {
            preface_left: PREFACE.len(),
            ..Splicer::server()
        }
    }

    /// The server→client direction: frames from the first byte.
    pub fn server() -> Splicer {
        Splicer {
            preface_left: 0,
            payload_left: 0,
            in_header_block: false,
            swallow: None,
            frames: 0,
        }
    }

    /// Drop the PING ACK carrying `opaque` when it comes (once).
    pub fn swallow_ping_ack(&mut self, opaque: [u8; 8]) {
        self.swallow = Some(opaque);
    }

    /// The awaited PING ACK was dropped.
    pub fn ping_acked(&self) -> bool {
        self.swallow.is_none()
    }

    /// Frame headers seen so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Between two frames and outside a header block: a frame may be injected.
    pub fn at_boundary(&self) -> bool {
        self.preface_left == 0 && self.payload_left == 0 && !self.in_header_block
    }

    /// Looks at the start of `input` (the bytes buffered and not yet forwarded).
    pub fn step(&mut self, input: &[u8]) -> Result<Step, H2Error> {
        if input.is_empty() {
            return Ok(Step::NeedMore);
        }
        if self.preface_left > 0 {
            let done = PREFACE.len() - self.preface_left;
            let n = self.preface_left.min(input.len());
            if input[..n] != PREFACE[done..done + n] {
                return Err(H2Error::BadPreface);
            }
            self.preface_left -= n;
            return Ok(Step::Forward(n, None));
        }
        if self.payload_left > 0 {
            let n = usize::try_from(self.payload_left).map_or(input.len(), |p| p.min(input.len()));
            self.payload_left -= n as u32;
            return Ok(Step::Forward(n, None));
        }
        let Some(h) = FrameHeader::parse(input) else {
            return Ok(Step::NeedMore);
        };
        if let Some(opaque) = self.swallow
            && h.kind == kind::PING
            && h.flags & ACK != 0
            && h.len == 8
        {
            let Some(payload) = input.get(9..17) else {
                return Ok(Step::NeedMore);
            };
            if payload == opaque {
                self.swallow = None;
                self.frames += 1;
                return Ok(Step::Drop(17));
            }
        }
        if self.in_header_block && h.kind != kind::CONTINUATION {
            return Err(H2Error::BrokenHeaderBlock(h.kind));
        }
        match h.kind {
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => {
                self.in_header_block = h.flags & END_HEADERS == 0;
            }
            _ => {}
        }
        self.payload_left = h.len;
        self.frames += 1;
        Ok(Step::Forward(9, Some(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out
    }

    /// Runs `input` through `s`, as a proxy would: returns forwarded bytes.
    fn run(s: &mut Splicer, input: &[u8]) -> (Vec<u8>, Vec<FrameHeader>) {
        let (mut out, mut headers, mut pos) = (Vec::new(), Vec::new(), 0);
        loop {
            match s.step(&input[pos..]).unwrap() {
                Step::Forward(n, h) => {
                    out.extend_from_slice(&input[pos..pos + n]);
                    headers.extend(h);
                    pos += n;
                }
                Step::Drop(n) => pos += n,
                Step::NeedMore => return (out, headers),
            }
        }
    }

    #[test]
    fn frames_and_header_blocks() {
        let mut s = Splicer::client();
        let mut input = PREFACE.to_vec();
        input.extend(header(0, 0x4, 0, 0)); // SETTINGS
        input.extend(header(3, kind::HEADERS, 0, 1));
        input.extend([1, 2, 3]);
        assert_eq!(run(&mut s, &input).1.len(), 2);
        assert!(!s.at_boundary(), "inside a header block");
        let mut more = header(2, kind::CONTINUATION, END_HEADERS, 1);
        more.extend([4, 5]);
        let (out, hs) = run(&mut s, &more);
        assert_eq!((out, hs[0].stream), (more.clone(), 1));
        assert!(s.at_boundary());
        assert!(Splicer::client().step(b"GET / HTTP/1.1\r\n").is_err());
        let mut broken = Splicer::server();
        run(&mut broken, &header(0, kind::HEADERS, 0, 1));
        assert_eq!(
            broken.step(&header(0, kind::DATA, 0, 1)),
            Err(H2Error::BrokenHeaderBlock(0))
        );
    }

    #[test]
    fn own_ping_ack_is_dropped_others_pass() {
        let mut s = Splicer::server();
        s.swallow_ping_ack(*b"sluice!!");
        let mut other = header(8, kind::PING, ACK, 0);
        other.extend(b"someone!");
        let mut ours = header(8, kind::PING, ACK, 0);
        ours.extend(b"sluice!!");
        assert_eq!(s.step(&ours[..12]), Ok(Step::NeedMore));
        let input = [other.clone(), ours, other.clone()].concat();
        let (out, _) = run(&mut s, &input);
        assert_eq!(out, [other.clone(), other].concat());
        assert!(s.ping_acked());
    }

    #[test]
    fn huge_frames_are_counted_not_buffered() {
        let mut s = Splicer::server();
        let h = header(0xFF_FFFF, kind::DATA, 0, 1);
        assert_eq!(s.step(&h), Ok(Step::Forward(9, FrameHeader::parse(&h))));
        assert_eq!(s.step(&[0; 100]), Ok(Step::Forward(100, None)));
        assert!(!s.at_boundary());
    }

    #[test]
    fn injected_frames() {
        let g = goaway(MAX_STREAM_ID, 0);
        let h = FrameHeader::parse(&g).unwrap();
        assert_eq!((h.len, h.kind, h.stream), (8, kind::GOAWAY, 0));
        assert_eq!(&g[9..13], &[0x7F, 0xFF, 0xFF, 0xFF]);
        let p = ping(*b"12345678");
        assert_eq!(FrameHeader::parse(&p).unwrap().kind, kind::PING);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300), client: bool) {
            let mut s = if client { Splicer::client() } else { Splicer::server() };
            s.swallow_ping_ack([0; 8]);
            let mut pos = 0;
            while let Ok(step) = s.step(&raw[pos..]) {
                match step {
                    Step::Forward(n, _) | Step::Drop(n) => {
                        proptest::prop_assert!(n > 0 && pos + n <= raw.len());
                        pos += n;
                    }
                    Step::NeedMore => break,
                }
            }
        }
    }
}
