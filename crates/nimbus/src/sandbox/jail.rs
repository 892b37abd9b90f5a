//! The `jail` backend: each environment in its own Linux namespaces (mount, PID, network,
//! IPC, UTS, cgroup; user too in rootless mode), a minimal read-only root, cgroup limits,
//! an unprivileged uid with no capabilities, no_new_privs and a seccomp filter.
//!
//! This module is the *policy*: which host paths an environment sees, which `/etc` it gets,
//! which limits follow from MemorySize, how a start fails. The mechanism (the separate
//! `nimbus __jail` process, mounts, cgroup files, the seccomp filter) is in `nimbus-sys`,
//! the only crate with unsafe code. See `docs/sandbox.md` for the threat model.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_sys::cgroup::{CgroupLayout, CgroupLimits, CgroupParent, EnvCgroup};
use nimbus_sys::egress::EgressConfig;
use nimbus_sys::launch::{self, ForkServer, JailProcess, LaunchError, ParkedJail};
use nimbus_sys::spawn::SpawnedChild;
use nimbus_sys::spec::{Bind, JailSpec};

use super::{
    EnvProcess, EnvSpec, RUNTIME_API_IN_NAMESPACE, Sandbox, SandboxError, StartedEnv, describe_exit,
};

/// Lambda's sandbox user `sbx_user1051` (uid 993, gid 990), whose ids functions observe.
pub const SANDBOX_UID: u32 = 993;
pub const SANDBOX_GID: u32 = 990;
/// Lambda's per-environment process/thread limit.
pub const PIDS_MAX: u32 = 1024;
/// Lambda's file-descriptor limit.
pub const MAX_OPEN_FILES: u64 = 1024;
/// Lambda: one full vCPU at 1,769 MB, proportionally less or more.
pub const MB_PER_VCPU: u64 = 1769;
/// Port of the Runtime API inside the environment's own network namespace.
const RUNTIME_API_PORT: u16 = 9001;
/// Upper bound for a jail to be ready (namespaces, mounts, exec): normally a few ms.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Jails parked ahead of demand, per kind (with and without outbound access). Parking costs
/// ~10 ms (joining a v1 memory cgroup waits for an RCU grace period) plus ~20 ms with
/// slirp4netns; a burst of this many cold starts skips it. See docs/sandbox.md.
const POOL_SIZE: usize = 2;
/// Memory limit of a parked jail until a function takes it (Lambda's minimum MemorySize).
const PARKED_MEMORY_MB: u32 = 128;
/// slirp4netns's built-in DNS forwarder, as seen from the jail.
const SLIRP_DNS: &str = "10.0.2.3";

/// Configuration of the jail backend.
#[derive(Clone, Debug)]
pub struct JailConfig {
    /// The jailer executable and its arguments: `nimbus __jail` (see [`JailConfig::new`]).
    pub jailer_program: PathBuf,
    pub jailer_args: Vec<OsString>,
    /// An empty directory on which each jail mounts its root, privately (never visible on
    /// the host). Created if missing.
    pub root_mount_point: PathBuf,
    /// Name of the parent cgroup of all environments (one path component).
    pub cgroup_parent: String,
    /// Start without cgroup limits when no usable cgroup hierarchy is writable (rootless
    /// without delegation). Off by default: limits are part of the isolation.
    pub allow_no_cgroups: bool,
    /// Also apply a hard CPU quota of the proportional share after init (`--cpu-limit
    /// quota`, Lambda's ceiling). The proportional weight is always applied.
    pub cpu_quota: bool,
    /// Rootless mode: a user namespace maps the sandbox uid to the server's own uid.
    /// Defaults to "not root".
    pub rootless: bool,
    /// Outbound access for functions with `network` on (slirp4netns, if installed).
    pub egress: Option<EgressConfig>,
    /// Attach it when a function first sends to an outside address rather than to every
    /// networked jail before its runtime starts (decision 0012), where the kernel can hold
    /// those calls for the server.
    pub egress_on_demand: bool,
    /// Jails parked ahead of demand per kind; 0 disables the pool.
    pub pool_size: usize,
    /// Start Python runtimes from a pre-initialised interpreter (a zygote) that forks into
    /// each jail, instead of exec'ing a fresh one (decision 0010). Never in rootless mode.
    pub python_zygote: bool,
}

impl JailConfig {
    /// The production configuration: the jailer is this very executable (`nimbus __jail`),
    /// jail roots are mounted on `<data_dir>/jail-root`, and the cgroup parent is named after
    /// the data directory (see [`cgroup_parent_for`]).
    pub fn new(data_dir: &Path) -> JailConfig {
        // `/proc/self/exe` rather than the executable's path: it still works after the binary
        // was replaced on disk (upgrades), and the jail's `/proc/1/cmdline` does not reveal
        // where the server is installed.
        JailConfig {
            jailer_program: PathBuf::from("/proc/self/exe"),
            jailer_args: vec!["__jail".into()],
            root_mount_point: data_dir.join("jail-root"),
            cgroup_parent: cgroup_parent_for(data_dir),
            allow_no_cgroups: false,
            cpu_quota: false,
            rootless: !rustix::process::geteuid().is_root(),
            egress: EgressConfig::detect(),
            egress_on_demand: true,
            pool_size: POOL_SIZE,
            python_zygote: true,
        }
    }
}

/// The cgroup parent of the server using `data_dir`: `nimbus-<12 hex digits>`. One per data
/// directory, not one for all: several servers may share a host (the test suite runs many),
/// and each sweeps its parent at start; a restarted server finds its own leftovers again.
pub fn cgroup_parent_for(data_dir: &Path) -> String {
    use sha2::Digest;
    let canonical = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("nimbus-{}", &hex::encode(digest)[..12])
}

