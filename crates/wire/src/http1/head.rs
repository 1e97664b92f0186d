//! Request and response heads: parsing (through `httparse`), body framing
//! (RFC 9112 §6.3) and the `Connection: close` edit.

/// The longest head (start line and header fields) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// The most header fields accepted in one head.
pub const MAX_HEADERS: usize = 128;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next message starts right after the head.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, up to the last chunk and its trailers.
    Chunked,
    /// Everything up to the connection's close (a response without length).
    UntilClose,
    /// The connection stops being HTTP/1.x after the head (`101 Switching
    /// Protocols`, or a successful `CONNECT`): the rest is another protocol.
    Upgrade,
}

/// The request methods whose responses are framed differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `HEAD`: the response has no body whatever its headers say.
    Head,
    /// `CONNECT`: a 2xx response turns the connection into a tunnel.
    Connect,
    /// Any other method.
    Other,
}

/// What the proxy needs of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The head's length in bytes, final blank line included.
    pub len: usize,
    /// The method, as far as response framing cares.
    pub method: Method,
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub minor_version: u8,
    /// How the request body is delimited (never `UntilClose`).
    pub framing: Framing,
    /// The client asked for the connection to close after the response.
    pub close: bool,
    /// The client asks to switch protocols (`Connection: upgrade` + `Upgrade`).
    pub upgrade: bool,
}

/// What the proxy needs of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The head's length in bytes, final blank line included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// The minor version.
    pub minor_version: u8,
    /// How the body is delimited (it depends on the request's method too).
    pub framing: Framing,
    /// The server closes the connection after this response.
    pub close: bool,
}

impl ResponseHead {
    /// An interim response (1xx other than 101): the final one still follows.
    pub fn interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Why bytes are not an acceptable HTTP/1.x head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// `httparse` rejected the head.
    #[error("malformed head: {0}")]
    Malformed(String),
    /// The head is longer than [`MAX_HEAD`] bytes.
    #[error("head longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// `Content-Length` is not a number, or several disagree.
    #[error("bad content-length {0:?}")]
    BadContentLength(String),
    /// A request `Transfer-Encoding` that does not end in `chunked` (its length
    /// cannot be known, RFC 9112 §6.3).
    #[error("request transfer-encoding {0:?} does not end in chunked")]
    BadTransferEncoding(String),
    /// The start line is not HTTP/1.0 or HTTP/1.1.
    #[error("not HTTP/1.0 or HTTP/1.1")]
    Version,
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        other => HeadError::Malformed(other.to_string()),
    }
}

/// Whether `buf` may be the start of an HTTP/1.x request line (a method token
/// followed by a space): `Some(true)` yes, `Some(false)` no, `None` too short
/// to tell. Used to recognise HTTP among other protocols.
pub fn looks_like_request(buf: &[u8]) -> Option<bool> {
    const LONGEST_METHOD: usize = 16;
    for (i, &b) in buf.iter().enumerate().take(LONGEST_METHOD + 1) {
        if b == b' ' {
            return Some(i > 0);
        }
        if !b.is_ascii_uppercase() && b != b'-' && b != b'_' {
            return Some(false);
        }
    }
    if buf.len() > LONGEST_METHOD {
        Some(false)
    } else {
        None
    }
}

/// The facts the framing rules need, read from the header fields.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    /// The last transfer coding, lower-cased, when `Transfer-Encoding` is present.
    last_coding: Option<String>,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade_header: bool,
}

fn fields(headers: &[httparse::Header<'_>]) -> Result<Fields, HeadError> {
    let mut f = Fields::default();
    for h in headers {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            // "5, 5" (a list of one repeated value) is accepted, as RFC 9110 §8.6 allows.
            for item in value.split(',') {
                let item = item.trim();
                let n = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| item.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| HeadError::BadContentLength(value.clone().into_owned()))?;
                if f.content_length.is_some_and(|old| old != n) {
                    return Err(HeadError::BadContentLength(value.into_owned()));
                }
                f.content_length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value
                .rsplit(',')
                .map(str::trim)
                .find(|c| !c.is_empty())
                .unwrap_or("")
                .to_ascii_lowercase();
            f.last_coding = Some(last);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                f.close |= token.eq_ignore_ascii_case("close");
                f.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                f.upgrade_token |= token.eq_ignore_ascii_case("upgrade");
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            f.upgrade_header = true;
        }
    }
    Ok(f)
}

fn check_len(len: usize) -> Result<(), HeadError> {
    if len > MAX_HEAD {
        Err(HeadError::TooLarge)
    } else {
        Ok(())
    }
}

