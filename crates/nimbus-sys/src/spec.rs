//! What the server tells the jailer: the [`JailSpec`], and its byte encoding on the control
//! socket.
//!
//! The server decides everything (which host paths are visible, which uid runs the code,
//! which cgroup the environment joins); the jailer only carries it out, so a reviewer reads
//! the policy in one place (`nimbus::sandbox::jail`) and the mechanism here. The encoding is a
//! plain length-prefixed sequence rather than JSON so this crate needs no serde, and the
//! decoder never panics on malformed input: it is parsed by a root process.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// One read-only bind mount of a host path into the jail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the jail.
    pub target: String,
    /// If the host path is a symbolic link, recreate the link inside instead of binding its
    /// target (Debian's merged-/usr `/bin -> usr/bin`, `/lib -> usr/lib`).
    pub mirror_symlink: bool,
    /// Silently skip the bind when the host path does not exist.
    pub optional: bool,
}

/// Everything the jailer needs to build and start one environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JailSpec {
    /// Program and arguments as seen inside the jail.
    pub argv: Vec<String>,
    /// The complete environment of the runtime, `AWS_LAMBDA_RUNTIME_API` included.
    pub env: Vec<(String, String)>,
    /// Working directory inside the jail.
    pub cwd: String,
    /// Host name inside the UTS namespace.
    pub hostname: String,
    /// An existing, empty host directory; in the jail's private mount namespace the new root
    /// tmpfs is mounted on it before `pivot_root`. The host never sees that mount.
    pub root_mount_point: PathBuf,
    /// Read-only binds, applied in order (parents before children).
    pub binds: Vec<Bind>,
    /// Files of our own `/etc`: name relative to `/etc`, content.
    pub etc_files: Vec<(String, Vec<u8>)>,
    /// Size cap of the `/tmp` tmpfs, MiB.
    pub tmp_mb: u32,
    /// Size cap of the `/dev/shm` tmpfs, MiB.
    pub shm_mb: u32,
    /// Unprivileged uid and gid the runtime runs as (inside the jail's user namespace, if any).
    pub uid: u32,
    pub gid: u32,
    /// Rootless mode: create a user namespace mapping `uid`/`gid` to the jailer's own ids.
    pub user_namespace: bool,
    /// `cgroup.procs` files (one per hierarchy) the environment's init joins before it
    /// unshares its cgroup namespace. Empty: no resource limits (only when the server allowed
    /// it explicitly).
    pub cgroup_procs: Vec<PathBuf>,
    /// Port of the Runtime API listener on the jail's own 127.0.0.1.
    pub runtime_api_port: u16,
    /// Install the seccomp filter (always on in production; off only in a test that measures
    /// its cost).
    pub seccomp: bool,
    /// RLIMIT_NOFILE of the runtime (Lambda: 1024).
    pub max_open_files: u64,
    /// The server attaches outbound networking to the namespace after the init was created
    /// and says "go" on the control socket; the jailer waits for it before starting the init,
    /// so the runtime never runs without its network.
    pub wait_for_network: bool,
    /// Build the root and report ready, but start no runtime: a zygote (a pre-initialised
    /// interpreter outside the jail) forks one into the jail's namespaces. The init then only
    /// reaps orphans until the server kills it (the runtime's end comes from the zygote).
    pub zygote: bool,
    /// Outbound networking is attached on first use: the runtime starts under the egress
    /// trigger ([`crate::seccomp::SeccompProgram::egress_trigger`]), whose listener the init
    /// hands the server with its ready report. (With `zygote`, the zygote's fork does this.)
    pub egress_on_demand: bool,
}

