//! The server's side of starting a jail, in two steps:
//!
//! 1. [`PendingJail::park`]: the jailer creates the namespaces and the init, the init joins
//!    its cgroup, outbound networking is attached, the Runtime API listener comes back. The
//!    jail is now *parked*: everything but the function itself is ready. This is the slow
//!    part (joining a v1 cgroup alone costs an RCU grace period, ~10 ms on our machines;
//!    attaching slirp4netns ~20 ms), so the server may do it ahead of demand.
//! 2. [`ParkedJail::run`]: the run spec goes to the init, which builds the root, drops
//!    privileges and execs the runtime (~1-2 ms).
//!
//! The jailer's end of the control socket is its stdin, so the standard library can start
//! it with posix_spawn (vfork) instead of fork, whose cost grows with the server's memory;
//! no code of ours runs between fork and exec, which keeps this sound in a multi-threaded
//! server. Spawning itself is left to the caller.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::control::{self, JailerMessage};
use crate::egress::{Egress, EgressConfig};
use crate::spec::JailSpec;

/// Why a jail did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("jail setup failed at \"{step}\": {source}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("the jailer exited before the environment was ready")]
    JailerExited,
    #[error("the jailer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
}

/// A jailer command prepared but not yet started: holds the server's end of the control
/// socket.
#[derive(Debug)]
pub struct PendingJail {
    server_end: OwnedFd,
}

/// Makes the jailer's end of the control socket the stdin of `cmd` and returns the pending
/// jail. Call [`PendingJail::park`] once `cmd` was spawned (and dropped: it holds a copy of
/// the jailer's end, which must close for EOF to mean "the jailer is gone").
pub fn prepare(cmd: &mut Command) -> io::Result<PendingJail> {
    let (server_end, jail_end) = control::socket_pair()?;
    cmd.stdin(Stdio::from(jail_end));
    Ok(PendingJail { server_end })
}

/// The server's fork server for jailers (`nimbus __jail` with its socket at descriptor 3,
/// see [`crate::jailer::jailer_main`]): one process, started once, that forks each
/// environment's monitor as a child of the server. Dropping it stops it (its monitors go on:
/// they are the server's children).
#[derive(Debug)]
pub struct ForkServer {
    control: OwnedFd,
    process: crate::spawn::SpawnedChild,
}

/// How long the fork server may take to answer a request (normally well under 1 ms).
const FORK_TIMEOUT: Duration = Duration::from_secs(5);

impl ForkServer {
    /// Starts `program args…`, the jailer, as a fork server.
    pub fn start(program: &std::path::Path, args: &[String]) -> io::Result<ForkServer> {
        let (control, theirs) = control::socket_pair()?;
        let process = crate::spawn::spawn(
            program,
            args,
            &[],
            &[(theirs.as_fd(), crate::jailer::FORK_SERVER_FD)],
        )?;
        Ok(ForkServer { control, process })
    }

    /// The fork server's pid.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Forks a jailer whose standard output and error are `log`: its pending jail, and the
    /// jailer itself, a child of ours (dropping it does not kill it: closing the pending
    /// jail's control socket ends it). Blocking, briefly. An `ErrorKind::BrokenPipe` error
    /// means this fork server is gone: start another.
    pub fn spawn_jailer(
        &self,
        log: BorrowedFd<'_>,
    ) -> io::Result<(PendingJail, crate::spawn::SpawnedChild)> {
        let (server_end, jail_end) = control::socket_pair()?;
        control::send(self.control.as_fd(), b"J", &[jail_end.as_fd(), log])?;
        drop(jail_end);
        let deadline = std::time::Instant::now() + FORK_TIMEOUT;
        let jailer = match control::recv_jailer_message(&server_end, deadline)? {
            Some(JailerMessage::Forked { pid }) => crate::spawn::SpawnedChild::adopt(pid)?,
            Some(JailerMessage::Failed { errno, step }) => {
                let e = io::Error::from_raw_os_error(errno);
                return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
            }
            None => return Err(io::ErrorKind::BrokenPipe.into()),
            Some(_) => return Err(io::ErrorKind::InvalidData.into()),
        };
        Ok((PendingJail { server_end }, jailer.leave_running_on_drop()))
    }
}

