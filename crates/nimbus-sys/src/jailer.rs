//! The jailer: the small, separate, single-threaded process (`nimbus __jail`) that turns a
//! [`JailSpec`] into a running, contained environment. Modelled on Firecracker's jailer.
//!
//! Three processes per environment:
//!
//! * **monitor** (the jailer itself, child of the server, in the host's PID namespace and
//!   outside the environment's cgroup): unshares the namespaces, forks the init, places it in
//!   the cgroup, hands the server a pidfd of it, then only waits. Its exit status reproduces
//!   the runtime's (same code, or killed by the same signal), so the server reads the
//!   environment's end from an ordinary child exit. EOF on the control socket (the server
//!   died) makes it kill the environment.
//! * **init** (PID 1 of the new PID namespace, in the cgroup): joins a new cgroup namespace,
//!   brings up `lo`, binds and reports the Runtime API listener, then is *parked* until the
//!   server sends the run spec (immediately, or when a pre-created jail is taken from the
//!   pool); builds the root and pivots into it, forks the runtime, reports once the runtime
//!   was exec'd, drops its own privileges and then only reaps. When the runtime exits, the
//!   init exits and the kernel kills everything left in the namespace.
//! * **runtime** (PID 2): drops to the unprivileged uid with no capabilities, sets
//!   no_new_privs, installs the seccomp filter and execs the function's runtime.
//!
//! With the run spec's `zygote` flag the init forks no runtime: it builds the root, reports
//! ready and only reaps orphans; a Python zygote's fork joins the namespaces and becomes
//! PID 2 (`runtimes/python/_nimbus_zygote.py`, decision 0010), and the server kills the init
//! when that runtime ends.
//!
//! All of this runs before any untrusted code, in a process that owns nothing of the
//! server's, which is why forking here is safe where forking in the server would not be.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::event::{PollFd, PollFlags};
use rustix::pipe::PipeFlags;
use rustix::process::{Pid, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use crate::control;
use crate::rootfs::{self, StepError};
use crate::seccomp::SeccompProgram;
use crate::spec::JailSpec;

/// The steps whose failure is the function's (its entrypoint is missing or cannot be
/// executed), not the platform's: Lambda answers them with `Runtime.InvalidEntrypoint`.
pub const STEP_FIND_PROGRAM: &str = "find the program";
pub const STEP_EXEC: &str = "exec the runtime";

/// Exit code of the monitor when the jail could not be set up (reported on the socket too).
const SETUP_FAILED: i32 = 125;

fn os<T>(what: &str, r: rustix::io::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| (what.to_string(), io::Error::from(e)))
}

fn io_step<T>(what: &str, r: io::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| (what.to_string(), e))
}

/// Takes the control socket from stdin (where the launcher put it, see `launch`) and puts
/// `/dev/null` there instead. `None` if stdin is not a socket: not started by the server.
fn take_control_socket() -> Option<OwnedFd> {
    let stdin = rustix::stdio::stdin();
    if !is_socket(stdin) {
        return None;
    }
    let ctl = control_socket_copy(stdin).ok()?;
    let null = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    rustix::stdio::dup2_stdin(&null).ok()?;
    Some(ctl)
}

/// A copy of a monitor's control socket where the monitor keeps it: at the egress trigger's
/// exempt descriptor if the descriptor limit allows (the init, which inherits it, reports its
/// runtime's start over it from under the trigger), else the lowest free one above 2.
fn control_socket_copy(fd: impl AsFd) -> rustix::io::Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(&fd, crate::seccomp_notify::EXEMPT_FD)
        .or_else(|_| rustix::io::fcntl_dupfd_cloexec(&fd, 3))
}

/// Where the fork server finds its control socket (a monitor's is its stdin).
pub const FORK_SERVER_FD: i32 = 3;

