//! The supervisor's side of the egress trigger ([`SeccompProgram::egress_trigger`],
//! docs/decisions/0012-outbound-network-on-first-use.md): an environment starts without
//! outbound networking, and its first `connect`/`sendto`/`sendmsg`/`sendmmsg` to an address
//! outside its own loopback waits, held by seccomp, until the server has attached it.
//!
//! Each held system call arrives as a [`Notification`] on the filter's listener. The server
//! reads the destination from the caller's memory ([`wants_the_outside`]), attaches egress if
//! it is outside and not attached yet, and then lets the call go on unchanged
//! ([`let_through`]): the kernel runs it as if it had never stopped. Nothing here decides
//! anything about security: a destination read wrong (the caller may rewrite it meanwhile)
//! only starts egress early, or lets one call fail with "network unreachable" as it would
//! without egress.
//!
//! [`SeccompProgram::egress_trigger`]: crate::seccomp::SeccompProgram::egress_trigger

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The one descriptor on which the trigger lets `sendmsg` and `sendmmsg` through: where the
/// process that installs it (the jail's init; a forked Python runtime, before it runs the
/// bootstrap) keeps its socket to the server, so it can hand over the listener. High, so that
/// a function, which never holds that socket (the exec'd runtime does not inherit it, the
/// forked one closes it first), is unlikely to reuse the number; one that does only bypasses
/// the trigger for its own sends on it.
pub const EXEMPT_FD: i32 = 1000;

/// Whether this kernel can hold calls for a supervisor and let them go on unchanged: user
/// notifications (5.0) with `SECCOMP_USER_NOTIF_FLAG_CONTINUE` (5.5), on x86_64 (the only
/// architecture the trigger program is written for).
pub fn supported() -> bool {
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail");
    let release = rustix::system::uname();
    let version: Vec<u32> = release
        .release()
        .to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    cfg!(target_arch = "x86_64")
        && actions.is_ok_and(|a| a.split_whitespace().any(|w| w == "user_notif"))
        && version.as_slice() >= [5, 5].as_slice()
}

/// A trigger's listener, served on the tokio reactor of the runtime that created it.
#[derive(Debug)]
pub struct Listener {
    fd: AsyncFd<OwnedFd>,
}

impl Listener {
    /// Registers the listener with the current tokio runtime (call it from inside one).
    pub fn new(fd: OwnedFd) -> io::Result<Listener> {
        // SAFETY: the AsyncFd owns `fd`, so it stays open, and the same descriptor, for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Listener { fd })
    }

    /// The next held call; `None` once none can come any more (no process of the
    /// environment is left) or the listener failed.
    pub async fn next(&self) -> Option<Notification> {
        loop {
            let mut guard = self.fd.readable().await.ok()?;
            // Readiness is edge-triggered: look at the level before waiting again.
            loop {
                let mut poll = [rustix::event::PollFd::new(
                    self.fd.get_ref(),
                    rustix::event::PollFlags::IN,
                )];
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                match rustix::event::poll(&mut poll, Some(&zero)) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return None,
                }
                let revents = poll[0].revents();
                if !revents.contains(rustix::event::PollFlags::IN) {
                    if revents
                        .intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR)
                    {
                        return None;
                    }
                    guard.clear_ready();
                    break;
                }
                // One is pending, so receiving cannot block; it may still go away first.
                match receive(self.fd.get_ref().as_fd()) {
                    Ok(n) => return Some(n),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
        }
    }

    /// Lets a held call go on as the kernel would have run it. `ENOENT`: it went away.
    pub fn let_through(&self, id: u64) -> io::Result<()> {
        let_through(self.fd.get_ref().as_fd(), id)
    }

    /// Whether the held call sends outside the environment's own host: see
    /// [`wants_the_outside`].
    pub fn wants_the_outside(&self, n: &Notification) -> bool {
        wants_the_outside(self.fd.get_ref().as_fd(), n)
    }
}

