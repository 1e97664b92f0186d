//! HTTP/1.1 response framing: where a response's head ends, and where its body
//! ends (`Content-Length`, chunked, or the connection's close).
//!
//! [`parse_response`] is sans-IO: hand it everything read so far and whether
//! the peer has closed; it answers "need more bytes", a complete response, or
//! an error. It never panics, whatever the input (property-tested).

/// The longest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size line accepted (size, extensions and CRLF).
const MAX_CHUNK_LINE: usize = 1024;

/// A complete HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// Header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, chunked encoding undone.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status line as received, e.g. `HTTP/1.1 404 Not Found`.
    pub fn status_line(&self) -> String {
        let line = format!("HTTP/1.{} {} {}", self.version, self.status, self.reason);
        line.trim_end().to_owned()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole response yet: read more.
    Partial,
    /// A whole response, which took the first `len` bytes.
    Complete {
        /// The response.
        response: Response,
        /// How many bytes of the input it took.
        len: usize,
    },
}

/// Why bytes are not an HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first line is not `HTTP/1.x NNN reason` (holds what came instead).
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
    /// The peer closed before the blank line that ends the headers.
    #[error("no end of headers")]
    NoEndOfHeaders,
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// `Content-Length` is not a number.
    #[error("bad content-length {0:?}")]
    BadContentLength(String),
    /// A chunk-size line is not a hex number.
    #[error("bad chunk size")]
    BadChunkSize,
    /// Chunk data is not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    /// The peer closed in the middle of a chunk.
    #[error("truncated chunk")]
    TruncatedChunk,
    /// The peer closed before `Content-Length` bytes of body.
    #[error("truncated body: {got} of {expected} bytes")]
    TruncatedBody {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        expected: usize,
    },
}