/// Entry point of `nimbus __jail`: must be called at the very top of `main`, before any
/// thread is started. Never returns.
///
/// Started by the server with its control socket as stdin, it is one environment's monitor;
/// with stdin on `/dev/null` and a socket at [`FORK_SERVER_FD`], the server's fork server for
/// monitors (same command line: a jail's `/proc/1/cmdline` is `/proc/self/exe __jail`).
pub fn jailer_main() -> ! {
    let monitor_mode = is_socket(rustix::stdio::stdin());
    // SAFETY: descriptor 3 is only looked at (fstat) through this borrow, which ends at once.
    let fork_server_mode =
        !monitor_mode && is_socket(unsafe { BorrowedFd::borrow_raw(FORK_SERVER_FD) });
    // Close anything the server leaked to us (only 0-2, and the fork server's socket, are
    // ours), so no descriptor of the server can reach the environment.
    let first_leaked = if fork_server_mode { 4u32 } else { 3u32 };
    // SAFETY: close_range only closes descriptors; none of these is owned by any Rust object
    // this early in a fresh process.
    unsafe { libc::syscall(libc::SYS_close_range, first_leaked, u32::MAX, 0u32) };
    if fork_server_mode {
        // SAFETY: descriptor 3 was placed by the server's launcher (checked above to be a
        // socket) and is owned by nothing else in this fresh process.
        fork_server(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(FORK_SERVER_FD) })
    }
    let Some(ctl) = take_control_socket() else {
        let _ = writeln!(io::stderr(), "nimbus __jail is started by the server only");
        std::process::exit(2)
    };
    run_monitor(ctl)
}

fn is_socket(fd: impl AsFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
    })
}

/// The monitor of one environment on control socket `ctl`, to its end. Never returns.
fn run_monitor(ctl: OwnedFd) -> ! {
    let status = match monitor(&ctl) {
        Ok(status) => status,
        Err((step, e)) => {
            control::send_failed(ctl.as_fd(), &step, e.raw_os_error().unwrap_or(libc::EIO));
            std::process::exit(SETUP_FAILED)
        }
    };
    exit_like(status)
}

/// The fork server: forks one monitor per request on `ctl`, as a child of the server, so
/// that an environment's start costs a fork of this small process instead of an exec of
/// the server's binary (its loading, relocation and start-up, ~1 ms of CPU, and a copy of
/// the server's descriptor table). Never returns; exits when the server closes `ctl`.
///
/// A request is `J` with SCM_RIGHTS(the monitor's control socket, the environment's log
/// pipe); the answer, on the monitor's control socket, is `M` + the monitor's pid (u32 LE),
/// which from then on is the server's own child (`CLONE_PARENT`): the server waits for it
/// and reads the environment's end from its exit as from an exec'd jailer.
fn fork_server(ctl: OwnedFd) -> ! {
    let mut buf = [0u8; 16];
    loop {
        let (len, fds) = match control::recv(ctl.as_fd(), &mut buf) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => std::process::exit(0),
        };
        if len == 0 {
            std::process::exit(0); // the server is gone, or replaces us
        }
        let [conn, log]: [OwnedFd; 2] = match fds.try_into() {
            Ok(fds) if &buf[..len] == b"J" => fds,
            _ => continue, // malformed: dropping what came closes it
        };
        // SAFETY: this process is single-threaded, so the child is a complete copy of a
        // consistent process; clone without CLONE_VM and with a null stack behaves as fork.
        // What glibc's fork() would redo in the child matters only with other threads.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_PARENT | libc::SIGCHLD,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if pid == 0 {
            drop(ctl);
            monitor_child(conn, log)
        }
        if pid > 0 {
            let mut m = vec![b'M'];
            m.extend_from_slice(&(pid as u32).to_le_bytes());
            let _ = control::send(conn.as_fd(), &m, &[]);
        } else {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            control::send_failed(conn.as_fd(), "fork the jailer", errno);
        }
    }
}