/// Entry point of the hidden `nimbus __jail` subcommand: call it at the very top of `main`,
/// before anything starts a thread. Never returns.
pub fn jailer_main() -> ! {
    nimbus_sys::jailer::jailer_main()
}

mod egress;
mod pool;
mod zygote;

/// The jail backend.
#[derive(Debug)]
pub struct JailSandbox {
    inner: Arc<JailInner>,
    pool: Option<Arc<pool::JailPool>>,
}

/// What both the sandbox and its pool's refill thread use.
#[derive(Debug)]
struct JailInner {
    config: JailConfig,
    cgroups: Option<CgroupParent>,
    zygotes: Option<zygote::Zygotes>,
    /// Egress is attached on first use (configured, and this kernel can do it).
    egress_on_demand: bool,
    /// The fork server that starts jailers, once started (again, if it died).
    fork_server: Mutex<Option<Arc<ForkServer>>>,
}

impl JailInner {
    /// Whether a networked function's jail gets egress before its runtime starts (parked
    /// with it), rather than on first use.
    fn egress_up_front(&self) -> bool {
        self.config.egress.is_some() && !self.egress_on_demand
    }
}

/// A jail parked ahead of demand (or just now, on the slow path), with what a start needs.
#[derive(Debug)]
struct ParkedEnv {
    jail: ParkedJail,
    /// The jailer (the environment's monitor), a child of ours.
    child: SpawnedChild,
    cgroup: Option<EnvCgroup>,
    output: OwnedFd,
    /// A zygote's child already in the jail's cgroup, for the zygote a Python function last
    /// used (see `JailInner::prefork`).
    zygote_fork: Option<(zygote::Key, zygote::ZygoteFork)>,
}

impl ParkedEnv {
    /// Throws the jail away: the jailer kills it once its control socket closes; reap it and
    /// remove its cgroup in the background.
    fn discard(self) {
        let ParkedEnv {
            jail,
            mut child,
            cgroup,
            ..
        } = self;
        drop(jail);
        tokio::spawn(async move {
            let _ = child.exited().await;
            if let Some(cg) = cgroup {
                cg.kill_all();
                let _ = cg.remove();
            }
        });
    }
}

const UNSUPPORTED: &str = "jail";

impl JailSandbox {
    /// Checks that this host can run jails and prepares the cgroup parent.
    pub fn new(config: JailConfig) -> Result<JailSandbox, SandboxError> {
        let unsupported = |reason: String| SandboxError::Unsupported {
            backend: UNSUPPORTED,
            reason,
        };
        for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
            if !Path::new("/proc/self/ns").join(ns).exists() {
                return Err(unsupported(format!("the kernel lacks {ns} namespaces")));
            }
        }
        if config.rootless {
            let allowed = |file: &str, min: u64| {
                std::fs::read_to_string(file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .is_none_or(|v| v >= min)
            };
            if !allowed("/proc/sys/user/max_user_namespaces", 1)
                || !allowed("/proc/sys/kernel/unprivileged_userns_clone", 1)
            {
                return Err(unsupported(
                    "not running as root, and unprivileged user namespaces are disabled \
                     (kernel.unprivileged_userns_clone / user.max_user_namespaces): run as \
                     root, enable them, or use --sandbox process for development"
                        .into(),
                ));
            }
        }
        std::fs::create_dir_all(&config.root_mount_point).map_err(|source| {
            SandboxError::Setup {
                what: "create the jail root mount point",
                source,
            }
        })?;
        let cgroups = match CgroupLayout::detect().and_then(|layout| {
            let parent = CgroupParent::new(layout, &config.cgroup_parent);
            parent.prepare().map(|()| parent)
        }) {
            Ok(parent) => Some(parent),
            Err(e) if config.allow_no_cgroups => {
                tracing::warn!(
                    "jail: no cgroup limits (memory, pids, CPU) for functions: {e}. \
                     A function can exhaust this host's memory."
                );
                None
            }
            Err(e) => {
                return Err(unsupported(format!(
                    "cannot create cgroups for the environments' limits: {e}{}",
                    if config.rootless {
                        " (rootless mode needs a delegated, writable cgroup subtree)"
                    } else {
                        ""
                    }
                )));
            }
        };
        if let Some(parent) = &cgroups {
            // Before the pool parks anything in the parent.
            let n = parent.sweep();
            if n > 0 {
                tracing::warn!("jail: removed {n} environment cgroup(s) left by an earlier run");
            }
        }
        if let Some(c) = &cgroups {
            tracing::info!(
                "jail: cgroup {:?} limits, parent {:?}{}",
                c.layout().version(),
                config.cgroup_parent,
                if config.rootless { ", rootless" } else { "" }
            );
        }
        if config.egress.is_none() {
            tracing::warn!(
                "jail: slirp4netns is not installed: functions get no outbound network access \
                 (apt-get install slirp4netns)"
            );
        }
        let zygotes = (config.python_zygote && !config.rootless)
            .then(|| zygote::Zygotes::new(crate::invoke::DEFAULT_LD_LIBRARY_PATH));
        let egress_on_demand = config.egress.is_some()
            && config.egress_on_demand
            && nimbus_sys::seccomp_notify::supported();
        if config.egress.is_some() && config.egress_on_demand && !egress_on_demand {
            tracing::info!(
                "jail: this kernel cannot hold system calls for the server (seccomp user \
                 notifications with CONTINUE, Linux 5.5, x86_64): networked functions get \
                 outbound networking before they start"
            );
        }
        let inner = Arc::new(JailInner {
            config,
            cgroups,
            zygotes,
            egress_on_demand,
            fork_server: Mutex::new(None),
        });
        let pool = match tokio::runtime::Handle::try_current() {
            Ok(handle) if inner.config.pool_size > 0 => {
                Some(pool::JailPool::start(inner.clone(), handle))
            }
            _ => None,
        };
        Ok(JailSandbox { inner, pool })
    }
}