/// One held system call.
#[derive(Clone, Copy, Debug)]
pub struct Notification {
    /// The kernel's cookie for the answer.
    pub id: u64,
    /// The caller's thread id in the server's PID namespace.
    pub pid: u32,
    /// System call number and arguments.
    pub nr: i64,
    pub args: [u64; 6],
}

/// Receives the next held call. Call it once the listener is readable: with none pending it
/// would block. `ENOENT`: the call went away (its caller was killed or interrupted) first.
fn receive(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: an all-zero seccomp_notif is valid (plain integers), and the kernel requires
    // the buffer zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: SECCOMP_IOCTL_NOTIF_RECV writes one seccomp_notif into the buffer we pass,
    // which is exactly that type and lives for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: notif.id,
        pid: notif.pid,
        nr: i64::from(notif.data.nr),
        args: notif.data.args,
    })
}

/// Lets a held call go on as the kernel would have run it. `ENOENT`: it went away.
fn let_through(listener: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: SECCOMP_IOCTL_NOTIF_SEND reads one seccomp_notif_resp from the pointer, which
    // is exactly that type and lives for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a held call is still waiting for us (so what we read from its caller's memory was
/// read from the right process, not from one that reused its pid).
fn still_held(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: SECCOMP_IOCTL_NOTIF_ID_VALID reads one u64 from the pointer, which lives for the
    // call.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// Whether the held call sends to an address outside the environment's own host (not
/// loopback, not the unspecified address, not a Unix socket). When the destination cannot be
/// read, yes: better an early attach than a function without the network it asked for.
pub fn wants_the_outside(listener: BorrowedFd<'_>, n: &Notification) -> bool {
    let verdict = match n.nr {
        libc::SYS_connect => address_at(n.pid, n.args[1], n.args[2]),
        libc::SYS_sendto => address_at(n.pid, n.args[4], n.args[5]),
        libc::SYS_sendmsg => message_addresses(n.pid, n.args[1], 1),
        libc::SYS_sendmmsg => message_addresses(n.pid, n.args[1], n.args[2].min(16)),
        _ => Some(false),
    };
    match verdict {
        Some(outside) => outside,
        None => still_held(listener, n.id),
    }
}

/// Reads the `struct sockaddr` at `addr` (`len` bytes) in `pid`; `None` if unreadable.
fn address_at(pid: u32, addr: u64, len: u64) -> Option<bool> {
    if addr == 0 {
        return Some(false);
    }
    let mut buf = [0u8; 28]; // sockaddr_in6, the largest we look at
    let want = usize::try_from(len).map_or(buf.len(), |l| l.min(buf.len()));
    let got = read_remote(pid, addr, &mut buf[..want])?;
    Some(outside_address(&buf[..got]))
}

/// The destinations of `count` `struct msghdr` (`mmsghdr` when more than one) at `addr`.
fn message_addresses(pid: u32, addr: u64, count: u64) -> Option<bool> {
    const MSGHDR: usize = std::mem::size_of::<libc::msghdr>();
    const MMSGHDR: usize = std::mem::size_of::<libc::mmsghdr>();
    let stride = if count > 1 { MMSGHDR } else { MSGHDR };
    let mut outside = false;
    for i in 0..count {
        let mut hdr = [0u8; MSGHDR];
        let at = addr.checked_add(i * stride as u64)?;
        if read_remote(pid, at, &mut hdr)? != MSGHDR {
            return None;
        }
        // struct msghdr starts with msg_name (a pointer) and msg_namelen (a u32).
        let name = u64::from_ne_bytes(hdr[0..8].try_into().ok()?);
        let name_len = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
        outside |= address_at(pid, name, name_len.into())?;
    }
    Some(outside)
}

/// Copies `buf.len()` bytes at `addr` out of process `pid`; `None` if it cannot.
fn read_remote(pid: u32, addr: u64, buf: &mut [u8]) -> Option<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length for the call; the remote
    // iovec is only an address in the other process, which the kernel checks.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    usize::try_from(n).ok()
}

/// Whether a raw `struct sockaddr` names a host other than this one.
fn outside_address(sa: &[u8]) -> bool {
    let Some(family) = sa.get(0..2).map(|f| u16::from_ne_bytes([f[0], f[1]])) else {
        return false;
    };
    match i32::from(family) {
        libc::AF_INET => match sa.get(4..8) {
            Some(&[a, b, c, d]) => {
                let ip = std::net::Ipv4Addr::new(a, b, c, d);
                !(ip.is_loopback() || ip.is_unspecified())
            }
            _ => false,
        },
        libc::AF_INET6 => match sa.get(8..24).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(bytes) => {
                let ip = std::net::Ipv6Addr::from(bytes);
                let local = |ip: std::net::Ipv6Addr| ip.is_loopback() || ip.is_unspecified();
                !(local(ip)
                    || ip
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified()))
            }
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr(addr: std::net::SocketAddr) -> Vec<u8> {
        let (storage, len) = match addr {
            std::net::SocketAddr::V4(a) => {
                // SAFETY: all-zero is a valid sockaddr_in.
                let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                // SAFETY: plain bytes of a plain struct.
                let bytes: [u8; 16] = unsafe { std::mem::transmute(sin) };
                (bytes.to_vec(), 16)
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: all-zero is a valid sockaddr_in6.
                let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                // SAFETY: plain bytes of a plain struct.
                let bytes: [u8; 28] = unsafe { std::mem::transmute(sin6) };
                (bytes.to_vec(), 28)
            }
        };
        storage[..len].to_vec()
    }

    #[test]
    fn loopback_and_unspecified_destinations_stay_inside() {
        for inside in [
            "127.0.0.1:9001",
            "127.8.9.10:80",
            "0.0.0.0:80",
            "[::1]:9001",
            "[::]:80",
            "[::ffff:127.0.0.1]:9001",
        ] {
            let sa = sockaddr(inside.parse().unwrap());
            assert!(!outside_address(&sa), "{inside}");
        }
        for outside in [
            "10.0.2.3:53",
            "93.184.216.34:443",
            "[2606:2800:220:1::1]:443",
            "[::ffff:10.0.2.2]:80",
        ] {
            let sa = sockaddr(outside.parse().unwrap());
            assert!(outside_address(&sa), "{outside}");
        }
        let mut unix = vec![0u8; 110];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert!(!outside_address(&unix), "a Unix socket");
        assert!(!outside_address(&[]), "nothing");
        assert!(
            !outside_address(&sockaddr("10.0.2.3:53".parse().unwrap())[..6]),
            "truncated"
        );
    }

    #[test]
    fn destinations_are_read_from_the_callers_memory() {
        // Our own process stands in for the caller.
        let me = std::process::id();
        let out = sockaddr("93.184.216.34:443".parse().unwrap());
        let lo = sockaddr("127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            address_at(me, out.as_ptr() as u64, out.len() as u64),
            Some(true)
        );
        assert_eq!(
            address_at(me, lo.as_ptr() as u64, lo.len() as u64),
            Some(false)
        );
        assert_eq!(address_at(me, 0, 16), Some(false), "no address");
        assert_eq!(address_at(me, 8, 16), None, "unreadable");

        let messages = |second: Option<&[u8]>| {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
            msgs[0].msg_hdr.msg_name = lo.as_ptr() as *mut libc::c_void;
            msgs[0].msg_hdr.msg_namelen = lo.len() as u32;
            if let Some(sa) = second {
                msgs[1].msg_hdr.msg_name = sa.as_ptr() as *mut libc::c_void;
                msgs[1].msg_hdr.msg_namelen = sa.len() as u32;
            }
            msgs
        };
        let unnamed = std::hint::black_box(messages(None));
        let at = unnamed.as_ptr() as u64;
        assert_eq!(message_addresses(me, at, 1), Some(false));
        assert_eq!(message_addresses(me, at, 2), Some(false), "second unnamed");
        let named = std::hint::black_box(messages(Some(&out)));
        assert_eq!(message_addresses(me, named.as_ptr() as u64, 2), Some(true));
    }
}