impl LaunchError {
    /// The function's entrypoint could not be found or executed (its fault, not the
    /// platform's); the error says why.
    pub fn entrypoint_error(&self) -> Option<&io::Error> {
        match self {
            LaunchError::Setup { step, source }
                if step == crate::jailer::STEP_FIND_PROGRAM || step == crate::jailer::STEP_EXEC =>
            {
                Some(source)
            }
            _ => None,
        }
    }
}

/// A jail whose runtime was exec'd.
#[derive(Debug)]
pub struct StartedJail {
    /// The Runtime API listener, inside the jail's network namespace.
    pub listener: TcpListener,
    pub process: JailProcess,
    /// The egress trigger's listener, when the run spec asked for egress on demand and the
    /// init could install it ([`crate::seccomp_notify`]). Its holder must serve it for the
    /// environment's lifetime: a held call without a supervisor fails with ENOSYS.
    pub egress_trigger: Option<OwnedFd>,
}

/// A jail ready to run a function: namespaces, init, cgroup, network, listener.
#[derive(Debug)]
pub struct ParkedJail {
    listener: TcpListener,
    process: JailProcess,
}

/// The environment's processes, from the server's side.
#[derive(Debug)]
pub struct JailProcess {
    /// Pid of the environment's init in the server's PID namespace.
    pub init_pid: u32,
    pidfd: OwnedFd,
    /// Kept open for the environment's lifetime: its closing tells the jailer the server is
    /// gone (or the parked jail is not wanted any more).
    control: OwnedFd,
    egress: std::sync::Mutex<Option<Egress>>,
    /// Set once the environment's egress was stopped: nothing attaches after that.
    egress_stopped: std::sync::atomic::AtomicBool,
}

impl JailProcess {
    /// SIGKILLs the environment's init; the kernel then kills every process in its PID
    /// namespace. Through the pidfd, so a recycled pid can never be hit. Idempotent.
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// A pidfd of the environment's init (valid for the environment's lifetime).
    pub fn init_pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Stops the environment's outbound networking, if any (after it exited); none is
    /// attached afterwards.
    pub fn stop_egress(&self) {
        self.egress_stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut e) = self.egress.lock()
            && let Some(mut e) = e.take()
        {
            e.stop();
        }
    }

    /// Attaches outbound networking to the environment's network namespace unless it has
    /// it (blocking, ~20 ms). An error once its egress was stopped.
    pub fn attach_egress(&self, config: &EgressConfig) -> io::Result<()> {
        let mut egress = self
            .egress
            .lock()
            .map_err(|_| io::Error::other("egress state poisoned"))?;
        if self
            .egress_stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::other("the environment has ended"));
        }
        if egress.is_none() {
            *egress = Some(Egress::attach(config, self.init_pid)?);
        }
        Ok(())
    }

    /// Whether the jail has outbound networking attached.
    pub fn has_egress(&self) -> bool {
        self.egress.lock().is_ok_and(|e| e.is_some())
    }
}

fn set_timeout(sock: &OwnedFd, timeout: Option<Duration>) -> io::Result<()> {
    rustix::net::sockopt::set_socket_timeout(sock, rustix::net::sockopt::Timeout::Recv, timeout)
        .map_err(io::Error::from)
}

/// Waits (blocking, at most `timeout`) until the peer on `sock` says `R`: a jailer once its
/// runtime was exec'd, a Python zygote's fork once its runtime runs (same messages). Returns
/// the egress trigger's listener if one came with it. A failure report (`E`), EOF or the
/// timeout is the error.
pub fn await_ready(sock: &OwnedFd, timeout: Duration) -> Result<Option<OwnedFd>, LaunchError> {
    await_message(sock, timeout, |m| match m {
        JailerMessage::Ready { trigger } => Some(trigger),
        _ => None,
    })
}

