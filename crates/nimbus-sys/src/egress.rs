//! Outbound network access for a jail, through `slirp4netns` (a user-mode TCP/IP stack).
//!
//! slirp4netns attaches a tap device to the jail's network namespace (10.0.2.100/24, gateway
//! 10.0.2.2, DNS proxy 10.0.2.3) and carries its traffic through ordinary sockets of its own
//! in the host's namespace. Chosen over veth + NAT because it needs no host-global state
//! (no forwarding sysctl, no nftables rules, no address pool), works the same in rootless
//! mode, and dies with the environment; see docs/sandbox.md for the measurements and gaps.
//! `--disable-host-loopback` keeps the host's 127.0.0.1 (the control plane, other
//! environments' nothing) out of reach.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::pipe::PipeFlags;

/// How to give jails outbound access.
#[derive(Clone, Debug)]
pub struct EgressConfig {
    /// The slirp4netns executable.
    pub program: PathBuf,
    /// Let the jail reach the host's loopback through the gateway address. Tests only: it is
    /// how a test proves packets flow without sending any off this machine.
    pub allow_host_loopback: bool,
    /// How long to wait for the interface to be configured.
    pub ready_timeout: Duration,
}

impl EgressConfig {
    /// slirp4netns from `$PATH`'s usual places, if installed.
    pub fn detect() -> Option<EgressConfig> {
        [
            "/usr/bin/slirp4netns",
            "/usr/local/bin/slirp4netns",
            "/bin/slirp4netns",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .map(|program| EgressConfig {
            program,
            allow_host_loopback: false,
            ready_timeout: Duration::from_secs(5),
        })
    }
}

/// A running slirp4netns for one jail. Dropping it kills slirp4netns without waiting (its
/// exit tears down its own mount namespace, ~30 ms, and a server dropping hundreds of
/// environments at shutdown must not wait for them one by one); [`SpawnedChild`] reaps it in
/// the background. The normal path, [`Egress::stop`], waits.
///
/// [`SpawnedChild`]: crate::spawn::SpawnedChild
#[derive(Debug)]
pub struct Egress {
    child: crate::spawn::SpawnedChild,
    /// slirp4netns exits when this (its `--exit-fd`) is closed.
    exit: Option<OwnedFd>,
}

const READY_FD: i32 = 3;
const EXIT_FD: i32 = 4;

impl Egress {
    /// Attaches outbound networking to the network namespace of `pid` and waits until the
    /// interface is configured.
    pub fn attach(config: &EgressConfig, pid: u32) -> io::Result<Egress> {
        Self::spawn(config, &["--netns-type=pid".into(), pid.to_string()])
    }

    /// Same, for a namespace given by path (`/proc/<pid>/fd/<n>` of an nsfs descriptor).
    pub fn attach_path(config: &EgressConfig, path: &str) -> io::Result<Egress> {
        Self::spawn(config, &["--netns-type=path".into(), path.to_string()])
    }

    fn spawn(config: &EgressConfig, target: &[String]) -> io::Result<Egress> {
        let (ready_r, ready_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let (exit_r, exit_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let mut args = vec![
            "--configure".to_string(),
            "--mtu=65520".into(),
            "--enable-sandbox".into(),
            "--enable-seccomp".into(),
            format!("--ready-fd={READY_FD}"),
            format!("--exit-fd={EXIT_FD}"),
        ];
        if !config.allow_host_loopback {
            args.push("--disable-host-loopback".into());
        }
        args.extend(target.iter().cloned());
        args.push("tap0".into());
        let child = crate::spawn::spawn(
            &config.program,
            &args,
            &[],
            &[(ready_w.as_fd(), READY_FD), (exit_r.as_fd(), EXIT_FD)],
        )?;
        drop(ready_w);
        drop(exit_r);
        let mut egress = Egress {
            child,
            exit: Some(exit_w),
        };
        let mut fds = [PollFd::new(&ready_r, PollFlags::IN)];
        let deadline = std::time::Instant::now() + config.ready_timeout;
        // A signal handler of the server's (tokio's SIGCHLD) interrupts the wait: wait again,
        // for what is left.
        let ready = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(left) = rustix::time::Timespec::try_from(left) else {
                break false;
            };
            match rustix::event::poll(&mut fds, Some(&left)) {
                Err(rustix::io::Errno::INTR) => {}
                other => break other? == 1,
            }
        };
        let mut b = [0u8; 1];
        if !ready || rustix::io::read(ready_r.as_fd(), &mut b)? != 1 {
            egress.stop();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "slirp4netns did not configure the interface",
            ));
        }
        Ok(egress)
    }

    /// Stops slirp4netns and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if self.exit.take().is_some() {
            self.child.kill();
            self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// State letter of `/proc/PID/stat` (`Z` for a zombie), `None` once reaped.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn dropping_egress_kills_and_reaps_slirp4netns() {
        let Some(config) = EgressConfig::detect() else {
            eprintln!("skipped: slirp4netns is not installed");
            return;
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: attaching to another network namespace needs root");
            return;
        }
        let mut holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .expect("unshare --net");
        // Until unshare has exec'd sleep, the pid is not yet in the new namespace.
        let netns = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        let host = netns(std::process::id());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while netns(holder.id()) == host && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let egress = Egress::attach(&config, holder.id()).expect("attach slirp4netns");
        let pid = egress.child.id();
        assert_eq!(state(pid).map(|s| s != 'Z'), Some(true), "slirp4netns runs");
        drop(egress);
        // Killed and reaped: neither running nor left a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while state(pid).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(state(pid), None, "slirp4netns is reaped");
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