impl JailInner {
    fn limits(&self, memory_mb: u32) -> CgroupLimits {
        let millis = u64::from(memory_mb) * 1000 / MB_PER_VCPU;
        CgroupLimits {
            memory_bytes: u64::from(memory_mb) << 20,
            pids_max: PIDS_MAX,
            cpu_millis: Some(u32::try_from(millis.max(1)).unwrap_or(u32::MAX)),
            cpu_quota: self.config.cpu_quota,
        }
    }

    /// Spawns a jailer and parks its jail (blocking, ~10-30 ms): cgroup `cgroup_name` with
    /// `limits`, namespaces, init, listener, and slirp4netns when `with_egress`; with
    /// `prefork`, a zygote's fork in the cgroup too (see `prefork`).
    fn park(
        &self,
        cgroup_name: &str,
        limits: &CgroupLimits,
        with_egress: bool,
        prefork: bool,
    ) -> Result<ParkedEnv, SandboxError> {
        let cgroup = match &self.cgroups {
            Some(parent) => {
                Some(
                    parent
                        .create(cgroup_name, limits)
                        .map_err(|e| SandboxError::Setup {
                            what: "create the environment's cgroup",
                            source: std::io::Error::other(e),
                        })?,
                )
            }
            None => None,
        };
        let remove_cgroup = |cg: Option<EnvCgroup>| {
            if let Some(cg) = cg {
                cg.kill_all(); // a zygote's fork may have joined it already
                let _ = cg.remove();
            }
        };
        // Only the shape matters now (ids, user namespace, cgroup, port); the run spec comes
        // when a function takes the jail.
        let shape = JailSpec {
            argv: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            hostname: "localhost".into(),
            root_mount_point: self.config.root_mount_point.clone(),
            binds: Vec::new(),
            etc_files: Vec::new(),
            tmp_mb: 1,
            shm_mb: 1,
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            user_namespace: self.config.rootless,
            cgroup_procs: cgroup
                .as_ref()
                .map(EnvCgroup::procs_files)
                .unwrap_or_default(),
            runtime_api_port: RUNTIME_API_PORT,
            seccomp: true,
            max_open_files: MAX_OPEN_FILES,
            wait_for_network: false, // set by the launcher
            zygote: false,
            egress_on_demand: false,
        };
        let (reader, writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => {
                remove_cgroup(cgroup);
                return Err(setup_error("create the log pipe")(e));
            }
        };
        let (pending, mut child) = match self.spawn_jailer(std::os::fd::AsFd::as_fd(&writer)) {
            Ok(spawned) => spawned,
            Err(e) => {
                remove_cgroup(cgroup);
                return Err(e);
            }
        };
        // Our copy of the jailer's end of the log pipe must be closed for EOF to mean "the
        // jail is gone".
        drop(writer);
        let egress = if with_egress {
            self.config.egress.as_ref()
        } else {
            None
        };
        match pending.park(&shape, START_TIMEOUT, egress) {
            Ok(jail) => {
                // A zygote's fork joins the cgroup now, right after the init: on cgroup v1
                // every join waits for an RCU grace period and stalls forks system-wide
                // meanwhile, and joins close together share one. A Python start then needs
                // no join of its own.
                let zygote_fork = if prefork {
                    self.prefork(cgroup.as_ref(), jail.init_pidfd())
                } else {
                    None
                };
                Ok(ParkedEnv {
                    jail,
                    child,
                    cgroup,
                    output: OwnedFd::from(reader),
                    zygote_fork,
                })
            }
            Err(e) => {
                // The jailer kills what it started once our end of the control socket is
                // closed (done by `park`); reap it and remove the cgroup in the background.
                tokio::spawn(async move {
                    let _ = child.exited().await;
                    if let Some(cg) = cgroup {
                        cg.kill_all();
                        let _ = cg.remove();
                    }
                });
                Err(launch_error(e))
            }
        }
    }

