//! Python zygotes (docs/decisions/0010-interpreter-zygote.md): one pre-initialised
//! `python3 -S -B _nimbus_zygote.py` per distinct start-up environment, which forks each
//! Python runtime straight into its jail instead of the jail exec'ing a fresh interpreter
//! (~9 ms of CPU per environment, most of a jailed Python start).
//!
//! The jail is built exactly as for an exec'd runtime (the jailer's monitor and init, the
//! root, the cgroup, the network); only its runtime comes from the zygote, which clones it
//! into the jail's PID namespace as a child of the server (`CLONE_PARENT`); the runtime
//! joins the jail's cgroup and other namespaces itself and then does what the jailer's
//! `runtime_setup` does before running the bootstrap. The server reaps it as any child of
//! its own. The protocol is described in `_nimbus_zygote.py`.
//!
//! Used only where the fork is indistinguishable from an exec'd interpreter: the platform's
//! own Python command line, no user-chosen loader variables or native libraries on the
//! loader's path (the dynamic loader reads `LD_LIBRARY_PATH` once, at exec), and the
//! interpreter's start-up variables equal to one of at most [`MAX_ZYGOTES`] zygotes'.
//! Anything else takes the exec path.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nimbus_sys::control;
use nimbus_sys::launch::{self, LaunchError};
use nimbus_sys::spawn::SpawnedChild;
use nimbus_sys::spec::JailSpec;

use crate::sandbox::EnvSpec;

/// The zygote script, next to the bootstrap in the Python runtime directory.
pub(super) const SCRIPT: &str = "_nimbus_zygote.py";
/// The runtime's command line inside the jail (besides the interpreter) that a zygote can
/// stand in for.
const BOOTSTRAP_ARGS: [&str; 3] = ["-S", "-B", "/var/runtime/bootstrap.py"];
/// Distinct start-up environments served at once; a new one retires the zygote that forked
/// least recently (so no function can keep others' starts on the exec path for good).
const MAX_ZYGOTES: usize = 4;
/// Where the zygote finds its control socket, and its script.
const CONTROL_FD: i32 = 3;
const SCRIPT_FD: i32 = 4;
/// How long a zygote may take to import what it shares (normally ~20 ms).
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// A zygote is replaced after this many forks or this long: its forks share its address-space
/// layout and its string-hash seed, and this bounds how many environments do.
const MAX_FORKS: u32 = 1000;
const MAX_AGE: Duration = Duration::from_secs(600);
/// After a zygote failed to start, environments take the exec path for this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Variables an interpreter reads once, at its start (a fork inherits the zygote's).
fn shapes_the_interpreter(name: &str) -> bool {
    name.starts_with("PYTHON")
        || name.starts_with("LC_")
        || matches!(name, "LANG" | "LANGUAGE" | "TZ")
}

/// The interpreter variables a function may hand a zygote. The zygote is root in the host's
/// namespaces, and its interpreter acts on its start-up variables before a line of ours runs:
/// `PYTHONHOME` or `PYTHONPATH` choose where `encodings` is imported from, `PYTHONWARNINGS`
/// imports the modules its categories name. So only variables that name no path and import
/// nothing, and `PYTHONPATH` only as the platform sets it (a directory of the jails, not of
/// the host); locale and time-zone names, not paths (the C library loads a locale or zone
/// file named by an absolute path, and parses it, as root). A function with anything else
/// takes the exec path, where it acts inside its jail.
fn safe_for_the_zygote(name: &str, value: &str) -> bool {
    match name {
        "LANG" | "LANGUAGE" => !value.contains('/'),
        _ if name.starts_with("LC_") => !value.contains('/'),
        "TZ" => {
            let zone = value.strip_prefix(':').unwrap_or(value);
            !zone.starts_with('/') && !zone.contains("..")
        }
        "PYTHONPATH" => value == crate::invoke::DEFAULT_PYTHONPATH,
        "PYTHONHASHSEED"
        | "PYTHONUNBUFFERED"
        | "PYTHONDONTWRITEBYTECODE"
        | "PYTHONUTF8"
        | "PYTHONOPTIMIZE"
        | "PYTHONFAULTHANDLER"
        | "PYTHONNODEBUGRANGES"
        | "PYTHONINTMAXSTRDIGITS" => true,
        other => !other.starts_with("PYTHON"),
    }
}