/// Parses the response at the start of `buf`. `eof`: the peer has closed, so
/// no more bytes will come (a body without length ends there, and anything
/// incomplete is an error).
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed, Error> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let first_line = |upto: usize| {
        let line = String::from_utf8_lossy(&buf[..upto.min(buf.len())]);
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    // Reject garbage as soon as its first bytes show it.
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        let eol = find(buf, b"\n").unwrap_or(buf.len());
        return Err(Error::BadStatusLine(first_line(eol.min(MAX_HEAD))));
    }
    let Some(eol) = find(&buf[..buf.len().min(MAX_HEAD)], b"\n") else {
        return if eof {
            Err(Error::BadStatusLine(first_line(MAX_HEAD)))
        } else if buf.len() > MAX_HEAD {
            Err(Error::HeadTooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let status_line = first_line(eol);
    let (version, status, reason) =
        parse_status_line(&status_line).ok_or_else(|| Error::BadStatusLine(status_line.clone()))?;

    let Some(head_end) = find(&buf[..buf.len().min(MAX_HEAD + 4)], b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(Error::HeadTooLarge)
        } else if eof {
            Err(Error::NoEndOfHeaders)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let head = String::from_utf8_lossy(&buf[(eol + 1).min(head_end)..head_end]);
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut response = Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let body_start = head_end + 4;
    let rest = &buf[body_start..];

    let complete = |response, body_len: usize| {
        Ok(Parsed::Complete {
            response,
            len: body_start + body_len,
        })
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return complete(response, 0);
    }
    let chunked = response.header("transfer-encoding").is_some_and(|te| {
        te.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    });
    if chunked {
        return match dechunk(rest, eof)? {
            Some((body, used)) => {
                response.body = body;
                complete(response, used)
            }
            None => Ok(Parsed::Partial),
        };
    }
    if let Some(length) = response.header("content-length") {
        let expected = length
            .parse::<usize>()
            .map_err(|_| Error::BadContentLength(length.to_owned()))?;
        return if rest.len() >= expected {
            response.body = rest[..expected].to_vec();
            complete(response, expected)
        } else if eof {
            Err(Error::TruncatedBody {
                got: rest.len(),
                expected,
            })
        } else {
            Ok(Parsed::Partial)
        };
    }
    if eof {
        response.body = rest.to_vec();
        complete(response, rest.len())
    } else {
        Ok(Parsed::Partial)
    }
}

/// `HTTP/1.x NNN reason` → (x, NNN, reason).
fn parse_status_line(line: &str) -> Option<(u8, u16, String)> {
    let rest = line.strip_prefix("HTTP/1.")?;
    let mut chars = rest.chars();
    let version = chars.next()?.to_digit(10)?;
    let rest = chars.as_str();
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    let (code, reason) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        u8::try_from(version).ok()?,
        code.parse().ok()?,
        reason.trim().to_owned(),
    ))
}

/// Undoes chunked encoding: `Some((body, bytes used))` when the last chunk
/// (and trailers) arrived, `None` when more bytes are needed.
fn dechunk(buf: &[u8], eof: bool) -> Result<Option<(Vec<u8>, usize)>, Error> {
    let more = |e: Error| if eof { Err(e) } else { Ok(None) };
    // Walk first, copy once complete: re-parsing as bytes arrive stays cheap.
    let mut chunks = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(eol) = find(&rest[..rest.len().min(MAX_CHUNK_LINE)], b"\r\n") else {
            return if rest.len() >= MAX_CHUNK_LINE {
                Err(Error::BadChunkSize)
            } else {
                more(Error::TruncatedChunk)
            };
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| Error::BadChunkSize)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| Error::BadChunkSize)?;
        pos += eol + 2;
        if size == 0 {
            break;
        }
        let end = pos.checked_add(size).ok_or(Error::BadChunkSize)?;
        if buf.len() < end.saturating_add(2) {
            return more(Error::TruncatedChunk);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(Error::BadChunkEnd);
        }
        chunks.push(pos..end);
        pos = end + 2;
    }
    // Trailers, up to a blank line (a peer that closes right after the last
    // chunk is forgiven).
    let trailers = &buf[pos..];
    let used = if trailers.starts_with(b"\r\n") {
        pos + 2
    } else if let Some(end) = find(trailers, b"\r\n\r\n") {
        pos + end + 4
    } else if eof {
        buf.len()
    } else {
        return Ok(None);
    };
    let mut body = Vec::with_capacity(chunks.iter().map(|r| r.len()).sum());
    for range in chunks {
        body.extend_from_slice(&buf[range]);
    }
    Ok(Some((body, used)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(raw: &[u8]) -> Response {
        match parse_response(raw, true) {
            Ok(Parsed::Complete { response, .. }) => response,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn content_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX: y\r\n\r\nokxx";
        let Ok(Parsed::Complete { response, len }) = parse_response(raw, false) else {
            panic!()
        };
        assert_eq!(
            (response.status, &response.body[..], len),
            (200, &b"ok"[..], raw.len() - 2)
        );
        assert_eq!(response.header("Content-Length"), Some("2"));
        assert_eq!(response.header("x"), Some("y"));
        assert_eq!(response.status_line(), "HTTP/1.1 200 OK");
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse_response(head, false), Ok(Parsed::Partial));
        assert_eq!(whole(b"HTTP/1.0 204 No Content\r\n\r\n").body, b"");
    }

    #[test]
    fn chunked() {
        let raw = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\nnext";
        let Ok(Parsed::Complete { response, len }) = parse_response(raw, false) else {
            panic!()
        };
        assert_eq!(
            (response.status, response.body_text().as_str()),
            (409, "abcde")
        );
        assert_eq!(len, raw.len() - 4);
        // Every prefix is "need more bytes", never an error.
        for cut in 0..raw.len() - 4 {
            assert_eq!(
                parse_response(&raw[..cut], false),
                Ok(Parsed::Partial),
                "{cut}"
            );
        }
        let trailers =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(whole(trailers).body, b"a");
    }

    #[test]
    fn body_until_close() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(parse_response(raw, false), Ok(Parsed::Partial));
        assert_eq!(whole(raw).body, b"all of it");
    }

    #[test]
    fn truncated() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(
            parse_response(cl, true),
            Err(Error::TruncatedBody {
                got: 2,
                expected: 5
            })
        );
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert_eq!(parse_response(ch, true), Err(Error::TruncatedChunk));
        let head = b"HTTP/1.1 200 OK\r\nServer: x";
        assert_eq!(parse_response(head, true), Err(Error::NoEndOfHeaders));
    }

    #[test]
    fn garbage() {
        let bad = |raw: &[u8]| parse_response(raw, false).unwrap_err();
        assert_eq!(
            bad(b"SSH-2.0-OpenSSH\r\n"),
            Error::BadStatusLine("SSH-2.0-OpenSSH".into())
        );
        assert!(matches!(bad(b"garbage"), Error::BadStatusLine(_)));
        assert!(matches!(
            bad(b"HTTP/1.1 2000 x\r\n"),
            Error::BadStatusLine(_)
        ));
        assert!(matches!(
            bad(b"HTTP/1.1 abc x\r\n"),
            Error::BadStatusLine(_)
        ));
        assert_eq!(
            parse_response(b"", true),
            Err(Error::BadStatusLine(String::new()))
        );
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(bad(cl), Error::BadContentLength("-1".into()));
        let size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(bad(size), Error::BadChunkSize);
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n";
        assert_eq!(bad(huge), Error::BadChunkSize);
        let end = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc";
        assert_eq!(bad(end), Error::BadChunkEnd);
        let long = [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(bad(&long), Error::HeadTooLarge);
    }

    #[test]
    fn status_lines() {
        let ok = |l: &str| parse_status_line(l).map(|(_, s, _)| s);
        assert_eq!(ok("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(ok("HTTP/1.0 204"), Some(204));
        assert_eq!(
            parse_status_line("HTTP/1.1 503 Service Unavailable"),
            Some((1, 503, "Service Unavailable".into()))
        );
        for bad in [
            "",
            "HTTP/1.1",
            "HTTP/1.1 2000 x",
            "HTTP/2 200 OK",
            "HTTP/1.x 200",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512), eof: bool) {
            let _ = parse_response(&raw, eof);
        }

        #[test]
        fn never_panics_after_a_status_line_start(rest in proptest::collection::vec(proptest::sample::select(b"HTTP/1. 20\r\n:ab;\x00\xff".to_vec()), 0..256), eof: bool) {
            let _ = parse_response(&[b"HTTP/1.1 200".as_slice(), &rest].concat(), eof);
        }

        #[test]
        fn never_panics_after_a_head(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), chunked: bool, eof: bool) {
            let head: &[u8] = if chunked {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
            };
            let _ = parse_response(&[head, &body].concat(), eof);
        }
    }
}