    /// A jailer whose standard output and error are `log`, forked by the fork server (started
    /// on first use, and again if it died): a fork of that small process costs ~1 ms of CPU
    /// less than an exec of this binary.
    fn spawn_jailer(
        &self,
        log: BorrowedFd<'_>,
    ) -> Result<(launch::PendingJail, SpawnedChild), SandboxError> {
        let spawn_error = |e| SandboxError::Spawn(e);
        for attempt in 0..2 {
            let server = {
                let mut slot = self
                    .fork_server
                    .lock()
                    .map_err(|_| spawn_error(std::io::Error::other("fork server lock poisoned")))?;
                match &*slot {
                    Some(server) => server.clone(),
                    None => {
                        let args: Vec<String> = self
                            .config
                            .jailer_args
                            .iter()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect();
                        let server = Arc::new(
                            ForkServer::start(&self.config.jailer_program, &args)
                                .map_err(spawn_error)?,
                        );
                        *slot = Some(server.clone());
                        server
                    }
                }
            };
            match server.spawn_jailer(log) {
                Ok(spawned) => return Ok(spawned),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && attempt == 0 => {
                    tracing::warn!(
                        "jail: the jailers' fork server (pid {}) is gone; restarting it",
                        server.id()
                    );
                    if let Ok(mut slot) = self.fork_server.lock()
                        && slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &server))
                    {
                        *slot = None;
                    }
                }
                Err(e) => return Err(spawn_error(e)),
            }
        }
        Err(spawn_error(std::io::ErrorKind::BrokenPipe.into()))
    }

    /// A runtime forked into a parked jail (whose init `init_pidfd` is) and its `cgroup`,
    /// from the zygote the last Python start used (none before the first).
    fn prefork(
        &self,
        cgroup: Option<&EnvCgroup>,
        init_pidfd: BorrowedFd<'_>,
    ) -> Option<(zygote::Key, zygote::ZygoteFork)> {
        let zygotes = self.zygotes.as_ref()?;
        let key = zygotes.last_key()?;
        let procs = cgroup.map(EnvCgroup::procs_files).unwrap_or_default();
        zygotes
            .fork(&key, &procs, init_pidfd)
            .ok()
            .map(|f| (key, f))
    }

    /// Runs the function of `spec` in a parked jail.
    fn run(&self, parked: ParkedEnv, spec: &EnvSpec) -> Result<StartedEnv, SandboxError> {
        let mut jspec = match jail_spec(spec, &self.config, parked.cgroup.as_ref()) {
            Ok(j) => j,
            Err(e) => {
                parked.discard();
                return Err(e);
            }
        };
        let ParkedEnv {
            jail,
            mut child,
            cgroup,
            output,
            zygote_fork,
        } = parked;
        // Forked first: the runtime joins the cgroup while the jail builds its root (or did
        // so when the jail was parked).
        let fork = self.zygote_fork(spec, &jspec, zygote_fork, jail.init_pidfd());
        jspec.zygote = fork.is_some();
        jspec.egress_on_demand = spec.network && self.egress_on_demand;
        let reap_in_background = |mut child: SpawnedChild, cgroup: Option<EnvCgroup>| {
            tokio::spawn(async move {
                let _ = child.exited().await;
                if let Some(cg) = cgroup {
                    cg.kill_all();
                    let _ = cg.remove();
                }
            });
        };
        let mut started = match jail.run(&jspec, START_TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                reap_in_background(child, cgroup);
                return Err(launch_error(e));
            }
        };
        let mut trigger = started.egress_trigger.take();
        let runtime = match fork.map(|f| f.start(&jspec, START_TIMEOUT)) {
            Some(Err(e)) => {
                started.process.kill();
                reap_in_background(child, cgroup);
                return Err(launch_error(e));
            }
            Some(Ok((runtime, fork_trigger))) => {
                trigger = fork_trigger;
                Some(runtime)
            }
            None => None,
        };
        let env = Arc::new(JailedEnv {
            process: started.process,
            cgroup,
        });
        if jspec.egress_on_demand
            && let Some(config) = &self.config.egress
        {
            match trigger {
                Some(listener) => {
                    tokio::spawn(egress::serve(listener, env.clone(), config.clone()));
                }
                None => {
                    // The kernel refused the trigger in this jail: attach now, as before.
                    tracing::warn!("jail: no egress trigger; attaching outbound networking now");
                    if let Err(e) = env.process.attach_egress(config) {
                        tracing::warn!("jail: cannot attach outbound networking: {e}");
                    }
                }
            }
        }
        let exited = match runtime {
            None => Box::pin(async move {
                match child.exited().await {
                    Ok(raw) => describe_raw_exit(raw),
                    Err(e) => format!("exit status unknown: {e}"),
                }
            }) as super::ExitFuture,
            Some(runtime) => {
                let env = env.clone();
                Box::pin(async move {
                    // The runtime is not the init's child but ours: its end comes from its
                    // own exit, and then the jail goes (killing the init empties the
                    // namespace).
                    let status = runtime.exited().await;
                    env.process.kill();
                    let jail_end = child.exited().await;
                    match (status, jail_end) {
                        (Some(raw), _) | (None, Ok(raw)) => describe_raw_exit(raw),
                        (None, Err(e)) => format!("exit status unknown: {e}"),
                    }
                })
            }
        };
        Ok(StartedEnv {
            listener: started.listener,
            output,
            process: env,
            exited,
        })
    }

    /// A zygote's fork for `spec`'s runtime when a zygote can start it (see `zygote`): the
    /// parked jail's own if it came from the right zygote, else a new one into the jail
    /// whose init `init_pidfd` is. `None`: the jail execs the runtime. A parked fork not
    /// used is dropped (killed and reaped).
    fn zygote_fork(
        &self,
        spec: &EnvSpec,
        jspec: &JailSpec,
        parked: Option<(zygote::Key, zygote::ZygoteFork)>,
        init_pidfd: BorrowedFd<'_>,
    ) -> Option<zygote::ZygoteFork> {
        let zygotes = self.zygotes.as_ref()?;
        let key = zygotes.key_for(spec)?;
        if let Some((parked_key, fork)) = parked
            && parked_key == key
        {
            return Some(fork);
        }
        match zygotes.fork(&key, &jspec.cgroup_procs, init_pidfd) {
            Ok(fork) => Some(fork),
            Err(e) => {
                tracing::warn!("jail: Python zygote unavailable, exec'ing the runtime: {e}");
                None
            }
        }
    }
}

/// [`describe_exit`] of a raw wait status.
fn describe_raw_exit(raw: i32) -> super::ExitDescription {
    use std::os::unix::process::ExitStatusExt;
    describe_exit(std::process::ExitStatus::from_raw(raw))
}