/// Which zygote serves an environment: the interpreter, the script and the start-up
/// variables it runs with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key {
    interpreter: PathBuf,
    script: PathBuf,
    env: Vec<(String, String)>,
}

#[derive(Debug)]
struct Zygote {
    /// Always `Some` until dropped.
    child: Option<SpawnedChild>,
    control: OwnedFd,
    forks: u32,
    started: Instant,
    last_fork: Instant,
}

impl Zygote {
    fn worn_out(&self) -> bool {
        self.forks >= MAX_FORKS || self.started.elapsed() >= MAX_AGE
    }

    fn send_fork(&mut self, conn: BorrowedFd<'_>, init_pidfd: BorrowedFd<'_>) -> io::Result<()> {
        control::send(self.control.as_fd(), b"F", &[conn, init_pidfd])?;
        self.forks += 1;
        self.last_fork = Instant::now();
        Ok(())
    }
}

impl Drop for Zygote {
    /// Retires it without killing it: `control` closes right after this, and the zygote exits
    /// after the fork it may be doing (its runtimes are the server's children, they go on). A
    /// thread reaps it then; one that died is reaped at once.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && !child.try_wait()
        {
            let spawned = std::thread::Builder::new()
                .name("nimbus-zygote-reap".into())
                .spawn(move || child.wait());
            if let Err(e) = spawned {
                tracing::warn!("jail: a retired zygote is left unreaped: {e}");
            }
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    running: HashMap<Key, Zygote>,
    /// Zygotes being started, outside the lock: a start never holds up forks of the others.
    starting: HashSet<Key>,
    /// A zygote failed to start: none is tried again before then.
    broken_until: Option<Instant>,
    /// The zygote the last Python start used: parked jails get a fork of it ahead of demand.
    last_key: Option<Key>,
}

impl Registry {
    /// Takes in the outcome of starting `key`'s zygote (a successor replaces, and so retires,
    /// a worn-out one). A failure retires the one it was to replace too, and sends starts to
    /// the exec path for [`RETRY_AFTER`].
    fn started(&mut self, key: &Key, outcome: io::Result<Zygote>) -> io::Result<()> {
        self.starting.remove(key);
        match outcome {
            Ok(z) => {
                if !self.running.contains_key(key)
                    && self.running.len() >= MAX_ZYGOTES
                    && let Some(idlest) = self
                        .running
                        .iter()
                        .min_by_key(|(_, z)| z.last_fork)
                        .map(|(k, _)| k.clone())
                {
                    self.running.remove(&idlest);
                }
                self.running.insert(key.clone(), z);
                Ok(())
            }
            Err(e) => {
                self.running.remove(key);
                self.broken_until = Some(Instant::now() + RETRY_AFTER);
                Err(e)
            }
        }
    }
}

/// The registry and the signal that a zygote start ended; shared with the threads that start
/// successors of worn-out zygotes.
#[derive(Debug, Default)]
struct Shared {
    registry: Mutex<Registry>,
    start_ended: Condvar,
}

/// The running zygotes, started on first use.
#[derive(Debug)]
pub(super) struct Zygotes {
    /// The filters the zygote's forks install, compiled once.
    programs: Arc<Programs>,
    /// The platform's `LD_LIBRARY_PATH`: the only loader variable a forked runtime may have.
    default_library_path: String,
    shared: Arc<Shared>,
}

impl Zygotes {
    pub(super) fn new(default_library_path: &str) -> Zygotes {
        Zygotes {
            programs: Arc::new(Programs {
                seccomp: nimbus_sys::seccomp::SeccompProgram::jail_policy().to_bytes(),
                egress_trigger: nimbus_sys::seccomp::SeccompProgram::egress_trigger().to_bytes(),
            }),
            default_library_path: default_library_path.to_string(),
            shared: Arc::default(),
        }
    }

