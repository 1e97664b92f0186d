//! `sluice bench sink` (hidden): the least a server can do, so the
//! generator can be measured rather than the broker. It accepts, answers
//! CONNECT with an accepting CONNACK and PINGREQ with PINGRESP, drops other
//! MQTT packets, and echoes anything that is not MQTT (raw TCP clients).
//!
//! Several sinks can listen on one port (SO_REUSEPORT): the kernel spreads
//! connections over them, so a 100k-connection measurement fits under the
//! per-process open-files limit.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_wire::mqtt::{ConnAck, Connect, PacketType, encode_pingresp, parse_fixed_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::BenchError;
use crate::cli::SinkArgs;

/// Listens on the given address until killed.
pub async fn run(args: SinkArgs) -> Result<(), BenchError> {
    let addr = SocketAddr::new(args.host, args.port);
    let io = |e: std::io::Error| BenchError::Io {
        what: format!("sink on {addr}"),
        source: e,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.set_reuseaddr(true).map_err(io)?;
    socket.set_reuseport(true).map_err(io)?;
    socket.bind(addr).map_err(io)?;
    let listener = socket.listen(4096).map_err(io)?;
    println!("sink listening on {}", listener.local_addr().map_err(io)?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            // Out of file descriptors or a transient error: let clients
            // time out rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut version = None;
    let mut out = Vec::new();
    loop {
        let mut scratch = [0u8; 2048];
        let n = match stream.read(&mut scratch).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&scratch[..n]);
        if version.is_none()
            && buf
                .first()
                .is_some_and(|b| b >> 4 != PacketType::Connect as u8)
        {
            // Not MQTT: echo.
            if stream.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
            continue;
        }
        out.clear();
        while let Ok(Some(header)) = parse_fixed_header(&buf) {
            let len = header.packet_len();
            if buf.len() < len {
                break;
            }
            match header.packet_type {
                PacketType::Connect => {
                    let Ok(connect) = Connect::decode(&buf[..len]) else {
                        return;
                    };
                    version = Some(connect.version);
                    ConnAck {
                        session_present: false,
                        reason_code: 0,
                    }
                    .encode(connect.version, &mut out);
                }
                PacketType::PingReq => encode_pingresp(&mut out),
                PacketType::Disconnect => return,
                _ => {}
            }
            buf.drain(..len);
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
