//! Handing accepted TCP sockets from one process to another over a Unix stream
//! socket (`SCM_RIGHTS`), the way `sluice up`'s front gives each new connection to
//! an instance's evacuator and keeps nothing itself.
//!
//! Each message is one payload byte carrying one file descriptor. The sender's
//! copy stays open until the caller drops it; the receiver gets its own
//! descriptor for the same socket. Both sides are here so that they cannot drift
//! apart: [`send_fd`]/[`recv_fds`] (non-blocking-friendly, any `AsFd` Unix
//! stream) and their tokio forms [`send`]/[`recv`].

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// The payload byte sent with each descriptor.
const TAG: u8 = b'S';

/// Descriptors one receive makes room for. The sender sends one per message and
/// Linux does not merge messages carrying descriptors, so 1 would do; the room
/// for a few more means a surprise is closed (dropped) rather than leaked.
const MAX_FDS_PER_MESSAGE: usize = 4;

/// Sends `fd` with one payload byte over the Unix stream `socket`. On a
/// non-blocking socket this fails with `WouldBlock` when the socket buffer is
/// full (nothing was sent then).
pub fn send_fd(socket: impl AsFd, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small for one fd"));
    }
    let sent = sendmsg(
        socket,
        &[io::IoSlice::new(&[TAG])],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent == 1 {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "sent no byte"))
    }
}

/// Receives one message from the Unix stream `socket`: the descriptors it
/// carried (usually one), or `None` at end of stream. Received descriptors are
/// close-on-exec.
pub fn recv_fds(socket: impl AsFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        socket,
        &mut [io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(fds))
}

/// [`send_fd`] on a tokio Unix stream: waits while the socket buffer is full.
pub async fn send(socket: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    socket
        .async_io(Interest::WRITABLE, || send_fd(socket, fd))
        .await
}

/// [`recv_fds`] on a tokio Unix stream: waits for the next message.
pub async fn recv(socket: &UnixStream) -> io::Result<Option<Vec<OwnedFd>>> {
    socket
        .async_io(Interest::READABLE, || recv_fds(socket))
        .await
}

/// Turns a received descriptor into a non-blocking TCP stream, ready for the
/// runtime that will serve it (it must be a connected TCP socket).
pub fn into_tcp(fd: OwnedFd) -> io::Result<std::net::TcpStream> {
    let std = std::net::TcpStream::from(fd);
    // Fails with ENOTSOCK/ENOTCONN if the descriptor is not a connected socket.
    std.peer_addr()?;
    std.set_nonblocking(true)?;
    Ok(std)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream as StdUnix;

    use super::*;

    #[test]
    fn a_tcp_socket_crosses_a_socketpair() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let (a, b) = StdUnix::pair().unwrap();

        send_fd(&a, accepted.as_fd()).unwrap();
        drop(accepted); // the sender keeps nothing
        let mut fds = recv_fds(&b).unwrap().expect("a message");
        assert_eq!(fds.len(), 1);
        let mut received = std::net::TcpStream::from(fds.pop().unwrap());

        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        received.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        received.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");

        drop(a);
        assert!(recv_fds(&b).unwrap().is_none(), "end of stream");
    }

    #[tokio::test]
    async fn tokio_forms_hand_over_several_sockets_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[i]).unwrap();
            clients.push(c);
            let (accepted, _) = listener.accept().unwrap();
            send(&a, accepted.as_fd()).await.unwrap();
        }
        for i in 0..3u8 {
            let fds = recv(&b).await.unwrap().expect("a message");
            assert_eq!(fds.len(), 1);
            let fd = fds.into_iter().next().unwrap();
            let mut s = tokio::net::TcpStream::from_std(into_tcp(fd).unwrap()).unwrap();
            let mut buf = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
                .await
                .unwrap();
            assert_eq!(buf[0], i);
        }
    }
}