    /// The zygote that can start `spec`'s runtime, or `None` for the exec path.
    pub(super) fn key_for(&self, spec: &EnvSpec) -> Option<Key> {
        let (interpreter, args) = spec.argv.split_first()?;
        if args != BOOTSTRAP_ARGS || !interpreter.starts_with('/') {
            return None;
        }
        let script = spec.runtime_dir.as_ref()?.join(SCRIPT);
        for (k, v) in &spec.env {
            if k.starts_with("LD_") && (k != "LD_LIBRARY_PATH" || *v != self.default_library_path) {
                return None;
            }
            if !safe_for_the_zygote(k, v) {
                return None;
            }
        }
        if !loader_finds_nothing_of_the_function(spec) {
            return None;
        }
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .filter(|(k, _)| shapes_the_interpreter(k))
            .cloned()
            .collect();
        env.sort();
        Some(Key {
            interpreter: PathBuf::from(interpreter),
            script,
            env,
        })
    }

    /// The zygote the last fork came from, if any.
    pub(super) fn last_key(&self) -> Option<Key> {
        self.shared.registry.lock().ok()?.last_key.clone()
    }

    /// Has a zygote (started if needed) fork the runtime of one environment into the PID
    /// namespace of the jail whose init `init_pidfd` is, and the runtime join the
    /// environment's cgroups, which on cgroup v1 takes a few ms of waiting: done while the
    /// jail is parked, or builds its root.
    ///
    /// A zygote is started outside the registry's lock: forks of the other zygotes go on
    /// meanwhile, and starts that need the same one wait for it. A worn-out zygote goes on
    /// forking while a thread starts its successor, so replacing one delays no start.
    pub(super) fn fork(
        &self,
        key: &Key,
        cgroup_procs: &[PathBuf],
        init_pidfd: BorrowedFd<'_>,
    ) -> io::Result<ZygoteFork> {
        let (ours, theirs) = control::socket_pair()?;
        let poisoned = || io::Error::other("zygote registry poisoned");
        let mut reg = self.shared.registry.lock().map_err(|_| poisoned())?;
        let mut started_here = false;
        loop {
            let successor_starting = reg.starting.contains(key);
            if let Some(z) = reg.running.get_mut(key) {
                if z.worn_out() && !successor_starting {
                    if self.start_successor(&mut reg, key) {
                        continue;
                    }
                    reg.running.remove(key);
                } else if z.send_fork(theirs.as_fd(), init_pidfd).is_ok() {
                    break;
                } else if started_here {
                    reg.running.remove(key);
                    return Err(io::Error::other("the Python zygote exited as it started"));
                } else {
                    // It died (or was killed): start a new one, once.
                    reg.running.remove(key);
                }
                continue;
            }
            if reg.broken_until.is_some_and(|t| Instant::now() < t) {
                return Err(io::Error::other("the last zygote failed to start"));
            }
            if successor_starting {
                reg = self.shared.start_ended.wait(reg).map_err(|_| poisoned())?;
                continue;
            }
            reg.starting.insert(key.clone());
            drop(reg);
            started_here = true;
            let outcome = start(key);
            reg = self.shared.registry.lock().map_err(|_| poisoned())?;
            let installed = reg.started(key, outcome);
            self.shared.start_ended.notify_all();
            installed?;
        }
        reg.last_key = Some(key.clone());
        drop(reg);
        drop(theirs);
        let runtime = forked_runtime(&ours)?;
        let paths: Vec<String> = cgroup_procs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let mut msg = b"C".to_vec();
        msg.extend_from_slice(&serde_json::to_vec(&paths).map_err(io::Error::other)?);
        control::send(ours.as_fd(), &msg, &[])?;
        Ok(ZygoteFork {
            conn: ours,
            runtime,
            programs: Arc::clone(&self.programs),
        })
    }