/// A forked monitor: puts its descriptors where an exec'd jailer has them, then monitors.
fn monitor_child(conn: OwnedFd, log: OwnedFd) -> ! {
    let placed = (|| -> rustix::io::Result<OwnedFd> {
        rustix::stdio::dup2_stdout(&log)?;
        rustix::stdio::dup2_stderr(&log)?;
        drop(log);
        // A process group of its own, as the launcher gives an exec'd jailer.
        rustix::process::setpgid(None, None)?;
        control_socket_copy(&conn)
    })();
    match placed {
        Ok(ctl) => {
            drop(conn);
            run_monitor(ctl)
        }
        Err(e) => {
            control::send_failed(
                conn.as_fd(),
                "place the jailer's descriptors",
                e.raw_os_error(),
            );
            std::process::exit(SETUP_FAILED)
        }
    }
}

/// Reproduces a raw wait status as our own end: same exit code, or death by the same signal.
fn exit_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // No core dump of the monitor for a signal the runtime died of.
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
        // SAFETY: restoring the default disposition has no memory effects; Rust's runtime
        // set SIGPIPE to ignored, which would otherwise swallow the signal.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        if let Some(signal) = Signal::from_named_raw(sig) {
            let _ = rustix::process::kill_process(rustix::process::getpid(), signal);
        }
        std::process::exit(128 + sig)
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

