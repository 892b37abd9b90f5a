//! Execution-environment sandboxes: the trait every backend implements, and the backends.
//!
//! A sandbox turns an [`EnvSpec`] (what to run, with which code, limits and variables) into a
//! running environment: a process tree, a Runtime API listener that only that environment can
//! reach, and the read end of the pipe that carries its stdout and stderr. The sandbox owns
//! nothing else: pooling, invocation and logging live in `pool`, `invoke` and `logs`.
//!
//! Backends: [`process`] (plain process groups, development only, no isolation) and `jail`
//! (Linux namespaces, pivot_root, cgroups, seccomp; the default on Linux).

pub mod jail;
pub mod process;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// Where the Runtime API is reached from inside an environment when it has its own network
/// namespace (as on AWS Lambda).
pub const RUNTIME_API_IN_NAMESPACE: &str = "127.0.0.1:9001";

/// Everything a backend needs to start one execution environment.
#[derive(Clone, Debug)]
pub struct EnvSpec {
    /// 32 lower-case hex characters, unique per environment; also names the log stream.
    pub env_id: String,
    /// Program and arguments, as paths seen *inside* the environment
    /// (e.g. `/var/task/bootstrap`, or `/usr/bin/python3 -S -B /var/runtime/bootstrap.py`).
    pub argv: Vec<String>,
    /// The complete environment of the runtime process (nothing of the server's is inherited).
    /// `AWS_LAMBDA_RUNTIME_API` is *not* included: the backend adds it, since only it knows
    /// where the listener lives.
    pub env: Vec<(String, String)>,
    /// Host directory with the unpacked code; appears read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Host directory with the runtime's own files (our bootstraps); appears read-only at
    /// `/var/runtime`. `None` for `provided*` runtimes.
    pub runtime_dir: Option<PathBuf>,
    /// Host directory with the merged layers; appears read-only at `/opt`. `None`: empty `/opt`.
    pub opt_dir: Option<PathBuf>,
    /// Host paths the runtime's interpreter needs read-only (e.g. `/usr/bin/python3`'s tree);
    /// the jail binds them at the same path. The process backend ignores this.
    pub host_paths: Vec<PathBuf>,
    /// The function's MemorySize, in MB: the memory limit and the CPU share derive from it.
    pub memory_mb: u32,
    /// The function's EphemeralStorage size in MB: the cap of `/tmp`.
    pub ephemeral_mb: u32,
    /// Whether the function may open outbound network connections.
    pub network: bool,
    /// Working directory inside the environment (`/var/task` for zip functions).
    pub cwd: String,
}

/// A running environment's processes, as the pool and invoker see them.
pub trait EnvProcess: Send + Sync + 'static {
    /// Pid (in the server's PID namespace) of the environment's first process.
    fn pid(&self) -> u32;
    /// Kills every process of the environment. Idempotent; never blocks on the processes.
    fn kill(&self);
    /// Peak memory of the environment so far, in bytes, if the backend can measure it.
    fn max_memory_bytes(&self) -> Option<u64>;
    /// Removes everything the environment left behind (cgroups, mounts, namespaces) once its
    /// processes are gone. Called exactly once, after the exit future resolved.
    fn cleanup(&self) {}
    /// Init is over (the runtime asked for its first event): limits that only apply to the
    /// invoke phase take effect now.
    fn init_done(&self) {}
    /// Changes the environment's resource limits (the jail's cgroup); a no-op elsewhere.
    fn apply_limits(&self, _limits: &nimbus_sys::cgroup::CgroupLimits) {}
}

/// How an environment's first process ended, in Go's `os.ProcessState` wording as Lambda
/// reports it: `exit status 1`, `signal: killed`.
pub type ExitDescription = String;

/// The future that resolves when the environment's first process exits.
pub type ExitFuture = Pin<Box<dyn Future<Output = ExitDescription> + Send>>;

/// A started environment.
pub struct StartedEnv {
    /// The Runtime API listener. Already bound and listening; only this environment can
    /// connect to it. The server accepts on it (it must be non-blocking-capable: the server
    /// sets non-blocking mode itself).
    pub listener: std::net::TcpListener,
    /// The read end of the pipe that the environment's stdout and stderr both write to.
    pub output: OwnedFd,
    pub process: Arc<dyn EnvProcess>,
    /// Resolves when the environment's first process has exited (and been reaped).
    pub exited: ExitFuture,
}

/// Failures to start an environment. These are platform faults or configuration problems,
/// never the function's.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not start the execution environment: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("could not set up the execution environment: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("this host cannot run the {backend} sandbox: {reason}")]
    Unsupported {
        backend: &'static str,
        reason: String,
    },
}

/// A sandbox backend.
pub trait Sandbox: Send + Sync + 'static {
    /// Short name for logs and `--sandbox`.
    fn name(&self) -> &'static str;
    /// Starts an environment. Blocking (fork/exec, mounts): callers run it on a blocking
    /// thread. Must be called from within a tokio runtime (backends may register fds with it).
    fn start(&self, spec: &EnvSpec) -> Result<StartedEnv, SandboxError>;
    /// Removes leftovers of environments from an earlier run of the server that crashed.
    /// Called once at start, before any environment is created.
    fn sweep_leftovers(&self) {}
}

/// Go's `os.ProcessState.String()` wording for a wait status, as Lambda reports it.
pub fn describe_exit(status: std::process::ExitStatus) -> ExitDescription {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        format!("signal: {}", signal_name(sig))
    } else {
        "exit status unknown".to_string()
    }
}

/// Go's names for the signals a function usually dies of.
pub fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        6 => "aborted".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        31 => "bad system call".into(),
        n => format!("signal {n}"),
    }
}