    /// Starts a successor of `key`'s worn-out zygote on a thread of its own; false if no
    /// thread could be started.
    fn start_successor(&self, reg: &mut Registry, key: &Key) -> bool {
        let shared = Arc::clone(&self.shared);
        let successor = key.clone();
        let spawned = std::thread::Builder::new()
            .name("nimbus-zygote-start".into())
            .spawn(move || {
                let outcome = start(&successor);
                if let Ok(mut reg) = shared.registry.lock()
                    && let Err(e) = reg.started(&successor, outcome)
                {
                    tracing::warn!("jail: cannot replace a worn-out Python zygote: {e}");
                }
                shared.start_ended.notify_all();
            });
        match spawned {
            Ok(_) => {
                reg.starting.insert(key.clone());
                true
            }
            Err(e) => {
                tracing::warn!("jail: cannot start a Python zygote's successor: {e}");
                false
            }
        }
    }
}

/// No native library of the function's could be found through `LD_LIBRARY_PATH` (which a
/// forked runtime cannot apply to its loader): no `lib` directory in the code or the layers,
/// no shared object at the top of the code.
fn loader_finds_nothing_of_the_function(spec: &EnvSpec) -> bool {
    let dirs = [Some(&spec.code_dir), spec.opt_dir.as_ref()];
    if dirs.iter().flatten().any(|d| d.join("lib").exists()) {
        return false;
    }
    match std::fs::read_dir(&spec.code_dir) {
        Ok(entries) => !entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".so") || name.contains(".so.")
        }),
        Err(_) => false,
    }
}

/// Waits (blocking, at most [`READY_TIMEOUT`]) for the zygote to report the runtime it
/// cloned on `conn`, a child of ours from then on.
fn forked_runtime(conn: &OwnedFd) -> io::Result<SpawnedChild> {
    let mut buf = [0u8; 512];
    let (len, _) = control::recv_until(conn.as_fd(), &mut buf, Instant::now() + READY_TIMEOUT)
        .map_err(|e| io::Error::new(e.kind(), format!("the Python zygote did not fork: {e}")))?;
    match &buf[..len] {
        [b'P', pid @ ..] if pid.len() == 4 => {
            SpawnedChild::adopt(u32::from_le_bytes([pid[0], pid[1], pid[2], pid[3]]))
        }
        [b'E', errno @ ..] if errno.len() >= 4 => {
            let code = i32::from_le_bytes([errno[0], errno[1], errno[2], errno[3]]);
            Err(io::Error::new(
                io::Error::from_raw_os_error(code).kind(),
                format!(
                    "the Python zygote could not fork ({}): {}",
                    String::from_utf8_lossy(&errno[4..]),
                    io::Error::from_raw_os_error(code)
                ),
            ))
        }
        [] => Err(io::Error::other(
            "the Python zygote exited before it forked",
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the Python zygote's answer to a fork is malformed",
        )),
    }
}

/// Starts a zygote and waits (blocking, at most [`READY_TIMEOUT`]) until it is ready.
fn start(key: &Key) -> io::Result<Zygote> {
    let (ours, theirs) = control::socket_pair()?;
    let script = std::fs::File::open(&key.script)?;
    let args = vec![
        BOOTSTRAP_ARGS[0].to_string(),
        BOOTSTRAP_ARGS[1].to_string(),
        format!("/dev/fd/{SCRIPT_FD}"),
        // What the jails bind at /var/runtime: the zygote preloads the bootstrap from it.
        key.script
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default(),
    ];
    let child = nimbus_sys::spawn::spawn(
        &key.interpreter,
        &args,
        &key.env,
        &[(theirs.as_fd(), CONTROL_FD), (script.as_fd(), SCRIPT_FD)],
    )?;
    drop(theirs);
    let mut buf = [0u8; 8];
    match control::recv_until(ours.as_fd(), &mut buf, Instant::now() + READY_TIMEOUT) {
        Ok((1, _)) if buf[0] == b'Z' => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "the Python zygote ({}) exited while starting",
                key.interpreter.display()
            )));
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("the Python zygote did not start: {e}"),
            ));
        }
    }
    tracing::info!(
        "jail: started a Python zygote ({}, pid {})",
        key.interpreter.display(),
        child.id()
    );
    let now = Instant::now();
    Ok(Zygote {
        child: Some(child),
        control: ours,
        forks: 0,
        started: now,
        last_fork: now,
    })
}

/// The runtime of one environment, forked by a zygote into its jail's PID namespace and
/// cgroup, waiting for the jail's root. Dropped unused, it is killed and reaped.
#[derive(Debug)]
pub(super) struct ZygoteFork {
    conn: OwnedFd,
    runtime: SpawnedChild,
    programs: Arc<Programs>,
}

