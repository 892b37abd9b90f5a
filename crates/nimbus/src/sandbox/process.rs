//! The `process` backend: each environment is a plain process group on the host.
//!
//! DEVELOPMENT ONLY. It gives no isolation at all: the function runs as the server's user, sees
//! the host's whole filesystem and network and can signal other processes. What it does
//! guarantee: the server's own environment (and so its secrets) is never passed on, the whole
//! process group is killed with the environment, and `/var/task` paths in variables are
//! rewritten to the real code directory, so functions behave as they would in the jail.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use super::{EnvProcess, EnvSpec, Sandbox, SandboxError, StartedEnv, describe_exit};

/// Plain process groups, no isolation.
#[derive(Debug, Default)]
pub struct ProcessSandbox;

struct ProcessGroup {
    pid: u32,
    /// `/proc/PID/status`, opened on the first read and re-read with `pread` at offset 0.
    status: std::sync::OnceLock<Option<std::fs::File>>,
}

impl EnvProcess for ProcessGroup {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn kill(&self) {
        // The group id equals the leader's pid (process_group(0) below). ESRCH after the group
        // is gone is expected and harmless.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    fn max_memory_bytes(&self) -> Option<u64> {
        // VmHWM: the leader's peak resident set. Children are not counted; the jail's cgroup
        // measures the whole environment.
        use std::os::unix::fs::FileExt;
        let file = self
            .status
            .get_or_init(|| std::fs::File::open(format!("/proc/{}/status", self.pid)).ok())
            .as_ref()?;
        let mut buf = [0u8; 4096];
        let n = file.read_at(&mut buf, 0).ok()?;
        let status = std::str::from_utf8(&buf[..n]).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

/// Rewrites the in-environment paths (`/var/task`, `/var/runtime`, `/opt`) to host paths.
fn host_path(spec: &EnvSpec, value: &str) -> String {
    let code = spec.code_dir.to_string_lossy();
    let mut out = value.replace("/var/task", &code);
    if let Some(rt) = &spec.runtime_dir {
        out = out.replace("/var/runtime", &rt.to_string_lossy());
    }
    if let Some(opt) = &spec.opt_dir {
        out = out.replace("/opt/", &format!("{}/", opt.to_string_lossy()));
    }
    out
}

impl Sandbox for ProcessSandbox {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(&self, spec: &EnvSpec) -> Result<StartedEnv, SandboxError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| SandboxError::Setup {
            what: "bind the Runtime API listener",
            source,
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SandboxError::Setup {
                what: "read the Runtime API address",
                source,
            })?;
        let (reader, writer) = std::io::pipe().map_err(|source| SandboxError::Setup {
            what: "create the log pipe",
            source,
        })?;
        let stderr = writer.try_clone().map_err(|source| SandboxError::Setup {
            what: "duplicate the log pipe",
            source,
        })?;
        let Some((program, args)) = spec.argv.split_first() else {
            return Err(SandboxError::Spawn(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty command line",
            )));
        };
        let mut cmd = Command::new(host_path(spec, program));
        cmd.args(args.iter().map(|a| host_path(spec, a)))
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, host_path(spec, v))))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .current_dir(host_path(spec, &spec.cwd))
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(SandboxError::Spawn)?;
        let pid = child.id().unwrap_or(0);
        let exited = Box::pin(async move {
            match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("exit status unknown: {e}"),
            }
        });
        Ok(StartedEnv {
            listener,
            output: reader.into(),
            process: Arc::new(ProcessGroup {
                pid,
                status: std::sync::OnceLock::new(),
            }),
            exited,
        })
    }
}
