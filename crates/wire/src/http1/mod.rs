//! HTTP/1.x message framing for a byte-transparent proxy: where a request or
//! response head ends, how its body is delimited, and the one edit the proxy
//! makes (a `Connection: close` in a response head).
//!
//! Heads are parsed with `httparse` and never re-serialised: the caller keeps
//! the bytes it read and forwards them as they are. [`parse_request_head`] and
//! [`parse_response_head`] say "not yet" (`Ok(None)`), where the head ends and
//! what follows it, or why the bytes are not HTTP/1.x. A [`Body`] is then fed
//! the bytes after the head and says how many of them belong to the body. No
//! input makes them panic (property-tested and fuzzed).

mod body;
mod head;

pub use body::{Body, BodyError};
pub use head::{
    Framing, HeadError, MAX_HEAD, MAX_HEADERS, Method, RequestHead, ResponseHead,
    looks_like_request, parse_request_head, parse_response_head, with_connection_close,
};
