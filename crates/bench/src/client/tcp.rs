//! The raw TCP client: connect and hold, optionally sending a payload at
//! the publish rate (an echo server sends it back; whatever comes is read
//! and dropped).

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::mqtt::payload;
use super::{Conn, Ctx, Ended, cause_of, publish_schedule, read_some};
use crate::recorder::Cause;

/// Holds a TCP connection until the peer ends it or the run stops.
pub(super) async fn hold(ctx: &Ctx, conn: Conn, stop: &mut watch::Receiver<bool>) -> Ended {
    let Conn {
        mut stream,
        mut buf,
    } = conn;
    let mut publish = publish_schedule(ctx.cfg.publish_rate, 0);
    let message = publish.map(|_| {
        let mut m = payload(ctx.cfg.payload_size.saturating_sub(1));
        m.push(b'\n');
        m
    });
    let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    loop {
        let wake = publish.map_or(far, |(_, at)| at);
        tokio::select! {
            biased;
            _ = crate::stopped(stop) => {
                let _ = stream.shutdown().await;
                return Ended::Stopped;
            }
            ready = stream.readable() => {
                if let Err(e) = ready {
                    return Ended::Lost(cause_of(&e));
                }
                match read_some(&stream, &mut buf) {
                    Ok(0) => return Ended::Lost(Cause::ClosedByPeer),
                    Ok(_) => buf.clear(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Ended::Lost(cause_of(&e)),
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if let (Some((every, at)), Some(m)) = (publish.as_mut(), message.as_deref()) {
                    *at = (*at + *every).max(Instant::now());
                    if let Err(e) = stream.write_all(m).await {
                        return Ended::Lost(cause_of(&e));
                    }
                }
            }
        }
    }
}