/// The seccomp programs as the kernel reads them, for the forks to install.
#[derive(Debug)]
struct Programs {
    /// The jail's policy, installed by the runtime.
    seccomp: Vec<u8>,
    /// The egress trigger, installed by the runtime on itself (which moves its connection to
    /// the exempt descriptor first).
    egress_trigger: Vec<u8>,
}

/// What the spec message carries (the rest of the [`JailSpec`] was the init's).
#[derive(serde::Serialize)]
struct RuntimeSpec<'a> {
    argv: &'a [String],
    env: &'a [(String, String)],
    cwd: &'a str,
    uid: u32,
    gid: u32,
    max_open_files: u64,
    seccomp: bool,
    /// Egress on demand: the trigger program the runtime installs on itself before its
    /// privileges drop; it lets `sendmsg` through on `exempt_fd`, where the runtime moves its
    /// connection to us first (to send the trigger's listener with its ready report).
    egress_trigger: Option<TriggerSpec<'a>>,
}

#[derive(serde::Serialize)]
struct TriggerSpec<'a> {
    exempt_fd: i32,
    program: &'a [u8],
}

impl ZygoteFork {
    /// Has the runtime join the rest of its jail (whose root must be ready), drop its
    /// privileges and run the bootstrap; waits (blocking, at most `timeout`) until it does.
    /// With the egress trigger's listener when `spec` asks for egress on demand and the
    /// runtime could install it.
    pub(super) fn start(
        self,
        spec: &JailSpec,
        timeout: Duration,
    ) -> Result<(ZygoteRuntime, Option<OwnedFd>), LaunchError> {
        let json = serde_json::to_vec(&RuntimeSpec {
            argv: &spec.argv,
            env: &spec.env,
            cwd: &spec.cwd,
            uid: spec.uid,
            gid: spec.gid,
            max_open_files: spec.max_open_files,
            seccomp: spec.seccomp,
            egress_trigger: spec.egress_on_demand.then(|| TriggerSpec {
                exempt_fd: nimbus_sys::seccomp_notify::EXEMPT_FD,
                program: &self.programs.egress_trigger,
            }),
        })
        .map_err(io::Error::other)?;
        let seccomp = &self.programs.seccomp;
        let mut msg = Vec::with_capacity(5 + json.len() + seccomp.len());
        msg.push(b'S');
        msg.extend_from_slice(&(json.len() as u32).to_le_bytes());
        msg.extend_from_slice(&json);
        msg.extend_from_slice(seccomp);
        control::send(self.conn.as_fd(), &msg, &[])?;
        // The runtime answers as a jailer does: `R`, or `E` + errno + the failed step (and
        // then exits; dropping `self.runtime` kills and reaps it whatever it does).
        let trigger = launch::await_ready(&self.conn, timeout).map_err(|e| match e {
            LaunchError::Setup { step, source } => LaunchError::Setup {
                step: format!("zygote: {step}"),
                source,
            },
            e => e,
        })?;
        Ok((
            ZygoteRuntime {
                runtime: self.runtime,
            },
            trigger,
        ))
    }

    /// The runtime's pid.
    #[cfg(test)]
    fn pid(&self) -> u32 {
        self.runtime.id()
    }
}

/// A runtime started by a zygote: a child of the server's.
#[derive(Debug)]
pub(super) struct ZygoteRuntime {
    runtime: SpawnedChild,
}

impl ZygoteRuntime {
    /// The runtime's raw wait status once it ended; `None` if it cannot be watched (then it
    /// is killed, and reaped).
    pub(super) async fn exited(mut self) -> Option<i32> {
        self.runtime.exited().await.ok()
    }
}

#[cfg(test)]
impl Zygotes {
    /// Makes `key`'s zygote due for replacement.
    fn wear_out(&self, key: &Key) {
        if let Some(z) = self.shared.registry.lock().unwrap().running.get_mut(key) {
            z.forks = MAX_FORKS;
        }
    }

