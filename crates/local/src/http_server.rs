//! `sluice serve-http`: a sample HTTP server built in, so HTTP, WebSocket and
//! gRPC demos and tests need nothing installed. One port speaks three
//! protocols, told apart by each connection's first bytes:
//!
//! - HTTP/1.1 keep-alive: every request gets `200` with the body `ok NAME\n`
//!   (no body for HEAD); request bodies (Content-Length or chunked) are read
//!   and dropped; pipelined requests are answered in order; `Connection:
//!   close` and HTTP/1.0 are honoured. Framing is `sluice_wire::http1`'s, the
//!   same the proxy follows.
//! - WebSocket (a request with `Upgrade`, through `tokio-tungstenite`): every
//!   data message is echoed; a Close is answered with a Close.
//! - HTTP/2 cleartext with prior knowledge (h2c, the connection preface
//!   `PRI * HTTP/2.0`, through the `h2` crate): a gRPC call (`content-type:
//!   application/grpc`) gets `200`, its request message back and the trailer
//!   `grpc-status: 0`; any other request gets `200` with `ok NAME\n`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sluice_wire::http1::{Body, Method, parse_request_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::LocalError;

/// `sluice serve-http`: a sample HTTP/1.1, WebSocket and h2c server.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpServerArgs {
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// The name in each response body (`ok NAME`), to tell instances apart.
    #[arg(long, default_value = "sluice")]
    pub name: String,
}

/// Serves until the process ends; fails only when the port cannot be bound.
pub async fn serve_http(args: HttpServerArgs) -> Result<(), LocalError> {
    let listen = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| LocalError::HttpServer { listen, source })?;
    let body: &'static str = Box::leak(format!("ok {}\n", args.name).into_boxed_str());
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(async move {
                    let _ = serve(conn, body).await;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Appends the answer to one request.
fn answer(out: &mut Vec<u8>, body: &str, head_request: bool, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n");
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One connection: h2c when it opens with the HTTP/2 preface, else HTTP/1.1,
/// which answers each request once its body is read (bodies are followed as
/// they stream in, never buffered) until a request asks for an upgrade: that
/// one is a WebSocket handshake.
async fn serve(mut conn: TcpStream, body: &'static str) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut pending = Vec::new();
    // Until the bytes so far can no longer be the start of the preface.
    while H2_PREFACE.starts_with(&pending) && pending.len() < H2_PREFACE.len() {
        if conn.read_buf(&mut pending).await? == 0 {
            return Ok(());
        }
    }
    if pending.starts_with(H2_PREFACE) {
        return serve_h2(Replay::new(pending, conn), body)
            .await
            .map_err(io::Error::other);
    }
    let mut out = Vec::new();
    // The request whose body is being read: its body, HEAD?, close?
    let mut current: Option<(Body, bool, bool)> = None;
    loop {
        let mut pos = 0;
        let mut close = false;
        loop {
            if let Some((req_body, head_request, wants_close)) = &mut current {
                pos += req_body
                    .advance(&pending[pos..])
                    .map_err(io::Error::other)?;
                if !req_body.done() {
                    break;
                }
                answer(&mut out, body, *head_request, *wants_close);
                close = *wants_close;
                current = None;
                if close {
                    break;
                }
            }
            match parse_request_head(&pending[pos..]).map_err(io::Error::other)? {
                Some(head) if head.upgrade => {
                    conn.write_all(&out).await?;
                    pending.drain(..pos);
                    return serve_ws(Replay::new(pending, conn)).await;
                }
                Some(head) => {
                    pos += head.len;
                    current = Some((
                        Body::new(head.framing),
                        head.method == Method::Head,
                        head.close,
                    ));
                }
                None => break,
            }
        }
        pending.drain(..pos);
        if !out.is_empty() {
            conn.write_all(&out).await?;
            out.clear();
        }
        if close {
            conn.shutdown().await?;
            // Read to the client's FIN so that the close is not a reset.
            let mut sink = [0u8; 1024];
            while conn.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        if conn.read_buf(&mut pending).await? == 0 {
            return Ok(());
        }
    }
}

/// The WebSocket handshake of the request at the start of `io`, then an echo
/// of every data message until the client closes (tungstenite answers a Close
/// with a Close and Pings with Pongs).
async fn serve_ws(io: Replay) -> io::Result<()> {
    let mut ws = tokio_tungstenite::accept_async(io)
        .await
        .map_err(io::Error::other)?;
    while let Some(message) = ws.next().await {
        let message = message.map_err(io::Error::other)?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await.map_err(io::Error::other)?;
        }
    }
    Ok(())
}

/// An h2c connection: each request is answered on its own task.
async fn serve_h2(io: Replay, body: &'static str) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(io).await?;
    while let Some(request) = conn.accept().await {
        let (request, respond) = request?;
        tokio::spawn(async move {
            if let Err(e) = answer_h2(request, respond, body).await {
                tracing::debug!(error = %e, "h2 stream failed");
            }
        });
    }
    Ok(())
}

/// Reads one HTTP/2 request's body, then answers it: a gRPC call with its
/// message back and `grpc-status: 0`, anything else with `ok NAME`.
async fn answer_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    body: &'static str,
) -> Result<(), h2::Error> {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let head_request = request.method() == http::Method::HEAD;
    let mut recv = request.into_body();
    let mut received = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        if grpc {
            received.extend_from_slice(&chunk);
        }
    }
    let content_type = if grpc {
        "application/grpc"
    } else {
        "text/plain"
    };
    let response = http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(())
        .expect("a static response is well formed");
    if grpc {
        let mut send = respond.send_response(response, false)?;
        send.send_data(Bytes::from(received), false)?;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers)
    } else if head_request {
        respond.send_response(response, true).map(drop)
    } else {
        let mut send = respond.send_response(response, false)?;
        send.send_data(Bytes::from_static(body.as_bytes()), true)
    }
}

/// A connection whose first bytes were already read: they are read again
/// first, so that a protocol library sees the connection from its start.
struct Replay {
    read: Vec<u8>,
    at: usize,
    conn: TcpStream,
}

impl Replay {
    fn new(read: Vec<u8>, conn: TcpStream) -> Replay {
        Replay { read, at: 0, conn }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.at);
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}
