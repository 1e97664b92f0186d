//! The decisions of an HTTP/1.x connection being evicted, without IO: which
//! request may still go to the upstream, which response carries
//! `Connection: close`, and when the connection is idle.

use std::collections::VecDeque;

use sluice_wire::http1::{Framing, Method, RequestHead, ResponseHead};

/// What the two directions of one HTTP/1.x connection know of each other.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Methods of the forwarded requests whose final response has not begun.
    waiting: VecDeque<Method>,
    /// A request's head went out and its body has not ended.
    request_open: bool,
    /// A response's head went out and its body has not ended.
    response_open: bool,
    /// A response saying `Connection: close` went out: nothing more is sent
    /// to the upstream after its request.
    closing: bool,
    /// The upstream switched protocols (101): WebSocket frames follow.
    pub upgraded: bool,
    /// The bytes stopped parsing as HTTP: they are copied as they are, and
    /// eviction is a plain close.
    pub opaque: bool,
}

/// What to do with a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Forward it.
    Forward,
    /// Do not: the connection closes after a response already on its way, so
    /// the client will send this request again on a new connection.
    Hold,
}

impl Exchange {
    /// The method of the request the next response answers.
    pub fn answering(&self) -> Method {
        self.waiting.front().copied().unwrap_or(Method::Other)
    }

    /// A whole request head arrived; `marked`: the connection is asked to leave.
    /// A marked connection forwards one more request only when no response is
    /// pending (the idle case: its response will carry the close); otherwise
    /// the pending response will.
    pub fn request(&mut self, head: &RequestHead, marked: bool) -> RequestVerdict {
        if self.closing || (marked && !self.waiting.is_empty()) {
            return RequestVerdict::Hold;
        }
        self.waiting.push_back(head.method);
        self.request_open = head.framing != Framing::Empty;
        RequestVerdict::Forward
    }

    /// Part of a request head is buffered (or no longer is).
    pub fn partial_request(&mut self, partial: bool) {
        self.request_open = partial;
    }

    /// The request's body ended.
    pub fn request_done(&mut self) {
        self.request_open = false;
    }

    /// A whole response head arrived; returns true when it must carry
    /// `Connection: close`: the connection is marked and this is the response
    /// to the last request forwarded.
    pub fn response(&mut self, head: &ResponseHead, marked: bool) -> bool {
        if head.interim() {
            return false;
        }
        self.waiting.pop_front();
        if head.framing == Framing::Upgrade {
            self.upgraded = true;
            return false;
        }
        self.response_open = head.framing != Framing::Empty;
        let add_close = marked && self.waiting.is_empty() && !head.close;
        self.closing |= add_close || head.close;
        add_close
    }

    /// The response's body ended.
    pub fn response_done(&mut self) {
        self.response_open = false;
    }

    /// Nothing in flight either way: closing now loses no exchange (the only
    /// risk left is a request the client is sending at this very moment).
    pub fn idle(&self) -> bool {
        self.waiting.is_empty() && !self.request_open && !self.response_open && !self.upgraded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::http1::{parse_request_head, parse_response_head};

    fn req(raw: &str) -> RequestHead {
        parse_request_head(raw.as_bytes()).unwrap().unwrap()
    }

    fn resp(raw: &str, m: Method) -> ResponseHead {
        parse_response_head(raw.as_bytes(), m).unwrap().unwrap()
    }

    const GET: &str = "GET / HTTP/1.1\r\n\r\n";
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

    #[test]
    fn busy_connection_closes_after_the_response_in_flight() {
        let mut x = Exchange::default();
        assert_eq!(x.request(&req(GET), false), RequestVerdict::Forward);
        assert!(!x.idle());
        // Marked while the request waits for its response.
        assert!(x.response(&resp(OK, Method::Other), true));
        x.response_done();
        assert!(x.idle());
        assert_eq!(x.request(&req(GET), true), RequestVerdict::Hold);
    }

    #[test]
    fn idle_connection_closes_after_its_next_response() {
        let mut x = Exchange::default();
        assert_eq!(x.request(&req(GET), false), RequestVerdict::Forward);
        assert!(!x.response(&resp(OK, Method::Other), false));
        x.response_done();
        // Marked while idle: the next request still goes, its response closes.
        assert_eq!(x.request(&req(GET), true), RequestVerdict::Forward);
        assert!(x.response(&resp(OK, Method::Other), true));
    }

    #[test]
    fn pipelined_requests_after_the_marked_response_are_held() {
        let mut x = Exchange::default();
        x.request(&req(GET), false);
        x.request(&req("HEAD / HTTP/1.1\r\n\r\n"), false);
        assert_eq!(x.request(&req(GET), true), RequestVerdict::Hold);
        assert!(
            !x.response(&resp(OK, Method::Other), true),
            "not the last one"
        );
        assert_eq!(x.answering(), Method::Head);
        assert!(!x.response(&resp("HTTP/1.1 100 Continue\r\n\r\n", Method::Head), true));
        assert!(x.response(&resp(OK, Method::Head), true));
    }

    #[test]
    fn upgrades_and_server_closes() {
        let mut x = Exchange::default();
        x.request(
            &req("GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            false,
        );
        assert!(!x.response(
            &resp("HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::Other),
            true
        ));
        assert!(x.upgraded && !x.idle());
        let mut y = Exchange::default();
        y.request(&req(GET), false);
        assert!(!y.response(
            &resp(
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                Method::Other
            ),
            true
        ));
        assert_eq!(y.request(&req(GET), false), RequestVerdict::Hold);
    }
}
