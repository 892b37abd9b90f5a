//! Starting a helper program from the server with `posix_spawn(3)`.
//!
//! `std::process::Command` forks when it must run code in the child (a `pre_exec` hook, as
//! any descriptor placement needs), and a fork of the server copies its page tables: ~1.5 ms
//! of the server's CPU per environment for `slirp4netns` in a burst of cold starts. glibc's
//! `posix_spawn` shares the address space until the exec (`CLONE_VM | CLONE_VFORK`), and its
//! file actions place descriptors without any code of ours in the child.

use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};

/// A child started by [`spawn`]; held by a pidfd, so a signal can never reach a recycled pid.
/// Dropping it kills it and reaps it — at once if it is already gone, else on a background
/// thread — so a dropped child never lingers, running or as a zombie.
#[derive(Debug)]
pub struct SpawnedChild {
    pid: Pid,
    pidfd: OwnedFd,
    /// Reaped: its pid may belong to someone else now, so it is never waited for again.
    reaped: bool,
    /// Dropping it kills it (the default).
    kill_on_drop: bool,
}

impl SpawnedChild {
    /// Takes charge of a child of this process that someone else started for it (a Python
    /// zygote clones runtimes with `CLONE_PARENT`). `pid` must be a child of ours not yet
    /// reaped — then it cannot name anyone else — and from here on only this value waits for
    /// it.
    pub fn adopt(pid: u32) -> io::Result<SpawnedChild> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a pid"))?;
        let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
        Ok(SpawnedChild {
            pid,
            pidfd,
            reaped: false,
            kill_on_drop: true,
        })
    }

    pub fn id(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Dropped unreaped, it is reaped when it ends but not killed: for a child that ends by
    /// itself once its other ties to us are gone (a jailer whose control socket closed).
    pub fn leave_running_on_drop(mut self) -> SpawnedChild {
        self.kill_on_drop = false;
        self
    }

    /// SIGKILL. Harmless once it has exited.
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Waits for it to end and reaps it.
    pub fn wait(&mut self) {
        while !self.reaped {
            match rustix::process::waitpid(Some(self.pid), WaitOptions::empty()) {
                Err(rustix::io::Errno::INTR) => {}
                _ => self.reaped = true,
            }
        }
    }

    /// Reaps it if it has ended; never blocks. True once it is reaped.
    pub fn try_wait(&mut self) -> bool {
        let _ = self.try_status();
        self.reaped
    }

    /// Waits (on the current tokio runtime) for it to end, reaps it and returns its raw wait
    /// status. An error if it was reaped already or cannot be watched.
    pub async fn exited(&mut self) -> io::Result<i32> {
        let pidfd = self.pidfd.try_clone()?;
        // SAFETY: the AsyncFd owns its duplicate of the pidfd, so that descriptor stays open,
        // and the same, for as long as it is registered.
        let ended = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }?;
        loop {
            if self.reaped {
                return Err(io::Error::other("the child was reaped already"));
            }
            let mut ready = ended.readable().await?;
            // A pidfd is readable once the process has ended (level-triggered by the kernel,
            // edge-triggered by tokio: the status decides).
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Reaps it if it has ended and returns its raw wait status (as `waitpid` gives it);
    /// never blocks. `None` while it runs, and after it was reaped once.
    pub fn try_status(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        match rustix::process::waitpid(Some(self.pid), WaitOptions::NOHANG) {
            Ok(None) | Err(rustix::io::Errno::INTR) => None,
            Ok(Some((_, status))) => {
                self.reaped = true;
                Some(status.as_raw())
            }
            Err(_) => {
                self.reaped = true; // not our child (any more): nothing to reap
                None
            }
        }
    }
}

impl Drop for SpawnedChild {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if self.kill_on_drop {
            self.kill();
        }
        // A killed slirp4netns takes ~30 ms to exit (it tears down its own mount namespace):
        // the caller must not wait for it, and an unreaped child stays a zombie for the
        // server's lifetime (a function whose start fails after its jail got egress would
        // leave one per attempt).
        if !self.try_wait() {
            reap_later(self.pid);
        }
    }
}