fn partial(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    check_len(buf.len()).map(|()| None)
}

/// Parses the request head at the start of `buf`: `Ok(None)` until it is whole.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    // Leading empty lines before a request line are ignored (RFC 9112 §2.2);
    // httparse skips them too and counts them in the length.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf).map_err(parse_error)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return partial(buf).map(|_| None),
    };
    check_len(len)?;
    let minor_version = req.version.ok_or(HeadError::Version)?;
    let method = match req.method {
        Some("HEAD") => Method::Head,
        Some("CONNECT") => Method::Connect,
        _ => Method::Other,
    };
    let f = fields(req.headers)?;
    let framing = match (&f.last_coding, f.content_length) {
        (Some(c), _) if c == "chunked" => Framing::Chunked,
        (Some(c), _) => return Err(HeadError::BadTransferEncoding(c.clone())),
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    Ok(Some(RequestHead {
        len,
        method,
        minor_version,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive),
        upgrade: f.upgrade_token && f.upgrade_header,
    }))
}

/// Parses the response head at the start of `buf`, answering `request` (the
/// method of the request it answers, which changes the framing of `HEAD` and
/// `CONNECT` responses). `Ok(None)` until the head is whole.
pub fn parse_response_head(buf: &[u8], request: Method) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).map_err(parse_error)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return partial(buf).map(|_| None),
    };
    check_len(len)?;
    let minor_version = resp.version.ok_or(HeadError::Version)?;
    let status = resp
        .code
        .ok_or_else(|| HeadError::Malformed("invalid status".into()))?;
    let f = fields(resp.headers)?;
    let framing = if status == 101 || (request == Method::Connect && (200..300).contains(&status)) {
        Framing::Upgrade
    } else if request == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Framing::Empty
    } else {
        match (&f.last_coding, f.content_length) {
            (Some(c), _) if c == "chunked" => Framing::Chunked,
            (Some(_), _) | (None, None) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    Ok(Some(ResponseHead {
        len,
        status,
        minor_version,
        framing,
        close: f.close || (minor_version == 0 && !f.keep_alive) || framing == Framing::UntilClose,
    }))
}

/// The header fields that say whether a connection persists.
fn persistence_field(line: &[u8]) -> bool {
    let name = line.split(|&b| b == b':').next().unwrap_or_default();
    name.eq_ignore_ascii_case(b"connection") || name.eq_ignore_ascii_case(b"keep-alive")
}

/// A copy of the whole head `head` (as delimited by [`ResponseHead::len`])
/// that tells the client the connection closes after this message: its
/// `Connection` and `Keep-Alive` fields are left out and `Connection: close` is
/// added before the blank line that ends the head. Every other byte is kept.
pub fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 19);
    let mut lines = head.split_inclusive(|&b| b == b'\n').peekable();
    // The start line is kept as is.
    if let Some(start) = lines.next() {
        out.extend_from_slice(start);
    }
    let mut eol: &[u8] = b"\r\n";
    while let Some(line) = lines.next() {
        let blank = line == b"\r\n" || line == b"\n";
        if blank && lines.peek().is_none() {
            eol = line;
            break;
        }
        if !persistence_field(line) {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"Connection: close");
    out.extend_from_slice(eol);
    out.extend_from_slice(eol);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_framing() {
        let req = |raw: &[u8]| parse_request_head(raw).unwrap().unwrap();
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET";
        let h = req(get);
        assert_eq!(
            (h.len, h.framing, h.close),
            (get.len() - 3, Framing::Empty, false)
        );
        for cut in 0..get.len() - 3 {
            assert_eq!(parse_request_head(&get[..cut]), Ok(None), "{cut}");
        }
        let post = req(b"POST /x HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(post.framing, Framing::Length(5));
        let chunked = req(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        assert_eq!(req(b"HEAD / HTTP/1.1\r\n\r\n").method, Method::Head);
        assert!(req(b"GET / HTTP/1.0\r\n\r\n").close);
        assert!(!req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(req(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").close);
        let ws = req(
            b"GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(ws.upgrade);
        assert_eq!(req(b"\r\nGET / HTTP/1.1\r\n\r\n").len, 20);
    }

    #[test]
    fn bad_requests() {
        let bad = |raw: &[u8]| parse_request_head(raw).unwrap_err();
        assert!(matches!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
            HeadError::BadContentLength(_)
        ));
        assert!(matches!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            HeadError::BadContentLength(_)
        ));
        assert!(matches!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            HeadError::BadContentLength(_)
        ));
        assert!(matches!(
            bad(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            HeadError::BadContentLength(_)
        ));
        assert!(matches!(
            bad(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HeadError::BadTransferEncoding(_)
        ));
        assert!(matches!(
            bad(b"\x16\x03\x01\x02\x00"),
            HeadError::Malformed(_)
        ));
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(bad(&long), HeadError::TooLarge);
        let many: Vec<u8> = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"A: b\r\n".repeat(MAX_HEADERS + 1),
            b"\r\n",
        ]
        .concat();
        assert_eq!(bad(&many), HeadError::TooManyHeaders);
    }

    #[test]
    fn response_framing() {
        let resp = |raw: &[u8], m| parse_response_head(raw, m).unwrap().unwrap();
        let r = resp(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            Method::Other,
        );
        assert_eq!((r.framing, r.close), (Framing::Length(12), false));
        assert_eq!(
            resp(
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                Method::Head
            )
            .framing,
            Framing::Empty
        );
        for status in ["100 Continue", "204 No Content", "304 Not Modified"] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 4\r\n\r\n");
            assert_eq!(
                resp(raw.as_bytes(), Method::Other).framing,
                Framing::Empty,
                "{status}"
            );
        }
        assert!(resp(b"HTTP/1.1 100 Continue\r\n\r\n", Method::Other).interim());
        let up = resp(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", Method::Other);
        assert_eq!((up.framing, up.interim()), (Framing::Upgrade, false));
        assert_eq!(
            resp(
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                Method::Connect
            )
            .framing,
            Framing::Upgrade
        );
        let chunked = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            Method::Other,
        );
        assert_eq!(chunked.framing, Framing::Chunked);
        let eof = resp(b"HTTP/1.1 200 OK\r\n\r\n", Method::Other);
        assert_eq!((eof.framing, eof.close), (Framing::UntilClose, true));
        assert!(
            resp(
                b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                Method::Other
            )
            .close
        );
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\n", Method::Other),
            Ok(None)
        );
        assert!(parse_response_head(b"HTTP/2 200\r\n\r\n", Method::Other).is_err());
    }

    #[test]
    fn connection_close_is_added_and_nothing_else_changes() {
        let head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            with_connection_close(head),
            b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let keep = b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX-Connection: y\r\n\r\n";
        assert_eq!(
            with_connection_close(keep),
            b"HTTP/1.1 200 OK\r\nX-Connection: y\r\nConnection: close\r\n\r\n"
        );
        let lf = b"HTTP/1.1 200 OK\nA: b\n\n";
        let edited = with_connection_close(lf);
        assert_eq!(edited, b"HTTP/1.1 200 OK\nA: b\nConnection: close\n\n");
        let r = parse_response_head(&edited, Method::Other)
            .unwrap()
            .unwrap();
        assert!(r.close && r.len == edited.len());
    }

    #[test]
    fn request_lines_are_recognised() {
        assert_eq!(looks_like_request(b"GET / HTTP/1.1"), Some(true));
        assert_eq!(looks_like_request(b"GE"), None);
        assert_eq!(looks_like_request(b"\x10\x20"), Some(false));
        assert_eq!(looks_like_request(b" GET"), Some(false));
        assert_eq!(looks_like_request(b"PRI * HTTP/2.0"), Some(true));
        assert_eq!(looks_like_request(&[b'A'; 40]), Some(false));
    }

    proptest::proptest! {
        #[test]
        fn heads_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_request_head(&raw);
            for m in [Method::Head, Method::Connect, Method::Other] {
                let _ = parse_response_head(&raw, m);
            }
            let _ = with_connection_close(&raw);
            let _ = looks_like_request(&raw);
        }

        #[test]
        fn edited_heads_parse_the_same_but_close(
            fields in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,20}"), 0..8),
            status in 200u16..600,
        ) {
            let mut head = format!("HTTP/1.1 {status} X\r\n");
            for (n, v) in &fields {
                head.push_str(&format!("{n}: {}\r\n", v.trim()));
            }
            head.push_str("\r\n");
            let Ok(Some(before)) = parse_response_head(head.as_bytes(), Method::Other) else {
                return Ok(());
            };
            let edited = with_connection_close(head.as_bytes());
            let after = parse_response_head(&edited, Method::Other).unwrap().unwrap();
            proptest::prop_assert!(after.close);
            proptest::prop_assert_eq!(after.len, edited.len());
            proptest::prop_assert_eq!(after.status, before.status);
            if before.framing != Framing::UntilClose {
                proptest::prop_assert_eq!(after.framing, before.framing);
            }
        }
    }
}