/// The host paths every environment sees read-only (nothing secret: system libraries and
/// programs, the dynamic linker cache, CA certificates, Debian's alternatives symlinks).
fn system_binds() -> Vec<Bind> {
    let sys = |path: &str, mirror_symlink: bool, optional: bool| Bind {
        source: path.into(),
        target: path.into(),
        mirror_symlink,
        optional,
    };
    vec![
        sys("/usr", true, false),
        sys("/bin", true, true),
        sys("/sbin", true, true),
        sys("/lib", true, true),
        sys("/lib64", true, true),
        sys("/lib32", true, true),
        sys("/etc/ld.so.cache", false, true),
        sys("/etc/ssl/certs", false, true),
        sys("/etc/ssl/openssl.cnf", false, true),
        sys("/etc/alternatives", false, true),
        sys("/etc/mime.types", false, true),
    ]
}

/// Our own `/etc` files (never the host's: no other users, no host names, no secrets).
fn etc_files(spec: &EnvSpec) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "passwd".to_string(),
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\n\
                 sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/home/sbx_user1051:/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
            )
            .into_bytes(),
        ),
        (
            "group".to_string(),
            format!("root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnogroup:x:65534:\n").into_bytes(),
        ),
        (
            "hosts".to_string(),
            b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n".to_vec(),
        ),
        (
            "nsswitch.conf".to_string(),
            b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec(),
        ),
    ];
    // Name resolution only matters with outbound access; slirp4netns forwards its DNS
    // address to the host's resolvers.
    let resolv = if spec.network {
        format!("nameserver {SLIRP_DNS}\n").into_bytes()
    } else {
        Vec::new()
    };
    files.push(("resolv.conf".to_string(), resolv));
    files
}

/// Translates an environment's spec into the jailer's.
fn jail_spec(
    spec: &EnvSpec,
    config: &JailConfig,
    cgroup: Option<&EnvCgroup>,
) -> Result<JailSpec, SandboxError> {
    let invalid = |what: &'static str, msg: String| SandboxError::Setup {
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
    };
    if spec.argv.is_empty() {
        return Err(invalid(
            "read the command line",
            "empty command line".into(),
        ));
    }
    let mut binds = system_binds();
    for path in &spec.host_paths {
        if !path.is_absolute() {
            return Err(invalid(
                "bind a host path",
                format!("{} is not absolute", path.display()),
            ));
        }
        binds.push(Bind {
            source: path.clone(),
            target: path.to_string_lossy().into_owned(),
            mirror_symlink: false,
            optional: false,
        });
    }
    let mut dir = |source: &Path, target: &str| {
        binds.push(Bind {
            source: source.to_path_buf(),
            target: target.into(),
            mirror_symlink: false,
            optional: false,
        })
    };
    dir(&spec.code_dir, "/var/task");
    if let Some(rt) = &spec.runtime_dir {
        dir(rt, "/var/runtime");
    }
    if let Some(opt) = &spec.opt_dir {
        dir(opt, "/opt");
    }
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_LAMBDA_RUNTIME_API")
        .cloned()
        .collect();
    env.push((
        "AWS_LAMBDA_RUNTIME_API".into(),
        RUNTIME_API_IN_NAMESPACE.into(),
    ));
    Ok(JailSpec {
        argv: spec.argv.clone(),
        env,
        cwd: spec.cwd.clone(),
        hostname: "localhost".into(),
        root_mount_point: config.root_mount_point.clone(),
        binds,
        etc_files: etc_files(spec),
        tmp_mb: spec.ephemeral_mb,
        // Shared memory is charged to the memory cgroup, so the memory size bounds it anyway.
        shm_mb: spec.memory_mb,
        uid: SANDBOX_UID,
        gid: SANDBOX_GID,
        user_namespace: config.rootless,
        cgroup_procs: cgroup.map(EnvCgroup::procs_files).unwrap_or_default(),
        runtime_api_port: RUNTIME_API_PORT,
        seccomp: true,
        max_open_files: MAX_OPEN_FILES,
        wait_for_network: false, // set by the launcher
        zygote: false,
        egress_on_demand: false, // set by `run`
    })
}

/// One environment's processes and cgroup, as the pool sees them.
struct JailedEnv {
    process: JailProcess,
    cgroup: Option<EnvCgroup>,
}

impl EnvProcess for JailedEnv {
    fn pid(&self) -> u32 {
        self.process.init_pid
    }

    fn kill(&self) {
        // Killing the PID namespace's init makes the kernel kill everything in it.
        self.process.kill();
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.cgroup.as_ref()?.peak_memory_bytes()
    }

    fn apply_limits(&self, limits: &CgroupLimits) {
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.apply_limits(limits)
        {
            tracing::warn!("jail: cannot apply an environment's limits: {e}");
        }
    }

    fn cleanup(&self) {
        self.process.stop_egress();
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
            if let Err(e) = cg.remove() {
                tracing::warn!("jail: cannot remove an environment's cgroup: {e}");
            }
        }
    }
}

/// Applies the CPU quota once init is over.
struct QuotaAfterInit {
    env: Arc<dyn EnvProcess>,
    limits: CgroupLimits,
}

impl EnvProcess for QuotaAfterInit {
    fn pid(&self) -> u32 {
        self.env.pid()
    }

    fn kill(&self) {
        self.env.kill();
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        self.env.max_memory_bytes()
    }

    fn cleanup(&self) {
        self.env.cleanup();
    }

    fn init_done(&self) {
        self.env.apply_limits(&self.limits);
    }