/// Hands the pid of a killed, unreaped child of ours to the one background thread that reaps
/// dropped children. The pid cannot be reused before that thread has reaped it.
fn reap_later(pid: Pid) {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Pid>>> =
        std::sync::OnceLock::new();
    let sender = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Pid>();
        std::thread::Builder::new()
            .name("nimbus-reaper".into())
            .spawn(move || {
                for pid in rx {
                    while let Err(rustix::io::Errno::INTR) =
                        rustix::process::waitpid(Some(pid), WaitOptions::empty())
                    {
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    // Without the thread it stays a zombie until the server exits: never block the caller.
    if let Some(tx) = sender {
        let _ = tx.send(pid);
    }
}

fn check(what: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        // posix_spawn and its helpers return the error number instead of setting errno.
        let e = io::Error::from_raw_os_error(rc);
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// The array of pointers `execve` takes: each string's, then NULL. Valid while `strings` is.
fn null_terminated(strings: &[CString]) -> Vec<*mut c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// Runs `program` in a process group of its own with `args`, the environment `env` (nothing
/// else), stdin/stdout/stderr on `/dev/null`, the signal mask cleared and SIGPIPE back to its
/// default, and each `(fd, number)` of `fds` placed at `number` (they must be 3 or more).
/// Every other descriptor of the caller stays closed in the child as long as it is
/// close-on-exec, as all of the server's are.
pub fn spawn(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    fds: &[(BorrowedFd<'_>, i32)],
) -> io::Result<SpawnedChild> {
    if fds.iter().any(|&(_, n)| n < 3) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors 0-2 are /dev/null",
        ));
    }
    let path = cstring(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(Ok(path.clone()))
        .chain(args.iter().map(|a| cstring(a.as_bytes())))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<io::Result<_>>()?;
    let (argv_ptrs, envp) = (null_terminated(&argv), null_terminated(&env));
    // Copies numbered above every target, so placing one can never overwrite the source of
    // another; close-on-exec, so they vanish from the child at the exec.
    let sources: Vec<OwnedFd> = fds
        .iter()
        .map(|(fd, _)| rustix::io::fcntl_dupfd_cloexec(fd.as_fd(), 64).map_err(io::Error::from))
        .collect::<io::Result<_>>()?;

    let mut actions = Initialised::new(
        "spawn: file actions",
        libc::posix_spawn_file_actions_init,
        libc::posix_spawn_file_actions_destroy,
    )?;
    let devnull = c"/dev/null";
    for (n, flags) in [
        (0, libc::O_RDONLY),
        (1, libc::O_WRONLY),
        (2, libc::O_WRONLY),
    ] {
        // SAFETY: `actions` was initialised; `devnull` is NUL-terminated and outlives the
        // call (glibc copies the path).
        check("spawn: open /dev/null", unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut actions.value,
                n,
                devnull.as_ptr(),
                flags,
                0,
            )
        })?;
    }
    for (src, (_, n)) in sources.iter().zip(fds) {
        // SAFETY: `actions` was initialised; both are plain descriptor numbers. dup2 to a
        // different number clears close-on-exec on the copy.
        check("spawn: place a descriptor", unsafe {
            libc::posix_spawn_file_actions_adddup2(&mut actions.value, src.as_raw_fd(), *n)
        })?;
    }
    let mut attr = Initialised::new(
        "spawn: attributes",
        libc::posix_spawnattr_init,
        libc::posix_spawnattr_destroy,
    )?;
    // SAFETY: `attr` was initialised; the sigsets are local, initialised by sigemptyset
    // before use, and copied by the setters.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        libc::sigaddset(&mut default, libc::SIGPIPE);
        check(
            "spawn: signal mask",
            libc::posix_spawnattr_setsigmask(&mut attr.value, &empty),
        )?;
        check(
            "spawn: signal defaults",
            libc::posix_spawnattr_setsigdefault(&mut attr.value, &default),
        )?;
        // Process group 0: a group of its own, so a signal to the server's group (Ctrl-C)
        // reaches the child only through the server, which stops it in order.
        check(
            "spawn: process group",
            libc::posix_spawnattr_setpgroup(&mut attr.value, 0),
        )?;
        check(
            "spawn: flags",
            libc::posix_spawnattr_setflags(
                &mut attr.value,
                (libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF
                    | libc::POSIX_SPAWN_SETPGROUP) as libc::c_short,
            ),
        )?;
    }
    let mut pid: libc::pid_t = 0;
    // SAFETY: `path`, and every pointer of `argv_ptrs` and `envp` (both NULL-terminated),
    // point at NUL-terminated strings alive for the call; `actions` and `attr` are
    // initialised. glibc runs only its own async-signal-safe code in the child.
    check("spawn", unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            &actions.value,
            &attr.value,
            argv_ptrs.as_ptr(),
            envp.as_ptr(),
        )
    })?;
    drop(sources);
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("posix_spawn returned no pid"))?;
    // Our unreaped child: the pid cannot be reused before the pidfd refers to it.
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
            return Err(e.into());
        }
    };
    Ok(SpawnedChild {
        pid,
        pidfd,
        reaped: false,
        kill_on_drop: true,
    })
}

