//! Builds the jail's root filesystem inside its private mount namespace and pivots into it.
//!
//! The root is a small tmpfs holding only mount points, symlinks and our own `/etc` files;
//! everything else is a read-only, nosuid, nodev bind of a host path the server listed
//! explicitly. `/tmp` and `/dev/shm` are size-capped tmpfs, `/proc` is private to the PID
//! namespace, `/dev` has the six harmless devices. The tmpfs root is remounted read-only
//! before `pivot_root`, and the old root is detached, so nothing else of the host is
//! reachable, not even through `/proc/self/root` or `..`.
//!
//! Runs in the jail's init (single-threaded, root in its namespaces) before any untrusted code.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::spec::{Bind, JailSpec};

/// A failed step: what, and the OS error.
pub(crate) type StepError = (String, io::Error);

fn step<T>(what: impl FnOnce() -> String, r: io::Result<T>) -> Result<T, StepError> {
    r.map_err(|e| (what(), e))
}

fn rx<T>(r: rustix::io::Result<T>) -> io::Result<T> {
    r.map_err(io::Error::from)
}

/// Devices bound from the host's `/dev` (read/write through their own semantics only).
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Files of `/proc` that leak other tenants' or the kernel's state to any reader; covered
/// with `/dev/null`. (`/proc/sys` is root-owned and the runtime has no capabilities.)
const PROC_MASKED: &[&str] = &["kcore", "keys", "key-users", "timer_list", "sysrq-trigger"];

/// Joins an absolute in-jail path to the new root, refusing `..` so a spec cannot aim a
/// mount outside it.
fn inside(root: &Path, target: &str) -> io::Result<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(target).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("jail path {target:?} must be absolute without '..'"),
                ));
            }
        }
    }
    Ok(out)
}

fn mkdir_p(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}

fn create_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    if let Some(parent) = path.parent() {
        mkdir_p(parent)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
}

/// The flags a read-only bind must keep from its source mount: in a user namespace the
/// kernel refuses a remount that would clear nosuid/nodev/noexec/atime flags it locked.
fn locked_flags(source: &Path) -> MountFlags {
    let Ok(st) = rustix::fs::statvfs(source) else {
        return MountFlags::empty();
    };
    let f = st.f_flag;
    let mut flags = MountFlags::empty();
    use rustix::fs::StatVfsMountFlags as S;
    for (s, m) in [
        (S::NOEXEC, MountFlags::NOEXEC),
        (S::NOATIME, MountFlags::NOATIME),
        (S::NODIRATIME, MountFlags::NODIRATIME),
        (S::RELATIME, MountFlags::RELATIME),
    ] {
        if f.contains(s) {
            flags |= m;
        }
    }
    flags
}

fn bind_read_only(source: &Path, target: &Path) -> io::Result<()> {
    rx(rustix::mount::mount_bind(source, target))?;
    let flags = MountFlags::BIND
        | MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | locked_flags(source);
    rx(rustix::mount::mount_remount(target, flags, ""))
}

/// Applies one bind of the spec. Returns false when it was skipped (optional and missing).
fn apply_bind(root: &Path, bind: &Bind) -> Result<bool, StepError> {
    let what = || format!("bind {} to {}", bind.source.display(), bind.target);
    let target = step(what, inside(root, &bind.target))?;
    let meta = match fs::symlink_metadata(&bind.source) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && bind.optional => return Ok(false),
        other => step(what, other)?,
    };
    if meta.file_type().is_symlink() && bind.mirror_symlink {
        let link = step(what, fs::read_link(&bind.source))?;
        if let Some(parent) = target.parent() {
            step(what, mkdir_p(parent))?;
        }
        step(what, std::os::unix::fs::symlink(link, &target))?;
        return Ok(true);
    }
    if fs::metadata(&bind.source).is_ok_and(|m| m.is_dir()) {
        step(what, mkdir_p(&target))?;
    } else {
        step(what, create_file(&target, 0o644).map(drop))?;
    }
    step(what, bind_read_only(&bind.source, &target))?;
    Ok(true)
}

/// Binds that are already visible through an earlier identity bind of a parent directory
/// (a host path under `/usr` when `/usr` itself is bound) are skipped: same view, one mount
/// fewer.
fn covered_by_earlier(binds: &[Bind], i: usize) -> bool {
    let b = &binds[i];
    if b.source != Path::new(&b.target) {
        return false;
    }
    binds[..i].iter().any(|earlier| {
        earlier.source == Path::new(&earlier.target)
            && !earlier.mirror_symlink_is_link()
            && b.source.starts_with(&earlier.source)
    })
}

impl Bind {
    fn mirror_symlink_is_link(&self) -> bool {
        self.mirror_symlink
            && fs::symlink_metadata(&self.source).is_ok_and(|m| m.file_type().is_symlink())
    }
}

fn mount_tmpfs(target: &Path, flags: MountFlags, data: &str) -> io::Result<()> {
    let data =
        std::ffi::CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    rx(rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        flags,
        Some(data.as_c_str()),
    ))
}

