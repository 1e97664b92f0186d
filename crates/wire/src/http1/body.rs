//! Following a message body byte by byte without buffering it: `Content-Length`,
//! chunked (with extensions and trailers), or up to the connection's close.

use super::head::{Framing, MAX_HEAD};

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_CHUNK_LINE: u32 = 4096;

/// Why a body is not well framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// A chunk-size line is not a hex number, or is too long.
    #[error("bad chunk size line")]
    BadChunkSize,
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    /// The trailer section is longer than a head may be.
    #[error("trailers longer than {MAX_HEAD} bytes")]
    TrailersTooLarge,
    /// The connection closed before the body's end.
    #[error("connection closed inside the body")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the size: `digits` hex digits so far, `value` their value.
    Size { digits: u8, value: u64, line: u32 },
    /// After the size: extensions up to the end of the line.
    Extension { value: u64, line: u32 },
    /// Saw CR at the end of the size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data(u64),
    /// After chunk data: expecting CR (or a bare LF).
    DataCr,
    /// After chunk data and CR: expecting LF.
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart { total: u32 },
    /// Inside a trailer line.
    TrailerLine { total: u32 },
    /// Saw CR at the start of a line: the final LF comes.
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
    Failed,
}

/// Where a body stands: fed the bytes that follow its head, it says how many
/// belong to it, and whether it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    state: State,
}

