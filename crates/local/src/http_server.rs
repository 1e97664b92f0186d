//! `sluice serve-http`: a sample HTTP/1.1 keep-alive server built in, so HTTP
//! demos and tests need nothing installed. Every request gets `200` with the
//! body `ok NAME\n` (no body for HEAD); request bodies (Content-Length or
//! chunked) are read and dropped; pipelined requests are answered in order;
//! `Connection: close` and HTTP/1.0 are honoured. Framing is
//! `sluice_wire::http1`'s, the same the proxy follows.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use sluice_wire::http1::{Body, Method, parse_request_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::LocalError;

/// `sluice serve-http`: a sample HTTP/1.1 keep-alive server.
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

/// One connection: answers each request once its body is read (bodies are
/// followed as they stream in, never buffered).
async fn serve(mut conn: TcpStream, body: &str) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut pending = Vec::new();
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