fn decode(what: &str, bytes: &[u8]) -> Result<JailSpec, StepError> {
    JailSpec::decode(bytes).map_err(|e| {
        (
            what.to_string(),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })
}

/// The monitor: sets up namespaces, forks the init, forwards it the run spec, waits.
/// Returns the runtime's wait status.
///
/// Two phases, so the server can prepare jails ahead of demand ("parked"): the first spec
/// only shapes the jail (user namespace, ids, cgroup, network); the second, which may come
/// much later, says what to run.
fn monitor(ctl: &OwnedFd) -> Result<i32, StepError> {
    let mut buf = vec![0u8; control::MAX_MESSAGE];
    let (len, _) = io_step("read the spec", control::recv(ctl.as_fd(), &mut buf))?;
    let shape = decode("decode the spec", &buf[..len])?;
    let seccomp = SeccompProgram::jail_policy();

    let (go_r, go_w) = os("create a pipe", rustix::pipe::pipe_with(PipeFlags::CLOEXEC))?;
    let (run_r, run_w) = os("create a pipe", rustix::pipe::pipe_with(PipeFlags::CLOEXEC))?;
    let (status_r, status_w) = os("create a pipe", rustix::pipe::pipe_with(PipeFlags::CLOEXEC))?;

    // The mount namespace is the init's own (it unshares it itself): pivot_root moves the
    // root of every process in a mount namespace, and the monitor must keep the host's view
    // (it removes the cgroup of an orphaned environment).
    let mut flags =
        UnshareFlags::NEWPID | UnshareFlags::NEWNET | UnshareFlags::NEWIPC | UnshareFlags::NEWUTS;
    let (outer_uid, outer_gid) = (rustix::process::getuid(), rustix::process::getgid());
    if shape.user_namespace {
        flags |= UnshareFlags::NEWUSER;
    }
    // SAFETY: no CLONE_FILES/CLONE_FS-sharing threads exist (the jailer is single-threaded
    // in production; see `unshare_unsafe`'s contract), and only namespace flags are passed.
    os("unshare namespaces", unsafe {
        rustix::thread::unshare_unsafe(flags)
    })?;
    if shape.user_namespace {
        // The unprivileged case: a process may map exactly its own ids into a namespace it
        // created (after denying setgroups).
        io_step(
            "deny setgroups",
            std::fs::write("/proc/self/setgroups", "deny"),
        )?;
        io_step(
            "write uid_map",
            std::fs::write(
                "/proc/self/uid_map",
                format!("{} {} 1", shape.uid, outer_uid.as_raw()),
            ),
        )?;
        io_step(
            "write gid_map",
            std::fs::write(
                "/proc/self/gid_map",
                format!("{} {} 1", shape.gid, outer_gid.as_raw()),
            ),
        )?;
    }

    // SAFETY: the jailer is single-threaded, so the child is a complete copy of a consistent
    // process (no lock can be held by a thread that does not exist in the child).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(("fork the init".into(), io::Error::last_os_error()));
    }
    if pid == 0 {
        drop((go_w, run_w, status_r));
        init_main(&shape, ctl, go_r, run_r, status_w, &seccomp)
    }
    drop((go_r, run_r, status_w));
    let init =
        Pid::from_raw(pid).ok_or_else(|| ("fork the init".into(), io::Error::other("pid 0")))?;
    // From here on a failure must not leave the init behind: it waits on `go` and dies with
    // us (PDEATHSIG), but kill it explicitly too.
    let kill_init = || {
        let _ = rustix::process::kill_process(init, Signal::KILL);
        let _ = rustix::process::waitpid(Some(init), rustix::process::WaitOptions::empty());
    };
    let setup = (|| {
        // Joining a cgroup (v1) costs an RCU grace period, ~10 ms here: one reason to park
        // jails ahead of demand.
        for procs in &shape.cgroup_procs {
            io_step(
                "join the environment's cgroup",
                std::fs::write(procs, pid.to_string()),
            )?;
        }
        let pidfd = os(
            "open a pidfd of the init",
            rustix::process::pidfd_open(init, rustix::process::PidfdFlags::empty()),
        )?;
        io_step(
            "report the init",
            control::send_init(ctl.as_fd(), pid as u32, pidfd.as_fd()),
        )?;
        if shape.wait_for_network {
            let mut b = [0u8; 8];
            match control::recv(ctl.as_fd(), &mut b) {
                Ok((1, _)) if b[0] == b'G' => {}
                Ok(_) => {
                    return Err((
                        "wait for the network".into(),
                        io::Error::from(io::ErrorKind::InvalidData),
                    ));
                }
                Err(e) => return Err(("wait for the network".into(), e)),
            }
        }
        os("release the init", rustix::io::write(&go_w, b"G"))?;
        Ok(pidfd)
    })();
    let pidfd = match setup {
        Ok(p) => p,
        Err(e) => {
            kill_init();
            return Err(e);
        }
    };
    drop(go_w);
    // Forwarding bytes, killing and reaping its own child need no privilege. Only removing
    // an orphaned cgroup (after the server died) does: cgroupfs refuses rmdir even to its
    // owner without CAP_DAC_OVERRIDE. The monitor reads nothing from the jail but the 4-byte
    // status, so keeping that one capability exposes little.
    keep_only_capabilities(CapabilitySet::DAC_OVERRIDE);

    // Forward the run spec to the init when it comes; wait for the init to end, or for the
    // server to go away.
    let mut run_w = Some(std::fs::File::from(run_w));
    let mut server_gone = false;
    loop {
        let mut fds = [
            PollFd::new(&pidfd, PollFlags::IN),
            PollFd::new(ctl, PollFlags::IN),
        ];
        let watched = if server_gone { 1 } else { 2 };
        let _ = rustix::event::poll(&mut fds[..watched], None);
        if fds[0].revents().contains(PollFlags::IN) {
            break;
        }
        if server_gone || fds[1].revents().is_empty() {
            continue;
        }
        match control::recv(ctl.as_fd(), &mut buf) {
            Ok((0, _)) | Err(_) => {
                server_gone = true;
                let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
            }
            Ok((len, _)) => {
                if let Some(mut w) = run_w.take() {
                    // Length-prefixed; the init reads it whole. A failed write means the init
                    // is gone, which the pidfd reports next.
                    let _ = w.write_all(&(len as u32).to_le_bytes());
                    let _ = w.write_all(&buf[..len]);
                }
            }
        }
    }
    let init_status =
        match rustix::process::waitpid(Some(init), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => st.as_raw(),
            _ => libc::SIGKILL,
        };
    if server_gone {
        // Nobody else will remove the environment's cgroup (the server normally does, after
        // reading its peak memory). Everything in it is dead now: the init was reaped.
        remove_cgroup_dirs(&shape.cgroup_procs);
    }
    // The init writes the runtime's status just before it exits; without it (the init was
    // killed), the init's own end is the environment's.
    let mut raw = [0u8; 4];
    let mut status_file = std::fs::File::from(status_r);
    match status_file.read_exact(&mut raw) {
        Ok(()) => Ok(i32::from_le_bytes(raw)),
        Err(_) => Ok(init_status),
    }
}

