//! Per-environment cgroups on v1 (one directory per controller hierarchy) and v2 (one unified
//! directory): creation with limits, peak memory, OOM count, kill, removal, and the sweep of
//! leftovers after a crash.
//!
//! Layout: `<hierarchy root>/<parent>/<env id>`, `<parent>` being `nimbus` for the server.
//! Hierarchy roots are detected from `/proc/self/mountinfo` or injected ([`CgroupLayout::v2_at`])
//! so the v2 code can be tested against a fake tree on hosts whose v2 hierarchy has no
//! controllers. The files are written with `create(true)`: a no-op on a real cgroupfs, where
//! the kernel already made them (and refuses to create unknown names), and what lets a plain
//! directory stand in for the kernel's tree in tests.
//!
//! No unsafe code here; it lives in this crate because it is kernel-facing plumbing.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which cgroup interface manages the environments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the controllers live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Separate v1 hierarchies. `cpu` is optional (no CPU limit without it).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: Option<PathBuf>,
    },
    /// One unified v2 hierarchy with the memory and pids (and maybe cpu) controllers.
    V2 { root: PathBuf, cpu: bool },
}

/// Errors of cgroup detection and management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no usable cgroup hierarchy: need the memory and pids controllers, either as cgroup v1 \
         mounts or on the cgroup v2 mount ({0})"
    )]
    NoControllers(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Resource limits of one environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit, bytes; swap is disabled for the environment.
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: u32,
    /// CPU share, in thousandths of a CPU: the proportional weight, and the hard quota when
    /// `cpu_quota`. `None`: no CPU settings at all.
    pub cpu_millis: Option<u32>,
    /// Enforce `cpu_millis` as a hard quota (otherwise the quota is "max").
    pub cpu_quota: bool,
}

/// CFS period used for the CPU quota (the kernel's default).
/// 20 ms rather than the kernel's default 100 ms: a throttled environment then stalls for at
/// most ~18.5 ms instead of ~93 ms (the share is the same), and the smallest function (128 MB,
/// 72/1000 of a CPU) still gets its exact share above the kernel's 1 ms minimum quota.
const CPU_PERIOD_US: u64 = 20_000;

impl CgroupLayout {
    /// Detects the host's layout from `/proc/self/mountinfo`, preferring v1 controllers when
    /// they are mounted (on hybrid hosts the v2 hierarchy has none of them).
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(io_err("read", path))?;
        Self::from_mountinfo(&text, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    /// Parses a mountinfo text; `controllers_of` reads a v2 root's `cgroup.controllers`.
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers_of: impl Fn(&Path) -> String,
    ) -> Result<CgroupLayout, CgroupError> {
        let (mut memory, mut pids, mut cpu, mut v2) = (None, None, None, None);
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or("");
            let options = right.nth(1).unwrap_or("");
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                "cgroup" => {
                    for opt in options.split(',') {
                        match opt {
                            "memory" => memory = Some(mount_point.clone()),
                            "pids" => pids = Some(mount_point.clone()),
                            "cpu" => cpu = Some(mount_point.clone()),
                            _ => {}
                        }
                    }
                }
                "cgroup2" if v2.is_none() => v2 = Some(mount_point),
                _ => {}
            }
        }
        if let (Some(memory), Some(pids)) = (memory, pids) {
            return Ok(CgroupLayout::V1 { memory, pids, cpu });
        }
        if let Some(root) = v2 {
            let controllers = controllers_of(&root);
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") && has("pids") {
                return Ok(CgroupLayout::V2 {
                    cpu: has("cpu"),
                    root,
                });
            }
            return Err(CgroupError::NoControllers(format!(
                "v2 at {} offers only [{}]",
                root.display(),
                controllers.trim()
            )));
        }
        Err(CgroupError::NoControllers("no cgroup mounts found".into()))
    }

    /// A v2 layout rooted at `root` (a real cgroup2 mount or a fake tree in tests).
    pub fn v2_at(root: PathBuf) -> CgroupLayout {
        CgroupLayout::V2 { root, cpu: true }
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            CgroupLayout::V1 { .. } => CgroupVersion::V1,
            CgroupLayout::V2 { .. } => CgroupVersion::V2,
        }
    }

    fn hierarchy_roots(&self) -> Vec<(&'static str, &Path)> {
        match self {
            CgroupLayout::V1 { memory, pids, cpu } => {
                let mut v = vec![("memory", memory.as_path()), ("pids", pids.as_path())];
                if let Some(cpu) = cpu {
                    v.push(("cpu", cpu.as_path()));
                }
                v
            }
            CgroupLayout::V2 { root, .. } => vec![("unified", root.as_path())],
        }
    }
}

/// Mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.clone().take(3).collect();
            if let Ok(v) = u8::from_str_radix(&code, 8) {
                out.push(char::from(v));
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The parent cgroup under which all environments of one server live.
#[derive(Clone, Debug)]
pub struct CgroupParent {
    layout: CgroupLayout,
    name: String,
}

impl CgroupParent {
    /// `name` is a single path component (`nimbus`; tests use their own).
    pub fn new(layout: CgroupLayout, name: &str) -> CgroupParent {
        CgroupParent {
            layout,
            name: name.to_string(),
        }
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchy_roots()
            .into_iter()
            .map(|(_, root)| root.join(&self.name))
            .collect()
    }

    /// The cgroup named `name` under the parent, in each hierarchy whose directory `keep`s.
    fn env_cgroup(
        &self,
        name: impl AsRef<std::ffi::OsStr>,
        keep: impl Fn(&Path) -> bool,
    ) -> EnvCgroup {
        EnvCgroup {
            version: self.layout.version(),
            dirs: self
                .layout
                .hierarchy_roots()
                .into_iter()
                .map(|(kind, root)| (kind, root.join(&self.name).join(name.as_ref())))
                .filter(|(_, d)| keep(d))
                .collect(),
            peak_file: std::sync::OnceLock::new(),
            bandwidth_set: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Creates the parent directories and, on v2, delegates the controllers to them.
    pub fn prepare(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create cgroup", &dir)(e)),
            }
        }
        if let CgroupLayout::V2 { root, cpu } = &self.layout {
            let mut controllers = vec!["+memory", "+pids"];
            if *cpu {
                controllers.push("+cpu");
            }
            for dir in [root.clone(), root.join(&self.name)] {
                let file = dir.join("cgroup.subtree_control");
                for c in &controllers {
                    append_file(&file, c).map_err(io_err("enable controller in", &file))?;
                }
            }
        }
        Ok(())
    }

    /// Creates the cgroup of one environment with its limits.
    pub fn create(&self, env_id: &str, limits: &CgroupLimits) -> Result<EnvCgroup, CgroupError> {
        if env_id.is_empty() || env_id.contains('/') || env_id.starts_with('.') {
            return Err(io_err("invalid cgroup name", Path::new(env_id))(
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        let cgroup = self.env_cgroup(env_id, |_| true);
        for (_, dir) in &cgroup.dirs {
            let mut created = fs::create_dir(dir);
            if created
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            {
                // The parent went away (the last jailer of a dead server removes it): again.
                self.prepare()?;
                created = fs::create_dir(dir);
            }
            match created {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    cgroup
                        .bandwidth_set
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = cgroup.remove();
                    return Err(io_err("create cgroup", dir)(e));
                }
            }
        }
        if let Err(e) = cgroup.apply_limits(limits) {
            let _ = cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Kills every process in every environment cgroup under the parent and removes them:
    /// what a crashed earlier server left behind. Returns how many cgroups were removed.
    pub fn sweep(&self) -> usize {
        let mut names = std::collections::BTreeSet::new();
        for dir in self.dirs() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.insert(entry.file_name());
                }
            }
        }
        let mut removed = 0;
        for name in names {
            let cgroup = self.env_cgroup(&name, |d| d.is_dir());
            cgroup.kill_all();
            if cgroup.remove().is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Removes the (empty) parent directories; for tests that made their own parent.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove cgroup", &dir)(e)),
            }
        }
        Ok(())
    }
}

/// The cgroup(s) of one environment.
#[derive(Debug)]
pub struct EnvCgroup {
    version: CgroupVersion,
    /// (controller or "unified", directory)
    dirs: Vec<(&'static str, PathBuf)>,
    /// The peak-memory file, opened on the first read and re-read with `pread` at offset 0
    /// (which makes the kernel regenerate it): one syscall per REPORT instead of open + read +
    /// close.
    peak_file: std::sync::OnceLock<Option<fs::File>>,
    /// A CPU quota may be in force (or the directory existed before us): the bandwidth files
    /// must be written even to clear it. A new cgroup has none, and each bandwidth write costs
    /// the kernel a walk over every CPU (`tg_set_bandwidth`), twice per environment.
    bandwidth_set: std::sync::atomic::AtomicBool,
}

impl EnvCgroup {
    fn dir(&self, kind: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(k, _)| *k == kind || *k == "unified")
            .map(|(_, d)| d.as_path())
    }

    /// Sets (or changes) the limits; a parked environment gets its function's limits when it
    /// is taken.
    pub fn apply_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let write = |kind: &str, file: &str, value: String| -> Result<(), CgroupError> {
            let Some(dir) = self.dir(kind) else {
                return Ok(());
            };
            let path = dir.join(file);
            write_file(&path, &value).map_err(io_err("write", &path))
        };
        let write_if_present = |kind: &str, file: &str, value: &str| {
            if let Some(dir) = self.dir(kind) {
                let path = dir.join(file);
                if path.exists() {
                    let _ = write_file(&path, value);
                }
            }
        };
        let mem = limits.memory_bytes.to_string();
        let write_bandwidth = limits.cpu_quota
            || self
                .bandwidth_set
                .load(std::sync::atomic::Ordering::Relaxed);
        match self.version {
            CgroupVersion::V1 => {
                // The kernel keeps memory <= memory+swap (memsw, present with swap
                // accounting): lowering goes memory first, raising memsw first. Setting both
                // equal disables swap for the environment.
                if write("memory", "memory.limit_in_bytes", mem.clone()).is_err() {
                    write_if_present("memory", "memory.memsw.limit_in_bytes", &mem);
                    write("memory", "memory.limit_in_bytes", mem.clone())?;
                }
                write_if_present("memory", "memory.memsw.limit_in_bytes", &mem);
                write_if_present("memory", "memory.swappiness", "0");
                write("pids", "pids.max", limits.pids_max.to_string())?;
                if let Some(millis) = limits.cpu_millis {
                    let shares = (1024 * u64::from(millis) / 1000).max(2);
                    write("cpu", "cpu.shares", shares.to_string())?;
                    if write_bandwidth {
                        write("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                        let quota = if limits.cpu_quota {
                            cpu_quota_us(millis).to_string()
                        } else {
                            "-1".to_string()
                        };
                        write("cpu", "cpu.cfs_quota_us", quota)?;
                    }
                }
            }
            CgroupVersion::V2 => {
                write("memory", "memory.max", mem)?;
                write_if_present("memory", "memory.swap.max", "0");
                write("pids", "pids.max", limits.pids_max.to_string())?;
                if let Some(millis) = limits.cpu_millis {
                    let weight = (100 * u64::from(millis) / 1000).clamp(1, 10_000);
                    write("cpu", "cpu.weight", weight.to_string())?;
                    if write_bandwidth {
                        let quota = if limits.cpu_quota {
                            cpu_quota_us(millis).to_string()
                        } else {
                            "max".to_string()
                        };
                        write("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                    }
                }
            }
        }
        if limits.cpu_millis.is_some() {
            self.bandwidth_set
                .store(limits.cpu_quota, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes itself (or is written) into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// Peak memory use so far, bytes.
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        let file = self
            .peak_file
            .get_or_init(|| {
                let name = match self.version {
                    CgroupVersion::V1 => "memory.max_usage_in_bytes",
                    CgroupVersion::V2 => "memory.peak",
                };
                fs::File::open(self.dir("memory")?.join(name)).ok()
            })
            .as_ref()?;
        read_u64_at_start(file)
    }

    /// How many processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.dir("memory")?;
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        let text = fs::read_to_string(dir.join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Pids (in the caller's PID namespace) currently in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for (_, dir) in &self.dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup (v2: `cgroup.kill`; v1: each listed pid, until
    /// the list is empty or a short deadline passes). Never blocks for long.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && let Some(dir) = self.dir("pids")
        {
            let file = dir.join("cgroup.kill");
            if file.exists() && write_file(&file, "1").is_ok() {
                return;
            }
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Removes the cgroup directories. The processes must be gone; the kernel may still
    /// report EBUSY for a few milliseconds after the last one exited, so this retries briefly.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_millis(500);
        for (_, dir) in &self.dirs {
            loop {
                match remove_cgroup_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => return Err(io_err("remove cgroup", dir)(e)),
                }
            }
        }
        Ok(())
    }
}

fn cpu_quota_us(millis: u32) -> u64 {
    // Never below 1 ms per period: the kernel's minimum quota.
    (CPU_PERIOD_US * u64::from(millis) / 1000).max(1000)
}

/// rmdir; in a fake tree (a plain directory with files in it) the files go first.
fn remove_cgroup_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
            fs::remove_dir_all(dir)
        }
        other => other,
    }
}

fn is_cgroupfs(dir: &Path) -> bool {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    rustix::fs::statfs(dir).is_ok_and(|s| {
        // `f_type`'s integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

/// Reads a small decimal file (a cgroup or proc counter) from offset 0 with one `pread`; for
/// kernel-generated files that re-renders the current value.
pub fn read_u64_at_start(file: &fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

fn append_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    f.write_all(format!("{value}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE_V2: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn hybrid_host_uses_the_v1_controllers() {
        let layout = CgroupLayout::from_mountinfo(HYBRID, |_| "hugetlb".into()).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
            }
        );
    }

    #[test]
    fn pure_v2_host_uses_the_unified_hierarchy() {
        let layout =
            CgroupLayout::from_mountinfo(PURE_V2, |_| "cpuset cpu io memory pids".into()).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                root: "/sys/fs/cgroup".into(),
                cpu: true
            }
        );
    }

    #[test]
    fn v2_without_memory_controller_is_a_clear_error() {
        let err = CgroupLayout::from_mountinfo(PURE_V2, |_| "hugetlb".into()).unwrap_err();
        assert!(err.to_string().contains("offers only [hugetlb]"), "{err}");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
    }

    fn fake_v2() -> (tempfile::TempDir, CgroupParent) {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let parent = CgroupParent::new(CgroupLayout::v2_at(root.path().to_path_buf()), "nimbus");
        (root, parent)
    }

    #[test]
    fn v2_parent_delegates_controllers() {
        let (root, parent) = fake_v2();
        parent.prepare().unwrap();
        for dir in [root.path().to_path_buf(), root.path().join("nimbus")] {
            let text = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert_eq!(text, "+memory\n+pids\n+cpu\n");
        }
    }

    #[test]
    fn v2_environment_gets_memory_swap_pids_and_cpu_limits() {
        let (root, parent) = fake_v2();
        parent.prepare().unwrap();
        // The kernel creates memory.swap.max with the directory; the fake has to.
        let env_dir = root.path().join("nimbus/e1");
        fs::create_dir(&env_dir).unwrap();
        fs::write(env_dir.join("memory.swap.max"), "max").unwrap();
        fs::write(env_dir.join("cgroup.kill"), "").unwrap();
        let limits = CgroupLimits {
            memory_bytes: 128 << 20,
            pids_max: 1024,
            cpu_millis: Some(1769 * 1000 / 1769 / 2),
            cpu_quota: true,
        };
        let cg = parent.create("e1", &limits).unwrap();
        let read = |f: &str| fs::read_to_string(env_dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (128u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "1024");
        assert_eq!(read("cpu.max"), "10000 20000");
        assert_eq!(read("cpu.weight"), "50");
        cg.apply_limits(&CgroupLimits {
            cpu_quota: false,
            ..limits
        })
        .unwrap();
        assert_eq!(read("cpu.max"), "max 20000", "weight only");
        assert_eq!(read("cpu.weight"), "50");
        assert_eq!(cg.procs_files(), vec![env_dir.join("cgroup.procs")]);

        fs::write(env_dir.join("memory.peak"), "4096\n").unwrap();
        fs::write(
            env_dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.peak_memory_bytes(), Some(4096));
        assert_eq!(cg.oom_kills(), Some(1));

        cg.kill_all();
        assert_eq!(read("cgroup.kill"), "1");
        cg.remove().unwrap();
        assert!(!env_dir.exists());
    }

    #[test]
    fn cpu_bandwidth_is_written_only_to_set_or_clear_a_quota() {
        let (root, parent) = fake_v2();
        parent.prepare().unwrap();
        let env_dir = root.path().join("nimbus/fresh");
        let share = CgroupLimits {
            memory_bytes: 128 << 20,
            pids_max: 1024,
            cpu_millis: Some(72),
            cpu_quota: false,
        };
        let cg = parent.create("fresh", &share).unwrap();
        assert!(
            !env_dir.join("cpu.max").exists(),
            "a new cgroup has no quota to clear"
        );
        assert_eq!(fs::read_to_string(env_dir.join("cpu.weight")).unwrap(), "7");
        cg.apply_limits(&share).unwrap();
        assert!(!env_dir.join("cpu.max").exists());
        cg.apply_limits(&CgroupLimits {
            cpu_quota: true,
            ..share
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(env_dir.join("cpu.max")).unwrap(),
            "1440 20000"
        );
        cg.apply_limits(&share).unwrap();
        assert_eq!(
            fs::read_to_string(env_dir.join("cpu.max")).unwrap(),
            "max 20000",
            "a quota once set is cleared"
        );
    }

    #[test]
    fn v2_sweep_removes_leftover_environments() {
        let (root, parent) = fake_v2();
        parent.prepare().unwrap();
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            pids_max: 10,
            cpu_millis: None,
            cpu_quota: false,
        };
        parent.create("a", &limits).unwrap();
        parent.create("b", &limits).unwrap();
        assert_eq!(parent.sweep(), 2);
        assert!(!root.path().join("nimbus/a").exists());
        assert!(root.path().join("nimbus").exists());
    }

    #[test]
    fn environment_names_cannot_escape_the_parent() {
        let (_root, parent) = fake_v2();
        let limits = CgroupLimits {
            memory_bytes: 1 << 30,
            pids_max: 10,
            cpu_millis: None,
            cpu_quota: false,
        };
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(parent.create(bad, &limits).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn small_cpu_shares_keep_the_kernel_minimum_quota() {
        assert_eq!(cpu_quota_us(1), 1000);
        assert_eq!(cpu_quota_us(72), 1440, "128 MB keeps its exact share");
        assert_eq!(cpu_quota_us(1000), 20_000);
        assert_eq!(cpu_quota_us(2000), 40_000);
    }
}