/// Reads jailer messages until `want` accepts one; a failure report, EOF or timeout ends it.
fn await_message<T>(
    sock: &OwnedFd,
    timeout: Duration,
    mut want: impl FnMut(JailerMessage) -> Option<T>,
) -> Result<T, LaunchError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match control::recv_jailer_message(sock, deadline) {
            Ok(Some(JailerMessage::Failed { errno, step })) => {
                return Err(LaunchError::Setup {
                    step,
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            Ok(Some(m)) => {
                if let Some(v) = want(m) {
                    return Ok(v);
                }
            }
            Ok(None) => return Err(LaunchError::JailerExited),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(LaunchError::Timeout(timeout));
            }
            Err(e) => return Err(LaunchError::Io(e)),
        }
    }
}

impl PendingJail {
    /// Sends the shape spec and waits (blocking, at most `timeout`) until the jail is parked.
    /// With `egress`, slirp4netns is attached to the jail's namespace before its init runs.
    pub fn park(
        self,
        shape: &JailSpec,
        timeout: Duration,
        egress: Option<&EgressConfig>,
    ) -> Result<ParkedJail, LaunchError> {
        let PendingJail { server_end } = self;
        let mut shape = shape.clone();
        shape.wait_for_network = egress.is_some();
        control::send(server_end.as_fd(), &shape.encode(), &[])?;
        let (init_pid, pidfd) = await_message(&server_end, timeout, |m| match m {
            JailerMessage::Init { pid, pidfd } => Some((pid, pidfd)),
            _ => None,
        })?;
        // From here on, a failure kills the init (dropping `server_end` makes the jailer
        // clean up too).
        let kill = |e: LaunchError| {
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
            e
        };
        let attached = match egress {
            Some(cfg) => {
                let e = Egress::attach(cfg, init_pid).map_err(|source| {
                    kill(LaunchError::Setup {
                        step: "attach the outbound network".into(),
                        source,
                    })
                })?;
                control::send(server_end.as_fd(), b"G", &[]).map_err(|e| kill(e.into()))?;
                Some(e)
            }
            None => None,
        };
        let listener = await_message(&server_end, timeout, |m| match m {
            JailerMessage::Listener { listener } => Some(listener),
            _ => None,
        })
        .map_err(kill)?;
        Ok(ParkedJail {
            listener: TcpListener::from(listener),
            process: JailProcess {
                init_pid,
                pidfd,
                control: server_end,
                egress: std::sync::Mutex::new(attached),
                egress_stopped: std::sync::atomic::AtomicBool::new(false),
            },
        })
    }

    /// [`park`](Self::park) then [`run`](ParkedJail::run) with the same spec.
    pub fn start(
        self,
        spec: &JailSpec,
        timeout: Duration,
        egress: Option<&EgressConfig>,
    ) -> Result<StartedJail, LaunchError> {
        self.park(spec, timeout, egress)?.run(spec, timeout)
    }
}

impl ParkedJail {
    /// Pid of the parked jail's init.
    pub fn init_pid(&self) -> u32 {
        self.process.init_pid
    }

    /// Whether outbound networking was attached.
    pub fn has_egress(&self) -> bool {
        self.process.has_egress()
    }