/// Removes the cgroup directories whose `cgroup.procs` files are listed, retrying briefly
/// while the kernel still reports them busy, then their parents if empty (the last jailer of
/// a dead server removes the server's parent; a restarted server recreates it). Best effort:
/// the server's sweep at its next start removes whatever is left.
fn remove_cgroup_dirs(procs_files: &[PathBuf]) {
    let dirs: Vec<&Path> = procs_files.iter().filter_map(|p| p.parent()).collect();
    for dir in &dirs {
        for _ in 0..50 {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                _ => break,
            }
        }
    }
    for parent in dirs.iter().filter_map(|d| d.parent()) {
        let _ = std::fs::remove_dir(parent); // fails while other environments live: fine
    }
}

/// Drops every capability (bounding, ambient, effective, permitted, inheritable).
fn drop_all_capabilities() {
    keep_only_capabilities(CapabilitySet::empty());
}

/// Drops every capability but `keep` (which stays effective and permitted only).
fn keep_only_capabilities(keep: CapabilitySet) {
    for bit in 0..64 {
        let cap = CapabilitySet::from_bits_retain(1 << bit);
        if !keep.contains(cap) {
            let _ = rustix::thread::remove_capability_from_bounding_set(cap);
        }
    }
    let _ = rustix::thread::clear_ambient_capability_set();
    let _ = rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    );
}

/// PID 1 of the environment. Never returns.
fn init_main(
    shape: &JailSpec,
    ctl: &OwnedFd,
    go: OwnedFd,
    run: OwnedFd,
    status_w: OwnedFd,
    seccomp: &SeccompProgram,
) -> ! {
    match init_setup(shape, ctl, go, run, seccomp) {
        Ok(Some(runtime)) => {
            init_reap(runtime, status_w);
        }
        Ok(None) => init_idle(seccomp),
        Err((step, e)) => {
            control::send_failed(ctl.as_fd(), &step, e.raw_os_error().unwrap_or(libc::EIO));
            std::process::exit(SETUP_FAILED)
        }
    }
}

/// Reads the run spec the monitor forwards (length-prefixed).
fn read_run_spec(run: OwnedFd) -> Result<JailSpec, StepError> {
    let mut f = std::fs::File::from(run);
    let mut len = [0u8; 4];
    io_step("receive the run spec", f.read_exact(&mut len))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > control::MAX_MESSAGE {
        return Err((
            "receive the run spec".into(),
            io::Error::from(io::ErrorKind::InvalidData),
        ));
    }
    let mut bytes = vec![0u8; len];
    io_step("receive the run spec", f.read_exact(&mut bytes))?;
    decode("decode the run spec", &bytes)
}