/// Builds the root described by `spec` on `spec.root_mount_point` and pivots into it.
/// Afterwards the process's root and working directory are the jail's `/`.
pub(crate) fn build_and_enter(spec: &JailSpec) -> Result<(), StepError> {
    let root = spec.root_mount_point.as_path();
    // Nothing we mount may propagate back to the host, and nothing of the host's later
    // mounts into the jail.
    step(
        || "make the mount tree private".into(),
        rx(rustix::mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )),
    )?;
    step(
        || format!("mount the root tmpfs on {}", root.display()),
        mount_tmpfs(
            root,
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=0755,size=1m,nr_inodes=4096",
        ),
    )?;
    for dir in [
        "proc",
        "dev",
        "tmp",
        "etc",
        "opt",
        "var/task",
        "var/runtime",
    ] {
        step(|| format!("create /{dir}"), mkdir_p(&root.join(dir)))?;
    }
    for i in 0..spec.binds.len() {
        if !covered_by_earlier(&spec.binds, i) {
            apply_bind(root, &spec.binds[i])?;
        }
    }
    for (name, content) in &spec.etc_files {
        let what = || format!("write /etc/{name}");
        let path = step(what, inside(root, &format!("/etc/{name}")))?;
        let mut f = step(what, create_file(&path, 0o644))?;
        step(what, io::Write::write_all(&mut f, content))?;
    }
    step(
        || "mount /tmp".into(),
        mount_tmpfs(
            &root.join("tmp"),
            MountFlags::NOSUID | MountFlags::NODEV,
            &format!("mode=1777,size={}m", spec.tmp_mb.max(1)),
        ),
    )?;
    mount_proc(root)?;
    mount_dev(root, spec.shm_mb)?;
    step(
        || "make the root read-only".into(),
        rx(rustix::mount::mount_remount(
            root,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
            "",
        )),
    )?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
    // the new root (the runc/LXC idiom, no put_old directory needed).
    step(
        || "chdir to the new root".into(),
        rx(rustix::process::chdir(root)),
    )?;
    step(
        || "pivot_root".into(),
        rx(rustix::process::pivot_root(".", ".")),
    )?;
    step(
        || "detach the old root".into(),
        rx(rustix::mount::unmount(".", UnmountFlags::DETACH)),
    )?;
    step(|| "chdir /".into(), rx(rustix::process::chdir("/")))?;
    Ok(())
}

fn mount_proc(root: &Path) -> Result<(), StepError> {
    let proc = root.join("proc");
    step(
        || "mount /proc".into(),
        rx(rustix::mount::mount(
            "proc",
            &proc,
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )),
    )?;
    for name in PROC_MASKED {
        let target = proc.join(name);
        if target.exists() {
            step(
                || format!("mask /proc/{name}"),
                rx(rustix::mount::mount_bind("/dev/null", &target)),
            )?;
        }
    }
    Ok(())
}

fn mount_dev(root: &Path, shm_mb: u32) -> Result<(), StepError> {
    let dev = root.join("dev");
    step(
        || "mount /dev".into(),
        mount_tmpfs(
            &dev,
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "mode=0755,size=64k,nr_inodes=64",
        ),
    )?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        step(
            || format!("create /dev/{name}"),
            create_file(&target, 0o666).map(drop),
        )?;
        // A bind of the host's node works in rootless mode too, where mknod is not allowed.
        step(
            || format!("bind /dev/{name}"),
            rx(rustix::mount::mount_bind(&host, &target)),
        )?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        step(
            || format!("link /dev/{name}"),
            std::os::unix::fs::symlink(to, dev.join(name)),
        )?;
    }
    let shm = dev.join("shm");
    step(|| "create /dev/shm".into(), mkdir_p(&shm))?;
    step(
        || "mount /dev/shm".into(),
        mount_tmpfs(
            &shm,
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            &format!("mode=1777,size={}m", shm_mb.max(1)),
        ),
    )?;
    step(
        || "make /dev read-only".into(),
        rx(rustix::mount::mount_remount(
            &dev,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NOEXEC,
            "",
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_paths_cannot_climb_out_of_the_new_root() {
        let root = Path::new("/r");
        assert_eq!(inside(root, "/var/task").unwrap(), Path::new("/r/var/task"));
        assert_eq!(inside(root, "etc/x").unwrap(), Path::new("/r/etc/x"));
        assert!(inside(root, "/var/../../etc/shadow").is_err());
        assert!(inside(root, "../x").is_err());
    }

    fn bind(source: &str, target: &str) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            mirror_symlink: false,
            optional: false,
        }
    }

    #[test]
    fn host_paths_under_an_identity_bind_are_not_mounted_twice() {
        let binds = vec![
            bind("/usr", "/usr"),
            bind("/usr/lib/python3.11", "/usr/lib/python3.11"),
            bind("/srv/code", "/var/task"),
            bind("/usr/share/x", "/opt/x"),
        ];
        assert!(!covered_by_earlier(&binds, 0));
        assert!(covered_by_earlier(&binds, 1));
        assert!(!covered_by_earlier(&binds, 2));
        assert!(!covered_by_earlier(&binds, 3));
    }
}