    /// A pidfd of the parked jail's init.
    pub fn init_pidfd(&self) -> BorrowedFd<'_> {
        self.process.init_pidfd()
    }

    /// Sends the run spec and waits (blocking, at most `timeout`) until the runtime was
    /// exec'd. The shape fields of `spec` (ids, user namespace, cgroup) are ignored: they
    /// were fixed when the jail was parked.
    pub fn run(self, spec: &JailSpec, timeout: Duration) -> Result<StartedJail, LaunchError> {
        let ParkedJail { listener, process } = self;
        let sock = &process.control;
        let result = control::send(sock.as_fd(), &spec.encode(), &[])
            .map_err(LaunchError::from)
            .and_then(|()| await_ready(sock, timeout))
            .and_then(|trigger| {
                set_timeout(sock, None)?;
                Ok(trigger)
            });
        match result {
            Ok(egress_trigger) => Ok(StartedJail {
                listener,
                process,
                egress_trigger,
            }),
            Err(e) => {
                process.kill();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn await_ready_reads_ready_failures_eof_and_silence() {
        let wait = Duration::from_millis(50);
        let (ours, theirs) = control::socket_pair().unwrap();
        control::send_ready(theirs.as_fd()).unwrap();
        assert!(matches!(await_ready(&ours, wait), Ok(None)));
        let (r, _w) = rustix::pipe::pipe().unwrap();
        control::send_ready_with_trigger(theirs.as_fd(), r.as_fd()).unwrap();
        assert!(
            matches!(await_ready(&ours, wait), Ok(Some(_))),
            "with a listener"
        );

        control::send_failed(theirs.as_fd(), "join the jail's namespaces", libc::EPERM);
        match await_ready(&ours, wait) {
            Err(LaunchError::Setup { step, source }) => {
                assert_eq!(step, "join the jail's namespaces");
                assert_eq!(source.raw_os_error(), Some(libc::EPERM));
            }
            other => panic!("{other:?}"),
        }

        let silence = await_ready(&ours, wait);
        assert!(
            matches!(silence, Err(LaunchError::Timeout(_))),
            "{silence:?}"
        );
        drop(theirs);
        assert!(matches!(
            await_ready(&ours, wait),
            Err(LaunchError::JailerExited)
        ));
    }

    extern "C" fn ignore(_: libc::c_int) {}

    /// A SIGUSR2 handler that does nothing, as tokio's SIGCHLD handler is to a blocked
    /// receive: it makes the receive (which has a timeout) fail with EINTR.
    fn interrupting_handler() {
        // SAFETY: a zeroed sigaction with a handler that does nothing is valid; SIGUSR2 is
        // used by nothing else in these tests.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            assert_eq!(
                libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut()),
                0
            );
        }
    }

    #[test]
    fn a_signal_handled_during_the_wait_does_not_end_it() {
        interrupting_handler();
        let (ours, theirs) = control::socket_pair().unwrap();
        // SAFETY: pthread_self has no preconditions.
        let waiter = unsafe { libc::pthread_self() } as usize;
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: the waiting thread is alive: it joins this one before it returns.
            unsafe { libc::pthread_kill(waiter as libc::pthread_t, libc::SIGUSR2) };
            std::thread::sleep(Duration::from_millis(50));
            control::send_ready(theirs.as_fd()).unwrap();
            theirs
        });
        let waited = await_ready(&ours, Duration::from_secs(10));
        drop(peer.join().unwrap());
        assert!(waited.is_ok(), "{waited:?}");
    }

    #[test]
    fn a_stream_of_signals_does_not_extend_the_wait() {
        interrupting_handler();
        let (ours, _silent) = control::socket_pair().unwrap();
        // SAFETY: pthread_self has no preconditions.
        let waiter = unsafe { libc::pthread_self() } as usize;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let signaller = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // Every 10 ms for up to 10 s: far more often than the wait's timeout.
                for _ in 0..1000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return true;
                    }
                    // SAFETY: the waiting thread is alive: it joins this one before it
                    // returns.
                    unsafe { libc::pthread_kill(waiter as libc::pthread_t, libc::SIGUSR2) };
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            })
        };
        let waited = await_ready(&ours, Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(
            signaller.join().unwrap(),
            "the wait outlasted the signals instead of its timeout"
        );
        assert!(matches!(waited, Err(LaunchError::Timeout(_))), "{waited:?}");
    }
}