    /// The pid of `key`'s running zygote.
    fn zygote_pid(&self, key: &Key) -> Option<u32> {
        let reg = self.shared.registry.lock().unwrap();
        reg.running.get(key)?.child.as_ref().map(SpawnedChild::id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{stat_field, wait_until};

    const LIBS: &str = "/lib64:/var/task/lib";

    fn python_spec(code_dir: &std::path::Path) -> EnvSpec {
        EnvSpec {
            env_id: "0".repeat(32),
            argv: vec![
                "/usr/bin/python3".into(),
                "-S".into(),
                "-B".into(),
                "/var/runtime/bootstrap.py".into(),
            ],
            env: vec![
                ("TZ".into(), ":UTC".into()),
                ("LANG".into(), "en_US.UTF-8".into()),
                ("LD_LIBRARY_PATH".into(), LIBS.into()),
                ("PYTHONPATH".into(), "/var/runtime".into()),
                ("SECRET".into(), "never in a zygote".into()),
            ],
            code_dir: code_dir.to_path_buf(),
            runtime_dir: Some("/data/runtimes/python".into()),
            opt_dir: None,
            host_paths: Vec::new(),
            memory_mb: 128,
            ephemeral_mb: 512,
            network: false,
            cwd: "/var/task".into(),
        }
    }

    #[test]
    fn the_key_is_the_interpreter_and_its_start_up_variables_only() {
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("app.py"), "").unwrap();
        let zygotes = Zygotes::new(LIBS);
        let key = zygotes.key_for(&python_spec(code.path())).unwrap();
        assert_eq!(key.interpreter, PathBuf::from("/usr/bin/python3"));
        assert_eq!(
            key.script,
            PathBuf::from("/data/runtimes/python").join(SCRIPT)
        );
        let names: Vec<&str> = key.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["LANG", "PYTHONPATH", "TZ"],
            "sorted, no function variables"
        );

        let mut other = python_spec(code.path());
        other.env.push(("PYTHONHASHSEED".into(), "0".into()));
        assert_ne!(
            zygotes.key_for(&other).unwrap(),
            key,
            "another interpreter state"
        );
        other = python_spec(code.path());
        other.env[4].1 = "another function's secret".into();
        assert_eq!(zygotes.key_for(&other).unwrap(), key, "same zygote");
    }

    /// `python_spec` with `name=value` in place of any value of `name` it had.
    fn with_var(code_dir: &std::path::Path, name: &str, value: &str) -> EnvSpec {
        let mut spec = python_spec(code_dir);
        spec.env.retain(|(k, _)| k != name);
        spec.env.push((name.into(), value.into()));
        spec
    }

    #[test]
    fn anything_a_fork_could_not_reproduce_takes_the_exec_path() {
        let code = tempfile::tempdir().unwrap();
        let zygotes = Zygotes::new(LIBS);
        let mut spec = python_spec(code.path());
        spec.argv = vec!["/var/task/bootstrap".into()];
        assert!(
            zygotes.key_for(&spec).is_none(),
            "not our Python command line"
        );

        for (k, v) in [
            ("LD_PRELOAD", "/var/task/x.so"),
            ("LD_LIBRARY_PATH", "/opt/mine"),
        ] {
            let spec = with_var(code.path(), k, v);
            assert!(
                zygotes.key_for(&spec).is_none(),
                "{k} is read once, at exec"
            );
        }

        // The zygote is root on the host: nothing that makes its interpreter import from a
        // path of the function's choosing.
        for (k, v) in [
            ("PYTHONPATH", "/var/task/lib/python"),
            ("PYTHONHOME", "/var/task"),
            ("PYTHONWARNINGS", "ignore::evil.Category"),
            ("PYTHONSTARTUP", "/var/task/x.py"),
            ("PYTHONPLATLIBDIR", "../../var/task"),
            ("PYTHONIOENCODING", "utf-8"),
            ("LC_ALL", "/var/task/locale"),
            ("LANG", "/var/task/locale"),
            ("TZ", ":/var/task/zone"),
            ("TZ", "/var/task/zone"),
            ("TZ", "Europe/../../../var/task/zone"),
        ] {
            let spec = with_var(code.path(), k, v);
            assert!(
                zygotes.key_for(&spec).is_none(),
                "{k}={v} would act as root on the host"
            );
        }
        for (k, v) in [
            ("PYTHONUNBUFFERED", "1"),
            ("TZ", "America/New_York"),
            ("LC_ALL", "C.UTF-8"),
        ] {
            let spec = with_var(code.path(), k, v);
            assert!(zygotes.key_for(&spec).is_some(), "{k}={v} names no path");
        }

        std::fs::write(code.path().join("libfoo.so.1"), "").unwrap();
        assert!(
            zygotes.key_for(&python_spec(code.path())).is_none(),
            "a library in /var/task"
        );
        std::fs::remove_file(code.path().join("libfoo.so.1")).unwrap();
        std::fs::create_dir(code.path().join("lib")).unwrap();
        assert!(
            zygotes.key_for(&python_spec(code.path())).is_none(),
            "/var/task/lib"
        );
        std::fs::remove_dir(code.path().join("lib")).unwrap();

        let layers = tempfile::tempdir().unwrap();
        std::fs::create_dir(layers.path().join("lib")).unwrap();
        let mut spec = python_spec(code.path());
        spec.opt_dir = Some(layers.path().to_path_buf());
        assert!(zygotes.key_for(&spec).is_none(), "/opt/lib from a layer");
        spec.opt_dir = None;
        assert!(zygotes.key_for(&spec).is_some());
    }