/// A glibc object made by an init function and freed by a destroy function
/// (`posix_spawn_file_actions_t`, `posix_spawnattr_t`): destroyed once when dropped, and
/// only if the init succeeded.
struct Initialised<T> {
    value: T,
    destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
}

impl<T> Initialised<T> {
    fn new(
        what: &str,
        init: unsafe extern "C" fn(*mut T) -> libc::c_int,
        destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
    ) -> io::Result<Self> {
        // SAFETY: used with plain C structs only, for which all-zero is valid storage that
        // `init` then fills.
        let mut value: T = unsafe { std::mem::zeroed() };
        // SAFETY: `value` is valid, writable storage for a T.
        check(what, unsafe { init(&mut value) })?;
        Ok(Initialised { value, destroy })
    }
}

impl<T> Drop for Initialised<T> {
    fn drop(&mut self) {
        // SAFETY: initialised in `new` (which fails without building one), destroyed once.
        unsafe { (self.destroy)(&mut self.value) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn placed_descriptors_arrive_and_nothing_else_of_ours_does() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let pipe = format!("pipe:[{}]", rustix::fs::fstat(&w).unwrap().st_ino);
        // The shell lists its own descriptors (number and target) into fd 5, then its
        // argument count and environment size.
        let script = r#"l=$(for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done)
            echo "$l" >&5; echo "$# $(wc -c < /proc/$$/environ)" >&5"#;
        let mut child = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            &[],
            &[(w.as_fd(), 5)],
        )
        .unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        child.wait();
        let mut lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.pop(),
            Some("0 0"),
            "no arguments past -c, an empty environment"
        );
        let fds: std::collections::HashMap<&str, &str> =
            lines.iter().filter_map(|l| l.split_once(' ')).collect();
        for n in ["0", "1", "2"] {
            assert_eq!(fds.get(n), Some(&"/dev/null"), "{out}");
        }
        assert_eq!(fds.get("5"), Some(&pipe.as_str()), "{out}");
        // Our pipe is there once, at 5: neither the original nor the spawn's copy leaked.
        assert_eq!(fds.values().filter(|t| **t == pipe).count(), 1, "{out}");
    }

    #[test]
    fn the_child_gets_exactly_the_given_environment_in_a_group_of_its_own() {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let script =
            r#"tr '\0' '\n' < /proc/$$/environ >&5; echo "group $(ps -o pgid= -p $$)" >&5"#;
        let mut child = spawn(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            &[
                ("LANG".into(), "C.UTF-8".into()),
                ("EMPTY".into(), String::new()),
            ],
            &[(w.as_fd(), 5)],
        )
        .unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let pid = child.id();
        child.wait();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["LANG=C.UTF-8", "EMPTY="], "{out}");
        assert_eq!(
            lines[2].split_whitespace().nth(1),
            Some(pid.to_string().as_str())
        );
    }

    /// State letter of `/proc/PID/stat` (`Z` for a zombie), `None` once reaped.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped_without_a_wait() {
        let pids: Vec<u32> = (0..3)
            .map(|_| {
                let child = spawn(Path::new("/bin/sleep"), &["30".into()], &[], &[]).unwrap();
                let pid = child.id();
                assert_eq!(state(pid).map(|s| s != 'Z'), Some(true), "running");
                drop(child);
                pid
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pids.iter().any(|&p| state(p).is_some()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for pid in pids {
            assert_eq!(state(pid), None, "{pid} neither runs nor is left a zombie");
        }
    }

    #[test]
    fn a_killed_child_is_reaped() {
        let mut child = spawn(Path::new("/bin/sleep"), &["30".into()], &[], &[]).unwrap();
        let pid = child.id();
        child.kill();
        child.wait();
        assert!(
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_err(),
            "reaped, not a zombie"
        );
    }

    #[test]
    fn an_adopted_child_reports_its_exit_status_once() {
        // Started by someone else on our behalf: here by the standard library, which then
        // forgets it (a dropped `std::process::Child` is never waited for).
        let pid = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap()
            .id();
        let mut child = SpawnedChild::adopt(pid).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_status() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "it did not end");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        assert_eq!(child.try_status(), None, "reaped once");
        assert_eq!(state(pid), None, "no zombie left");
        assert!(SpawnedChild::adopt(0).is_err());
    }

    #[test]
    fn missing_programs_and_low_targets_are_errors() {
        assert!(spawn(Path::new("/nonexistent/prog"), &[], &[], &[]).is_err());
        let (_r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        assert!(spawn(Path::new("/bin/true"), &[], &[], &[(w.as_fd(), 1)]).is_err());
    }
}