impl Body {
    /// A body framed as `framing` (`Upgrade` and `Empty` are already done).
    pub fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::Empty | Framing::Upgrade | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size {
                digits: 0,
                value: 0,
                line: 0,
            }),
            Framing::UntilClose => State::UntilClose,
        };
        Body { state }
    }

    /// The body has ended: what follows is the next message.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds bytes; returns how many of them belong to the body (all of them
    /// unless it ends inside `input`). After an error the body is failed and
    /// every later call fails too.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, BodyError> {
        let mut used = 0;
        while used < input.len() {
            match self.state {
                State::Done => break,
                State::Failed => return Err(BodyError::BadChunkSize),
                State::UntilClose => used = input.len(),
                State::Length(n) => {
                    let take = remaining(n, input.len() - used);
                    used += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunked(Chunk::Data(n)) => {
                    let take = remaining(n, input.len() - used);
                    used += take;
                    let left = n - take as u64;
                    self.state = State::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                }
                State::Chunked(chunk) => {
                    let byte = input[used];
                    used += 1;
                    match step(chunk, byte) {
                        Ok(Some(next)) => self.state = State::Chunked(next),
                        Ok(None) => self.state = State::Done,
                        Err(e) => {
                            self.state = State::Failed;
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(used)
    }

    /// The connection closed: fine for a body up to the close (now done),
    /// an error for a body that had not ended.
    pub fn eof(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }
}

fn remaining(n: u64, available: usize) -> usize {
    usize::try_from(n).map_or(available, |n| n.min(available))
}

/// One byte of chunked framing outside chunk data; `None`: the body ended.
fn step(chunk: Chunk, b: u8) -> Result<Option<Chunk>, BodyError> {
    let line_end = |value: u64| {
        if value == 0 {
            Chunk::TrailerStart { total: 0 }
        } else {
            Chunk::Data(value)
        }
    };
    let next = match chunk {
        Chunk::Size {
            digits,
            value,
            line,
        } => {
            if line >= MAX_CHUNK_LINE {
                return Err(BodyError::BadChunkSize);
            }
            if let Some(d) = char::from(b).to_digit(16) {
                if digits >= 16 {
                    return Err(BodyError::BadChunkSize);
                }
                Chunk::Size {
                    digits: digits + 1,
                    value: value << 4 | u64::from(d),
                    line: line + 1,
                }
            } else if digits == 0 {
                return Err(BodyError::BadChunkSize);
            } else {
                match b {
                    b';' | b' ' | b'\t' => Chunk::Extension {
                        value,
                        line: line + 1,
                    },
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => line_end(value),
                    _ => return Err(BodyError::BadChunkSize),
                }
            }
        }
        Chunk::Extension { value, line } => match b {
            _ if line >= MAX_CHUNK_LINE => return Err(BodyError::BadChunkSize),
            b'\r' => Chunk::SizeLf { value },
            b'\n' => line_end(value),
            _ => Chunk::Extension {
                value,
                line: line + 1,
            },
        },
        Chunk::SizeLf { value } => match b {
            b'\n' => line_end(value),
            _ => return Err(BodyError::BadChunkSize),
        },
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            b'\n' => Chunk::Size {
                digits: 0,
                value: 0,
                line: 0,
            },
            _ => return Err(BodyError::BadChunkEnd),
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Size {
                digits: 0,
                value: 0,
                line: 0,
            },
            _ => return Err(BodyError::BadChunkEnd),
        },
        Chunk::TrailerStart { total } => match b {
            b'\r' => Chunk::EndLf,
            b'\n' => return Ok(None),
            _ => trailer(total)?,
        },
        Chunk::TrailerLine { total } => match b {
            b'\n' => Chunk::TrailerStart { total },
            _ => trailer(total)?,
        },
        Chunk::EndLf => match b {
            b'\n' => return Ok(None),
            _ => return Err(BodyError::BadChunkEnd),
        },
        // Data is consumed in bulk by `Body::advance`; one byte of it is one less.
        Chunk::Data(n) => {
            if n <= 1 {
                Chunk::DataCr
            } else {
                Chunk::Data(n - 1)
            }
        }
    };
    Ok(Some(next))
}

fn trailer(total: u32) -> Result<Chunk, BodyError> {
    if total as usize >= MAX_HEAD {
        return Err(BodyError::TrailersTooLarge);
    }
    Ok(Chunk::TrailerLine { total: total + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(framing: Framing, raw: &[u8], step: usize) -> (Result<usize, BodyError>, bool) {
        let mut body = Body::new(framing);
        let mut total = 0;
        for piece in raw.chunks(step.max(1)) {
            match body.advance(piece) {
                Ok(n) => {
                    total += n;
                    if n < piece.len() {
                        break;
                    }
                }
                Err(e) => return (Err(e), false),
            }
        }
        (Ok(total), body.done())
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let raw = b"3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: v\r\nU: w\r\n\r\nNEXT";
        for step in 1..raw.len() {
            assert_eq!(
                feed_split(Framing::Chunked, raw, step),
                (Ok(raw.len() - 4), true),
                "{step}"
            );
        }
        assert_eq!(
            feed_split(Framing::Chunked, b"0\r\n\r\n", 100),
            (Ok(5), true)
        );
        assert_eq!(feed_split(Framing::Chunked, b"0\n\n", 100), (Ok(3), true));
        assert_eq!(
            feed_split(Framing::Chunked, b"5\r\nab", 100),
            (Ok(5), false)
        );
    }

    #[test]
    fn length_and_close() {
        assert_eq!(feed_split(Framing::Length(3), b"abcdef", 2), (Ok(3), true));
        let mut b = Body::new(Framing::Length(u64::MAX));
        assert_eq!(b.advance(b"abc"), Ok(3));
        assert_eq!(b.eof(), Err(BodyError::Truncated));
        let mut b = Body::new(Framing::UntilClose);
        assert_eq!(b.advance(b"abc"), Ok(3));
        assert!(!b.done());
        assert_eq!(b.eof(), Ok(()));
        assert!(Body::new(Framing::Empty).done());
        assert_eq!(Body::new(Framing::Empty).advance(b"x"), Ok(0));
    }

    #[test]
    fn bad_chunks() {
        let err = |raw: &[u8]| feed_split(Framing::Chunked, raw, 7).0.unwrap_err();
        assert_eq!(err(b"zz\r\n"), BodyError::BadChunkSize);
        assert_eq!(err(b"\r\n"), BodyError::BadChunkSize);
        assert_eq!(err(b"11111111111111111\r\n"), BodyError::BadChunkSize);
        assert_eq!(err(b"1\r\nabc"), BodyError::BadChunkEnd);
        assert_eq!(err(b"1\rx"), BodyError::BadChunkSize);
        let long_ext = [b"1;".as_slice(), &[b'e'; 5000]].concat();
        assert_eq!(err(&long_ext), BodyError::BadChunkSize);
        let long_trailer = [b"0\r\n".as_slice(), &[b't'; MAX_HEAD + 1]].concat();
        assert_eq!(err(&long_trailer), BodyError::TrailersTooLarge);
        let mut b = Body::new(Framing::Chunked);
        assert!(b.advance(b"x").is_err());
        assert!(b.advance(b"0\r\n\r\n").is_err(), "stays failed");
        // A huge but valid size is followed, not allocated.
        let mut b = Body::new(Framing::Chunked);
        assert_eq!(b.advance(b"ffffffffffffffff\r\nabc"), Ok(21));
        assert!(!b.done());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_splits_agree(
            raw in proptest::collection::vec(proptest::sample::select(b"0123456789abcdefxyz;\r\n :\t".to_vec()), 0..300),
            step in 1usize..40,
        ) {
            let whole = feed_split(Framing::Chunked, &raw, raw.len().max(1));
            let split = feed_split(Framing::Chunked, &raw, step);
            proptest::prop_assert_eq!(whole.0.is_ok(), split.0.is_ok());
            if whole.0.is_ok() {
                proptest::prop_assert_eq!(whole, split);
            }
        }

        #[test]
        fn encoded_bodies_end_exactly(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..50), 0..6),
            step in 1usize..40,
        ) {
            let mut raw = Vec::new();
            for c in &chunks {
                raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                raw.extend_from_slice(c);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let len = raw.len();
            raw.extend_from_slice(b"GET / HTTP/1.1\r\n");
            proptest::prop_assert_eq!(feed_split(Framing::Chunked, &raw, step), (Ok(len), true));
        }
    }
}