/// Everything the runtime process needs, prepared before the fork.
struct Exec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, StepError> {
    CString::new(s).map_err(|_| {
        (
            what.to_string(),
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })
}

/// Finds the program like execvp would, with the jail's own PATH (after pivot_root).
fn resolve_program(spec: &JailSpec) -> Result<PathBuf, StepError> {
    let not_found = || {
        (
            STEP_FIND_PROGRAM.to_string(),
            io::Error::from_raw_os_error(libc::ENOENT),
        )
    };
    let name = spec.argv.first().ok_or_else(not_found)?;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(not_found)
}

fn init_setup(
    shape: &JailSpec,
    ctl: &OwnedFd,
    go: OwnedFd,
    run: OwnedFd,
    seccomp: &SeccompProgram,
) -> Result<Option<i32>, StepError> {
    os(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)),
    )?;
    let mut g = [0u8; 1];
    match rustix::io::read(&go, &mut g) {
        Ok(1) => {}
        _ => {
            return Err((
                "wait for the monitor".into(),
                io::Error::from(io::ErrorKind::BrokenPipe),
            ));
        }
    }
    drop(go);
    // The monitor has placed us in the environment's cgroup: make it our cgroup root. And a
    // mount namespace of our own for the root we are about to build.
    // SAFETY: single-threaded; namespace flags only.
    os("unshare the mount and cgroup namespaces", unsafe {
        rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::NEWCGROUP)
    })?;
    io_step("bring up lo", crate::net::loopback_up())?;
    let listener = io_step(
        "bind the Runtime API listener",
        crate::net::bind_runtime_api(shape.runtime_api_port),
    )?;
    io_step(
        "report the listener",
        control::send_listener(ctl.as_fd(), listener.as_fd()),
    )?;
    drop(listener);

    // Parked until the server says what to run.
    let run_spec = read_run_spec(run)?;
    let spec = JailSpec {
        // The shape is fixed at creation: ids and user namespace were applied already.
        uid: shape.uid,
        gid: shape.gid,
        user_namespace: shape.user_namespace,
        ..run_spec
    };
    let spec = &spec;
    os(
        "set the host name",
        rustix::system::sethostname(spec.hostname.as_bytes()),
    )?;
    rootfs::build_and_enter(spec)?;
    if spec.zygote {
        // The runtime comes from a zygote, which joins our namespaces once we say the root
        // is ready.
        io_step("report the root", control::send_ready(ctl.as_fd()))?;
        return Ok(None);
    }

    let program = resolve_program(spec)?;
    let exec = Exec {
        program: cstring("program path", program.as_os_str().as_bytes())?,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring("argument", a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: spec
            .env
            .iter()
            .map(|(k, v)| cstring("environment variable", format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?,
    };
    let (err_r, err_w) = os("create a pipe", rustix::pipe::pipe_with(PipeFlags::CLOEXEC))?;
    // Egress on demand: the runtime inherits the trigger, installed here (we still hold
    // CAP_SYS_ADMIN, so no no_new_privs yet); its listener goes to the server with our ready
    // report, over the one socket the trigger lets `sendmsg` through on (so only if the control
    // socket sits there). Without it (a kernel that refuses, a descriptor limit too low) the
    // server attaches egress itself.
    let trigger = if spec.egress_on_demand && ctl.as_raw_fd() == crate::seccomp_notify::EXEMPT_FD {
        SeccompProgram::egress_trigger()
            .install_with_listener()
            .ok()
    } else {
        None
    };
    // SAFETY: the init is single-threaded (a fork of the single-threaded monitor).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(("fork the runtime".into(), io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_r);
        runtime_main(spec, &exec, seccomp, err_w)
    }
    drop(err_w);
    // EOF: the exec succeeded (the pipe is close-on-exec). Otherwise the child wrote which
    // step failed and how.
    let mut report = Vec::new();
    let _ = std::fs::File::from(err_r).read_to_end(&mut report);
    if let Some((code, rest)) = report.split_first_chunk::<4>() {
        let errno = i32::from_le_bytes(*code);
        let step = String::from_utf8_lossy(rest).into_owned();
        let _ = rustix::process::waitpid(Pid::from_raw(pid), rustix::process::WaitOptions::empty());
        return Err((step, io::Error::from_raw_os_error(errno)));
    }
    match &trigger {
        Some(listener) => io_step(
            "report the start",
            control::send_ready_with_trigger(ctl.as_fd(), listener.as_fd()),
        )?,
        None => io_step("report the start", control::send_ready(ctl.as_fd()))?,
    }
    drop(trigger);
    harden_init(seccomp);
    Ok(Some(pid))
}

/// The init of a jail whose runtime a zygote forked: the runtime is not our child, so there
/// is nothing to wait for but orphans, which the kernel reaps for us once SIGCHLD is ignored.
/// The server kills us when the zygote reports the runtime's end (or the server goes away:
/// the monitor kills us), and with us everything left in the namespace. Never returns.
fn init_idle(seccomp: &SeccompProgram) -> ! {
    // SAFETY: setting a disposition to SIG_IGN has no memory effects; no handler runs.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    harden_init(seccomp);
    loop {
        let _ = rustix::event::poll(&mut [], None);
    }
}

/// After the runtime started, the init keeps no privilege: it only reaps and exits.
fn harden_init(seccomp: &SeccompProgram) {
    drop_all_capabilities();
    let _ = rustix::thread::set_no_new_privs(true);
    let _ = seccomp.install();
}

/// Reaps every child; when the runtime ends, hands its status to the monitor and exits (the
/// kernel then kills whatever else is left in the namespace).
fn init_reap(runtime: i32, status_w: OwnedFd) -> ! {
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == runtime => {
                let _ = rustix::io::write(&status_w, &status.as_raw().to_le_bytes());
                std::process::exit(0)
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => std::process::exit(SETUP_FAILED),
        }
    }
}