    fn apply_limits(&self, limits: &CgroupLimits) {
        self.env.apply_limits(limits);
    }
}

fn setup_error(what: &'static str) -> impl FnOnce(std::io::Error) -> SandboxError {
    move |source| SandboxError::Setup { what, source }
}

impl Sandbox for JailSandbox {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn start(&self, spec: &EnvSpec) -> Result<StartedEnv, SandboxError> {
        let inner = &self.inner;
        let with_egress = spec.network && inner.egress_up_front();
        // Init runs with the proportional CPU share but no hard quota (Lambda's init phase is
        // observed to burst); the quota applies from the first invocation (`init_done`).
        let limits = CgroupLimits {
            cpu_quota: false,
            ..inner.limits(spec.memory_mb)
        };
        let parked = match self.pool.as_ref().and_then(|p| p.take(with_egress)) {
            Some(parked) => {
                if let Some(cg) = &parked.cgroup
                    && let Err(e) = cg.apply_limits(&limits)
                {
                    parked.discard();
                    return Err(SandboxError::Setup {
                        what: "set the environment's limits",
                        source: std::io::Error::other(e),
                    });
                }
                parked
            }
            // The slow path: park one now.
            None => inner.park(&spec.env_id, &limits, with_egress, false)?,
        };
        let mut started = inner.run(parked, spec)?;
        if inner.config.cpu_quota {
            started.process = Arc::new(QuotaAfterInit {
                env: started.process,
                limits: inner.limits(spec.memory_mb),
            });
        }
        Ok(started)
    }

    fn sweep_leftovers(&self) {
        // Done by `JailSandbox::new`, before the pool parked jails of its own under the same
        // parent (a later sweep would kill them).
    }
}

impl Drop for JailSandbox {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.stop();
        }
    }
}

