//! The control socket between the server and one jailer: a `SOCK_SEQPACKET` socket pair, so
//! every message arrives whole, with file descriptors attached by `SCM_RIGHTS`.
//!
//! Server → jailer: the shape spec (an encoded [`crate::spec::JailSpec`]); `G` once outbound
//! networking is attached (when asked for); later the run spec.
//! Jailer → server: `P` + pid + a pidfd of the environment's init; `L` + the Runtime API
//! listener (the jail is now parked, waiting for the run spec); `R` once the runtime was
//! exec'd, with the egress trigger's listener when the run spec asked for one; or `E` +
//! errno + the failed step at any point.
//! The server keeps its end open for the environment's lifetime: the jailer treats EOF on it
//! as "the server is gone" and kills the environment, so a crashed server leaves no jails.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The largest message (a spec with a 4 KiB environment is about 6 KiB).
pub const MAX_MESSAGE: usize = 256 * 1024;

/// One message from the jailer.
#[derive(Debug)]
pub enum JailerMessage {
    /// The environment's init was created: its pid in the server's PID namespace, and a pidfd.
    Init { pid: u32, pidfd: OwnedFd },
    /// The Runtime API listener inside the jail's network namespace: the jail is parked.
    Listener { listener: OwnedFd },
    /// The runtime was exec'd (or, from a zygote's fork, runs); with the listener of the
    /// egress trigger it runs under, if any.
    Ready { trigger: Option<OwnedFd> },
    /// Setting up the jail failed at `step` with `errno`.
    Failed { errno: i32, step: String },
    /// From the fork server: the monitor it forked for this socket, a child of the server.
    Forked { pid: u32 },
}

/// Creates the socket pair (both ends close-on-exec; the launcher moves one end to fd 3 in
/// the jailer only).
pub fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sends one message with optional file descriptors.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Receives one message into `buf`; returns its length (0: the peer closed) and the
/// descriptors that came with it. Truncated messages are errors.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
        || msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok((msg.bytes, fds))
}

/// [`recv`], waiting until `deadline` at most (`WouldBlock` once it has passed). A signal
/// handler that runs meanwhile (in the server, tokio's SIGCHLD whenever any child exits)
/// neither ends the wait — the kernel never restarts a receive with a timeout — nor extends
/// it: each retry waits only what is left.
pub fn recv_until(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Below the socket timeout's resolution; zero would mean "no timeout".
        if left < Duration::from_millis(1) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        rustix::net::sockopt::set_socket_timeout(
            sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(left),
        )?;
        match recv(sock, buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reports the init process (jailer side).
pub fn send_init(sock: BorrowedFd<'_>, pid: u32, pidfd: BorrowedFd<'_>) -> io::Result<()> {
    let mut m = vec![b'P'];
    m.extend_from_slice(&pid.to_le_bytes());
    send(sock, &m, &[pidfd])
}

/// Reports the listener (jailer side).
pub fn send_listener(sock: BorrowedFd<'_>, listener: BorrowedFd<'_>) -> io::Result<()> {
    send(sock, b"L", &[listener])
}

/// Reports that the runtime was exec'd (jailer side).
pub fn send_ready(sock: BorrowedFd<'_>) -> io::Result<()> {
    send(sock, b"R", &[])
}

/// Reports that the runtime was exec'd under the egress trigger whose listener this is.
pub fn send_ready_with_trigger(sock: BorrowedFd<'_>, listener: BorrowedFd<'_>) -> io::Result<()> {
    send(sock, b"R", &[listener])
}

/// Reports a failure (jailer side). Best effort: the server also notices the jailer's exit.
pub fn send_failed(sock: BorrowedFd<'_>, step: &str, errno: i32) {
    let mut m = vec![b'E'];
    m.extend_from_slice(&errno.to_le_bytes());
    m.extend_from_slice(step.as_bytes());
    let _ = send(sock, &m, &[]);
}

/// Reads the next jailer message (server side), waiting until `deadline` at most (see
/// [`recv_until`]). `Ok(None)`: the jailer closed the socket.
pub fn recv_jailer_message(
    sock: impl AsFd,
    deadline: Instant,
) -> io::Result<Option<JailerMessage>> {
    let mut buf = [0u8; 512];
    let (len, mut fds) = recv_until(sock.as_fd(), &mut buf, deadline)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed jailer message");
    match buf.get(..len) {
        Some([]) => Ok(None),
        Some([b'P', a, b, c, d]) if fds.len() == 1 => Ok(Some(JailerMessage::Init {
            pid: u32::from_le_bytes([*a, *b, *c, *d]),
            pidfd: fds.remove(0),
        })),
        Some([b'M', a, b, c, d]) if fds.is_empty() => Ok(Some(JailerMessage::Forked {
            pid: u32::from_le_bytes([*a, *b, *c, *d]),
        })),
        Some([b'L']) if fds.len() == 1 => Ok(Some(JailerMessage::Listener {
            listener: fds.remove(0),
        })),
        Some([b'R']) if fds.len() <= 1 => Ok(Some(JailerMessage::Ready { trigger: fds.pop() })),
        Some([b'E', a, b, c, d, step @ ..]) => Ok(Some(JailerMessage::Failed {
            errno: i32::from_le_bytes([*a, *b, *c, *d]),
            step: String::from_utf8_lossy(step).into_owned(),
        })),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn descriptors_and_messages_cross_the_socket_pair() {
        let (a, b) = socket_pair().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        send_init(a.as_fd(), 42, r.as_fd()).unwrap();
        send_failed(a.as_fd(), "mount /tmp", libc::ENOSPC);
        drop(a);
        match recv_jailer_message(&b, soon()).unwrap() {
            Some(JailerMessage::Init { pid: 42, pidfd }) => {
                assert_ne!(std::os::fd::AsRawFd::as_raw_fd(&pidfd), -1)
            }
            other => panic!("{other:?}"),
        }
        match recv_jailer_message(&b, soon()).unwrap() {
            Some(JailerMessage::Failed { errno, step }) => {
                assert_eq!((errno, step.as_str()), (libc::ENOSPC, "mount /tmp"))
            }
            other => panic!("{other:?}"),
        }
        assert!(recv_jailer_message(&b, soon()).unwrap().is_none());
    }

    #[test]
    fn garbage_from_the_jailer_is_an_error_not_a_panic() {
        let (a, b) = socket_pair().unwrap();
        send(a.as_fd(), b"Pxx", &[]).unwrap();
        send(a.as_fd(), b"X", &[]).unwrap();
        assert!(recv_jailer_message(&b, soon()).is_err());
        assert!(recv_jailer_message(&b, soon()).is_err());
    }
}