/// A malformed spec message (never expected from our own server: a bug or a foreign writer).
#[derive(Debug, thiserror::Error)]
#[error("malformed jail spec: {0}")]
pub struct SpecError(&'static str);

const MAGIC: &[u8; 8] = b"NIMBUSJ1";

impl JailSpec {
    /// Encodes the spec for the control socket.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(4096));
        w.0.extend_from_slice(MAGIC);
        w.list(&self.argv, |w, a| w.bytes(a.as_bytes()));
        w.list(&self.env, |w, (k, v)| {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        });
        w.bytes(self.cwd.as_bytes());
        w.bytes(self.hostname.as_bytes());
        w.bytes(self.root_mount_point.as_os_str().as_bytes());
        w.list(&self.binds, |w, b| {
            w.bytes(b.source.as_os_str().as_bytes());
            w.bytes(b.target.as_bytes());
            w.u64(u64::from(b.mirror_symlink));
            w.u64(u64::from(b.optional));
        });
        w.list(&self.etc_files, |w, (name, content)| {
            w.bytes(name.as_bytes());
            w.bytes(content);
        });
        w.u64(self.tmp_mb.into());
        w.u64(self.shm_mb.into());
        w.u64(self.uid.into());
        w.u64(self.gid.into());
        w.u64(u64::from(self.user_namespace));
        w.list(&self.cgroup_procs, |w, p| w.bytes(p.as_os_str().as_bytes()));
        w.u64(self.runtime_api_port.into());
        w.u64(u64::from(self.seccomp));
        w.u64(self.max_open_files);
        w.u64(u64::from(self.wait_for_network));
        w.u64(u64::from(self.zygote));
        w.u64(u64::from(self.egress_on_demand));
        w.0
    }

    /// Decodes a spec; rejects anything malformed or with trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<JailSpec, SpecError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(SpecError("bad magic"))?;
        let mut r = Reader(rest);
        let argv = r.list(|r| r.string())?;
        let env = r.list(|r| Ok((r.string()?, r.string()?)))?;
        let cwd = r.string()?;
        let hostname = r.string()?;
        let root_mount_point = r.path()?;
        let binds = r.list(|r| {
            Ok(Bind {
                source: r.path()?,
                target: r.string()?,
                mirror_symlink: r.bool()?,
                optional: r.bool()?,
            })
        })?;
        let etc_files = r.list(|r| Ok((r.string()?, r.bytes()?.to_vec())))?;
        let spec = JailSpec {
            argv,
            env,
            cwd,
            hostname,
            root_mount_point,
            binds,
            etc_files,
            tmp_mb: r.u32()?,
            shm_mb: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            user_namespace: r.bool()?,
            cgroup_procs: r.list(|r| r.path())?,
            runtime_api_port: u16::try_from(r.u64()?).map_err(|_| SpecError("port"))?,
            seccomp: r.bool()?,
            max_open_files: r.u64()?,
            wait_for_network: r.bool()?,
            zygote: r.bool()?,
            egress_on_demand: r.bool()?,
        };
        if !r.0.is_empty() {
            return Err(SpecError("trailing bytes"));
        }
        Ok(spec)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.u64(items.len() as u64);
        for item in items {
            each(self, item);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u64(&mut self) -> Result<u64, SpecError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<8>()
            .ok_or(SpecError("truncated"))?;
        self.0 = rest;
        Ok(u64::from_le_bytes(*head))
    }
    fn u32(&mut self) -> Result<u32, SpecError> {
        u32::try_from(self.u64()?).map_err(|_| SpecError("number out of range"))
    }
    fn bool(&mut self) -> Result<bool, SpecError> {
        match self.u64()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SpecError("bad boolean")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], SpecError> {
        let len = usize::try_from(self.u64()?).map_err(|_| SpecError("length"))?;
        if len > self.0.len() {
            return Err(SpecError("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn string(&mut self) -> Result<String, SpecError> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(SpecError("NUL in string"));
        }
        String::from_utf8(b.to_vec()).map_err(|_| SpecError("not UTF-8"))
    }
    fn path(&mut self) -> Result<PathBuf, SpecError> {
        let b = self.bytes()?;
        if b.contains(&0) {
            return Err(SpecError("NUL in path"));
        }
        Ok(PathBuf::from(OsString::from_vec(b.to_vec())))
    }
    fn list<T>(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<T, SpecError>,
    ) -> Result<Vec<T>, SpecError> {
        let n = self.u64()?;
        // Every element takes at least 8 bytes: refuse counts the input cannot hold, so a
        // hostile length cannot make us allocate.
        if n > (self.0.len() / 8) as u64 {
            return Err(SpecError("list longer than message"));
        }
        (0..n).map(|_| each(self)).collect()
    }
}

/// A representative spec for unit tests.
#[cfg(test)]
pub(crate) fn sample_spec() -> JailSpec {
    JailSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo hi\nthere".into()],
        env: vec![("A".into(), "1".into()), ("EMPTY".into(), String::new())],
        cwd: "/var/task".into(),
        hostname: "localhost".into(),
        root_mount_point: "/run/nimbus/jail-root".into(),
        binds: vec![Bind {
            source: "/usr".into(),
            target: "/usr".into(),
            mirror_symlink: true,
            optional: false,
        }],
        etc_files: vec![("passwd".into(), b"root:x:0:0::/:/bin/false\n".to_vec())],
        tmp_mb: 512,
        shm_mb: 64,
        uid: 993,
        gid: 990,
        user_namespace: true,
        cgroup_procs: vec!["/sys/fs/cgroup/memory/nimbus/x/cgroup.procs".into()],
        runtime_api_port: 9001,
        seccomp: true,
        max_open_files: 1024,
        wait_for_network: true,
        zygote: true,
        egress_on_demand: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JailSpec {
        sample_spec()
    }

    #[test]
    fn spec_survives_encoding_round_trip() {
        let spec = sample();
        assert_eq!(JailSpec::decode(&spec.encode()).unwrap(), spec);
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                JailSpec::decode(&bytes[..len]).is_err(),
                "prefix of {len} bytes"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_huge_counts_are_rejected() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert!(JailSpec::decode(&bytes).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(JailSpec::decode(&huge).is_err());
    }

    #[test]
    fn nul_bytes_in_strings_are_rejected() {
        let mut spec = sample();
        spec.argv[0] = "/bin/sh\0x".into();
        assert!(JailSpec::decode(&spec.encode()).is_err());
    }
}