/// `Spawn` only when the function's own entrypoint could not be run (the invoker answers
/// that as Lambda does, `Runtime.InvalidEntrypoint`); anything else is the platform's.
fn launch_error(e: LaunchError) -> SandboxError {
    if let Some(source) = e.entrypoint_error() {
        return SandboxError::Spawn(std::io::Error::new(source.kind(), source.to_string()));
    }
    match e {
        LaunchError::Setup { step, source } => SandboxError::Setup {
            what: "start the jail",
            source: std::io::Error::new(source.kind(), format!("{step}: {source}")),
        },
        other => SandboxError::Setup {
            what: "start the jail",
            source: std::io::Error::other(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_spec(code_dir: &Path, argv: &[&str]) -> EnvSpec {
        EnvSpec {
            env_id: format!("{:032x}", fastrand::u128(..)),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:1".into()),
            ],
            code_dir: code_dir.to_path_buf(),
            runtime_dir: None,
            opt_dir: None,
            host_paths: vec!["/usr".into()],
            memory_mb: 128,
            ephemeral_mb: 512,
            network: false,
            cwd: "/var/task".into(),
        }
    }

    /// `python3 -I -S -c code` in a jail.
    fn python_c(code_dir: &Path, code: &str) -> EnvSpec {
        env_spec(code_dir, &["/usr/bin/python3", "-I", "-S", "-c", code])
    }

    fn config(dir: &Path) -> JailConfig {
        JailConfig {
            // The test binary is its own jailer: see `jailer_entry` below.
            jailer_program: std::env::current_exe().unwrap(),
            jailer_args: [
                "__jail",
                "--exact",
                "sandbox::jail::tests::jailer_entry",
                "--test-threads=1",
                "-q",
            ]
            .map(OsString::from)
            .to_vec(),
            root_mount_point: dir.join("root"),
            // One parent per test: a test's cleanup sweeps its parent, never another test's.
            cgroup_parent: format!(
                "nimbus-jailtest-{}-{:x}",
                std::process::id(),
                fastrand::u32(..)
            ),
            allow_no_cgroups: false,
            cpu_quota: false,
            rootless: false,
            egress: EgressConfig::detect(),
            egress_on_demand: true,
            pool_size: 0,
            python_zygote: false,
        }
    }

    /// Not a test: the entry point when this binary runs as `<test binary> __jail …`.
    #[test]
    fn jailer_entry() {
        if std::env::args().any(|a| a == "__jail") {
            jailer_main();
        }
    }

    #[test]
    fn memory_size_sets_memory_pids_and_proportional_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.cpu_quota = true;
        let inner = JailInner {
            config: cfg,
            cgroups: None,
            zygotes: None,
            egress_on_demand: false,
            fork_server: Mutex::new(None),
        };
        let limits = inner.limits(128);
        assert_eq!(limits.memory_bytes, 128 << 20);
        assert_eq!(limits.pids_max, 1024);
        assert_eq!(limits.cpu_millis, Some(72));
        assert_eq!(inner.limits(1769).cpu_millis, Some(1000));
        assert_eq!(inner.limits(10240).cpu_millis, Some(5788));
        assert!(limits.cpu_quota);
    }

    #[test]
    fn runtime_api_variable_points_into_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let spec = env_spec(dir.path(), &["/var/task/bootstrap"]);
        let j = jail_spec(&spec, &config(dir.path()), None).unwrap();
        let apis: Vec<_> = j
            .env
            .iter()
            .filter(|(k, _)| k == "AWS_LAMBDA_RUNTIME_API")
            .collect();
        assert_eq!(apis.len(), 1);
        assert_eq!(apis[0].1, "127.0.0.1:9001");
    }

    #[test]
    fn only_listed_host_paths_are_bound_and_code_lands_at_var_task() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = env_spec(dir.path(), &["/var/task/bootstrap"]);
        spec.runtime_dir = Some("/srv/runtimes/python".into());
        let j = jail_spec(&spec, &config(dir.path()), None).unwrap();
        let targets: Vec<&str> = j.binds.iter().map(|b| b.target.as_str()).collect();
        assert!(targets.contains(&"/var/task") && targets.contains(&"/var/runtime"));
        assert!(!targets.contains(&"/opt"));
        for b in &j.binds {
            let t = b.target.as_str();
            assert!(
                !t.starts_with("/etc")
                    || t == "/etc/ld.so.cache"
                    || t.starts_with("/etc/ssl/certs")
                    || t == "/etc/ssl/openssl.cnf"
                    || t == "/etc/alternatives"
                    || t == "/etc/mime.types",
                "host /etc leaks through {t}"
            );
            assert!(!t.starts_with("/root") && !t.starts_with("/home") && t != "/etc/ssl");
        }
        assert!(
            j.etc_files.iter().any(|(n, c)| n == "passwd"
                && String::from_utf8_lossy(c).contains("sbx_user1051:x:993:990"))
        );
        assert!(
            j.etc_files
                .iter()
                .any(|(n, c)| n == "resolv.conf" && c.is_empty()),
            "no DNS without network"
        );
        assert_eq!((j.uid, j.gid, j.tmp_mb), (993, 990, 512));
    }

    #[test]
    fn relative_host_paths_and_empty_commands_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = env_spec(dir.path(), &["/bin/true"]);
        spec.host_paths = vec!["usr".into()];
        assert!(jail_spec(&spec, &config(dir.path()), None).is_err());
        let spec = env_spec(dir.path(), &[]);
        assert!(jail_spec(&spec, &config(dir.path()), None).is_err());
    }

    // --- Real jails (root only). -------------------------------------------------------------

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    async fn read_all(fd: OwnedFd) -> String {
        tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s);
            s
        })
        .await
        .unwrap_or_default()
    }

    /// A sandbox with `config(dir)`'s settings, after the guard that removes its cgroups (so
    /// the guard drops last); `None`, and the test is skipped, without root.
    fn root_sandbox(dir: &Path) -> Option<(Cleanup, JailSandbox)> {
        if !is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let cfg = config(dir);
        let cleanup = Cleanup(cfg.clone());
        Some((cleanup, JailSandbox::new(cfg).unwrap()))
    }

    /// Removes the test's cgroup parent even when an assertion failed.
    struct Cleanup(JailConfig);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(layout) = CgroupLayout::detect() {
                let parent = CgroupParent::new(layout, &self.0.cgroup_parent);
                parent.sweep();
                let _ = parent.remove();
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn function_reaches_its_runtime_api_and_nothing_is_left_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_cleanup, sandbox)) = root_sandbox(dir.path()) else {
            return;
        };
        let code = dir.path().join("code");
        std::fs::create_dir(&code).unwrap();
        let spec = python_c(
            &code,
            "import os,socket; h,p=os.environ['AWS_LAMBDA_RUNTIME_API'].split(':'); s=socket.create_connection((h,int(p))); s.sendall(b'next'); print('uid', os.getuid(), s.recv(2).decode())",
        );
        let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
        let listener = started.listener;
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the function connects within 10 s")
            .unwrap();
        let mut buf = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf, b"next");
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"ok")
            .await
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), started.exited)
            .await
            .expect("the function exits");
        let out = read_all(started.output).await;
        assert_eq!(status, "exit status 0", "{out}");
        assert!(out.contains("uid 993 ok"), "{out}");
        assert!(started.process.max_memory_bytes().unwrap_or(0) > 1 << 20);
        let parent = sandbox.inner.cgroups.as_ref().unwrap();
        let dirs: Vec<PathBuf> = match parent.layout() {
            CgroupLayout::V1 { memory, pids, .. } => vec![memory.clone(), pids.clone()],
            CgroupLayout::V2 { root, .. } => vec![root.clone()],
        }
        .into_iter()
        .map(|root| {
            root.join(&sandbox.inner.config.cgroup_parent)
                .join(&spec.env_id)
        })
        .collect();
        assert!(
            dirs.iter().all(|d| d.is_dir()),
            "cgroup exists while the environment does"
        );
        started.process.cleanup();
        assert!(dirs.iter().all(|d| !d.exists()), "cgroup removed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jailers_are_our_children_and_a_dead_fork_server_is_replaced() {
        use crate::test_support::stat_field;
        let dir = tempfile::tempdir().unwrap();
        let Some((_cleanup, sandbox)) = root_sandbox(dir.path()) else {
            return;
        };
        let fork_server = || {
            sandbox
                .inner
                .fork_server
                .lock()
                .unwrap()
                .as_ref()
                .map(|s| s.id())
        };

        let mut spec = python_c(dir.path(), "import time; time.sleep(60)");
        let first = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
        let forker = fork_server().expect("a fork server started the jailer");
        let monitor: u32 = stat_field(first.process.pid(), 4).unwrap().parse().unwrap();
        assert_eq!(
            stat_field(monitor, 4),
            Some(std::process::id().to_string()),
            "the monitor is the server's child, not the fork server's"
        );

        rustix::process::kill_process(
            rustix::process::Pid::from_raw(forker as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        crate::test_support::wait_until("the fork server is dead", || {
            stat_field(forker, 3).is_none_or(|state| state == "Z")
        });

        spec.env_id = "1".repeat(32);
        spec.argv = vec!["/bin/sh".into(), "-c".into(), "exit 3".into()];
        let second = tokio::task::block_in_place(|| sandbox.start(&spec))
            .expect("a new fork server starts the next jail");
        assert_ne!(fork_server(), Some(forker), "replaced");
        let status = tokio::time::timeout(Duration::from_secs(10), second.exited)
            .await
            .expect("the second function exits");
        assert_eq!(status, "exit status 3");
        second.process.cleanup();

        assert!(
            stat_field(monitor, 3).is_some_and(|state| state != "Z"),
            "the first environment outlived the fork server"
        );
        first.process.kill();
        let status = tokio::time::timeout(Duration::from_secs(10), first.exited)
            .await
            .expect("the first function ends when killed");
        assert_eq!(status, "signal: killed");
        first.process.cleanup();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_memory_and_kill_end_with_signal_killed() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_cleanup, sandbox)) = root_sandbox(dir.path()) else {
            return;
        };
        let mut spec = python_c(dir.path(), "b = bytearray(300 << 20)");
        spec.memory_mb = 64;
        let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
        assert_eq!(started.exited.await, "signal: killed");
        started.process.cleanup();

        let spec = env_spec(dir.path(), &["/bin/sleep", "60"]);
        let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
        let pid = started.process.pid();
        started.process.kill();
        started.process.kill();
        assert_eq!(started.exited.await, "signal: killed");
        started.process.cleanup();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_bootstrap_fails_the_start_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_cleanup, sandbox)) = root_sandbox(dir.path()) else {
            return;
        };
        let spec = env_spec(dir.path(), &["/var/task/bootstrap"]);
        let err = tokio::task::block_in_place(|| sandbox.start(&spec))
            .err()
            .unwrap();
        // The function's fault, answered as Runtime.InvalidEntrypoint by the invoker.
        assert!(
            matches!(&err, SandboxError::Spawn(io) if io.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn networked_functions_get_egress_up_front_or_on_first_use() {
        if !is_root() || EgressConfig::detect().is_none() {
            eprintln!("skipped: needs root and slirp4netns");
            return;
        }
        for on_demand in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(dir.path());
            cfg.pool_size = 1;
            cfg.egress_on_demand = on_demand;
            if let Some(e) = &mut cfg.egress {
                // Tests only: the gateway leads to the host's loopback, so no packet leaves.
                e.allow_host_loopback = true;
            }
            let _cleanup = Cleanup(cfg.clone());
            let sandbox = JailSandbox::new(cfg).unwrap();
            let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = host.local_addr().unwrap().port();
            // Let the pool park a jail, so the first start is pooled and the next likely
            // inline. On demand, parked jails never have egress.
            wait_for_parked(&sandbox, !on_demand).await;
            for round in 0..2 {
                let mut spec = python_c(
                    dir.path(),
                    &format!(
                        "import socket; socket.create_connection(('10.0.2.2', {port}), timeout=5).sendall(b'hi'); print(open('/etc/resolv.conf').read().strip()); print(open('/proc/net/dev').read())"
                    ),
                );
                spec.network = true;
                let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
                let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), host.accept())
                    .await
                    .expect("egress reaches the host")
                    .unwrap();
                let mut buf = [0u8; 2];
                tokio::io::AsyncReadExt::read_exact(&mut conn, &mut buf)
                    .await
                    .unwrap();
                assert_eq!(&buf, b"hi", "on demand {on_demand}, round {round}");
                assert_eq!(started.exited.await, "exit status 0");
                let output = read_all(started.output).await;
                assert!(output.contains("nameserver 10.0.2.3"), "{output}");
                assert!(output.contains("tap0"), "{output}");
                started.process.cleanup();
            }
            if on_demand {
                // Loopback only, by TCP and by UDP with an address: no egress is attached.
                let mut spec = python_c(
                    dir.path(),
                    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); \
                         c = socket.create_connection(s.getsockname()); c.sendall(b'x'); \
                         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
                         u.sendto(b'x', ('127.0.0.1', 9)); print(open('/proc/net/dev').read())",
                );
                spec.network = true;
                let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
                assert_eq!(started.exited.await, "exit status 0");
                let output = read_all(started.output).await;
                assert!(output.contains("lo:"), "{output}");
                assert!(!output.contains("tap0"), "no egress attached: {output}");
                started.process.cleanup();
            }
        }
    }

    async fn wait_for_parked(sandbox: &JailSandbox, with_egress: bool) {
        for _ in 0..250 {
            if sandbox
                .pool
                .as_ref()
                .is_some_and(|p| p.ready(with_egress) > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the pool parked nothing within 5 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_jail_takes_the_functions_own_memory_limit() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.pool_size = 1;
        let _cleanup = Cleanup(cfg.clone());
        let sandbox = JailSandbox::new(cfg).unwrap();
        wait_for_parked(&sandbox, false).await;
        // Parked with 128 MB; this function has 64 MB and allocates 100.
        let mut spec = python_c(dir.path(), "b = bytearray(100 << 20); print('survived')");
        spec.memory_mb = 64;
        let started = tokio::task::block_in_place(|| sandbox.start(&spec)).unwrap();
        assert_eq!(started.exited.await, "signal: killed");
        started.process.cleanup();
        drop(sandbox);
    }

    #[test]
    fn each_data_directory_gets_its_own_cgroup_parent() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = cgroup_parent_for(a.path());
        assert_eq!(pa, cgroup_parent_for(a.path()), "stable across restarts");
        assert_ne!(pa, cgroup_parent_for(b.path()));
        assert!(pa.starts_with("nimbus-") && pa.len() == 19 && !pa.contains('/'));
    }
}