/// The runtime process between fork and exec. Never returns.
fn runtime_main(spec: &JailSpec, exec: &Exec, seccomp: &SeccompProgram, err_w: OwnedFd) -> ! {
    let e = match runtime_setup(spec, seccomp) {
        Ok(()) => {
            let argv: Vec<*const libc::c_char> = exec
                .argv
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            let envp: Vec<*const libc::c_char> = exec
                .env
                .iter()
                .map(|a| a.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect();
            // SAFETY: `program`, and every pointer in `argv`/`envp`, point at NUL-terminated
            // strings owned by `exec`, alive for the call; both arrays end with NULL.
            unsafe { libc::execve(exec.program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            (STEP_EXEC.to_string(), io::Error::last_os_error())
        }
        Err(e) => e,
    };
    let mut report =
        e.1.raw_os_error()
            .unwrap_or(libc::EIO)
            .to_le_bytes()
            .to_vec();
    report.extend_from_slice(e.0.as_bytes());
    let _ = rustix::io::write(&err_w, &report);
    // SAFETY: _exit ends the process without running destructors or atexit handlers that
    // belong to the init's copy of the process state.
    unsafe { libc::_exit(127) }
}

fn runtime_setup(spec: &JailSpec, seccomp: &SeccompProgram) -> Result<(), StepError> {
    os("start a session", rustix::process::setsid())?;
    os(
        "chdir to the working directory",
        rustix::process::chdir(spec.cwd.as_str()),
    )?;
    os(
        "limit open files",
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(spec.max_open_files),
                maximum: Some(spec.max_open_files),
            },
        ),
    )?;
    // The bounding set first: dropping it needs CAP_SETPCAP, which goes with the uid change.
    for bit in 0..64 {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << bit,
        )) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return os("drop the capability bounding set", Err(e)),
        }
    }
    if !spec.user_namespace {
        // (In a user namespace setgroups is denied; its only group is the mapped one.)
        os(
            "drop supplementary groups",
            rustix::thread::set_thread_groups(&[]),
        )?;
    }
    let gid = rustix::process::Gid::from_raw(spec.gid);
    let uid = rustix::process::Uid::from_raw(spec.uid);
    os(
        "set the gid",
        rustix::thread::set_thread_res_gid(gid, gid, gid),
    )?;
    os(
        "set the uid",
        rustix::thread::set_thread_res_uid(uid, uid, uid),
    )?;
    // After the id change, which clears it.
    os(
        "set the parent-death signal",
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)),
    )?;
    os(
        "clear ambient capabilities",
        rustix::thread::clear_ambient_capability_set(),
    )?;
    os(
        "drop capabilities",
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        ),
    )?;
    os("set no_new_privs", rustix::thread::set_no_new_privs(true))?;
    if spec.seccomp {
        io_step("install the seccomp filter", seccomp.install())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_jails_path() {
        let mut spec = crate::spec::sample_spec();
        spec.argv = vec!["sh".into()];
        spec.env = vec![("PATH".into(), "/nonexistent:/bin".into())];
        assert_eq!(resolve_program(&spec).unwrap(), Path::new("/bin/sh"));
        spec.argv = vec!["/var/task/bootstrap".into()];
        assert_eq!(
            resolve_program(&spec).unwrap(),
            Path::new("/var/task/bootstrap")
        );
        spec.argv = vec!["no-such-program-anywhere".into()];
        assert_eq!(
            resolve_program(&spec).unwrap_err().1.raw_os_error(),
            Some(libc::ENOENT)
        );
    }
}
