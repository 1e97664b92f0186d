//! The HTTP/2 client (cleartext with prior knowledge, gRPC-shaped, through
//! the `h2` crate): on one connection, a loop of unary calls `POST
//! /sluice.Echo/Call` (`content-type: application/grpc`, one length-prefixed
//! message), each awaiting its whole response and trailers. A GOAWAY with
//! NO_ERROR is a graceful leave: calls the server did not process (opened
//! after it, or above its last stream id) are not errors, the client makes
//! them again on its next connection, as gRPC clients do. A reset, a close
//! without GOAWAY or a GOAWAY with an error code are socket errors; an HTTP
//! status outside 2xx or a `grpc-status` other than 0 is a non-2xx.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request};
use tokio::sync::watch;

use super::http::host_header;
use super::{Conn, Ctx, Ended};
use crate::recorder::{Cause, HttpTally};

/// The method the calls go to: the tests' `grpcio` echo server's.
const PATH: &str = "/sluice.Echo/Call";
/// A gRPC message: not compressed, 5 bytes long, `sluice`'s echo.
const MESSAGE: &[u8] = b"\x00\x00\x00\x00\x05hello";

/// How one call ended.
enum Call {
    /// Answered; `true` when with a 2xx status and `grpc-status: 0`.
    Answered(bool),
    /// Not processed, so safe to retry elsewhere (RFC 9113 §8.7): the server
    /// sent GOAWAY (NO_ERROR) first, or refused the stream.
    NotProcessed,
    /// Failed at the connection level.
    Failed(Cause),
}

/// Opens the HTTP/2 connection and calls until the server sends GOAWAY, a
/// call fails, or the run stops.
pub(super) async fn hold(
    ctx: &Ctx,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    counts: &mut HttpTally<'_>,
) -> Ended {
    let handshake = tokio::select! {
        biased;
        _ = crate::stopped(stop) => return Ended::Stopped,
        r = h2::client::handshake(conn.stream) => r,
    };
    let (client, connection) = match handshake {
        Ok(c) => c,
        Err(e) => {
            counts.socket_error();
            return Ended::Lost(cause_of(&e));
        }
    };
    // The connection task ends when the server closes the connection (after
    // a GOAWAY, once its streams are done) or when `client` is dropped.
    let driver = tokio::spawn(connection);
    let authority = host_header(&ctx.cfg.host, ctx.cfg.port);
    let think = Duration::from_millis(ctx.cfg.http_interval_ms);
    let mut client = client;
    let ended = loop {
        tokio::select! {
            biased;
            _ = crate::stopped(stop) => break Ended::Stopped,
            _ = tokio::time::sleep(think) => {}
        }
        let call = tokio::select! {
            biased;
            _ = crate::stopped(stop) => break Ended::Stopped,
            c = call(&mut client, &authority) => c,
        };
        match call {
            Call::Answered(ok) => {
                counts.request();
                if !ok {
                    counts.non2xx();
                }
            }
            Call::NotProcessed => break Ended::Lost(Cause::GoAway),
            Call::Failed(cause) => {
                counts.request();
                counts.socket_error();
                break Ended::Lost(cause);
            }
        }
    };
    drop(client);
    if matches!(ended, Ended::Lost(Cause::GoAway)) {
        // The server closes once its streams are done; a connection that
        // ends in an error after a graceful GOAWAY is still a graceful leave.
        let _ = driver.await;
    } else {
        driver.abort();
    }
    ended
}

/// One unary call.
async fn call(client: &mut SendRequest<Bytes>, authority: &str) -> Call {
    let ready = match client.clone().ready().await {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    *client = ready;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{authority}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a static request is well formed");
    let (response, mut body) = match client.send_request(request, false) {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    if let Err(e) = body.send_data(Bytes::from_static(MESSAGE), true) {
        return failure(&e);
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    let mut ok = response.status().is_success() && grpc_ok(response.headers()) != Some(false);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(data) => {
                let _ = body.flow_control().release_capacity(data.len());
            }
            Err(e) => return failure(&e),
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => ok &= grpc_ok(&trailers) != Some(false),
        Ok(None) => {}
        Err(e) => return failure(&e),
    }
    Call::Answered(ok)
}

/// `grpc-status` in `headers`: whether it is 0, if it is there.
fn grpc_ok(headers: &HeaderMap) -> Option<bool> {
    headers.get("grpc-status").map(|v| v.as_bytes() == b"0")
}

/// A call that did not complete: not processed after a graceful GOAWAY,
/// otherwise a failure.
fn failure(e: &h2::Error) -> Call {
    if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) {
        return Call::NotProcessed;
    }
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        // RFC 9113 §8.7: refused streams were not processed; retried.
        return Call::NotProcessed;
    }
    Call::Failed(cause_of(e))
}

/// The bench's cause for an `h2` error.
fn cause_of(e: &h2::Error) -> Cause {
    match e.get_io() {
        Some(io) => super::cause_of(io),
        None if e.is_go_away() => Cause::ProtocolError,
        None => Cause::Reset,
    }
}