    /// The platform's own zygote, if this machine has the interpreter.
    fn runtime_key() -> Option<Key> {
        let interpreter = PathBuf::from("/usr/bin/python3");
        interpreter.is_file().then(|| Key {
            interpreter,
            script: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../runtimes/python")
                .join(SCRIPT),
            env: Vec::new(),
        })
    }

    /// Whether the zygote whose stack address is `zygote_stack` forked `runtime`: a fork keeps
    /// its zygote's stack address, which address-space randomisation makes differ between two
    /// zygotes.
    fn forked_by(runtime: &ZygoteFork, zygote_stack: &str) -> bool {
        stat_field(runtime.pid(), 28).as_deref() == Some(zygote_stack)
    }

    /// A live process's stack address (field 28 of its stat).
    fn stack_of(pid: u32) -> String {
        stat_field(pid, 28).expect("the process is alive")
    }

    #[test]
    fn a_worn_out_zygote_forks_on_while_its_successor_starts() {
        let Some(key) = runtime_key() else {
            eprintln!("skipped: no /usr/bin/python3");
            return;
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: a zygote joins PID namespaces as root");
            return;
        }
        // Our own PID namespace stands in for a jail's. Each runtime waits for a jail's root
        // that never comes: it lives until its connection is dropped.
        let ours = rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap();
        let zygotes = Zygotes::new(LIBS);
        let first_fork = zygotes.fork(&key, &[], ours.as_fd()).expect("first fork");
        let first = zygotes.zygote_pid(&key).expect("a zygote runs");
        let first_stack = stack_of(first);
        assert!(forked_by(&first_fork, &first_stack));
        assert_eq!(
            stat_field(first_fork.pid(), 4),
            Some(std::process::id().to_string()),
            "the runtime is the server's child, not the zygote's"
        );

        zygotes.wear_out(&key);
        let second_fork = zygotes
            .fork(&key, &[], ours.as_fd())
            .expect("fork from a worn-out zygote");
        assert!(
            forked_by(&second_fork, &first_stack),
            "the worn-out zygote forked on"
        );
        wait_until("a successor replaces it", || {
            zygotes.zygote_pid(&key).is_some_and(|pid| pid != first)
        });
        let successor = zygotes.zygote_pid(&key).unwrap();
        let third_fork = zygotes
            .fork(&key, &[], ours.as_fd())
            .expect("fork from the successor");
        let successor_stack = stack_of(successor);
        assert_ne!(successor_stack, first_stack, "two zygotes, two layouts");
        assert!(forked_by(&third_fork, &successor_stack));
        assert!(!forked_by(&third_fork, &first_stack));

        wait_until("the retired zygote exits; its runtimes do not", || {
            stat_field(first, 3).is_none()
        });
        let runtimes: Vec<u32> = [&first_fork, &second_fork, &third_fork]
            .iter()
            .map(|f| f.pid())
            .collect();
        assert!(
            runtimes
                .iter()
                .all(|&p| stat_field(p, 3).is_some_and(|s| s != "Z"))
        );
        drop((first_fork, second_fork, third_fork));
        wait_until("unused runtimes are killed and reaped", || {
            runtimes.iter().all(|&p| stat_field(p, 3).is_none())
        });
    }
}
