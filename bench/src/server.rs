//! The processes the harness starts: `nimbus serve` (on a free loopback port, with a temporary
//! data directory) and the echo floor server. Each is owned by a value whose `Drop` stops it,
//! so an error, a panic or Ctrl-C (which drops the running section) all clean up.
//!
//! Stopping is: SIGTERM (the server retires its environments), up to 5 s of grace, SIGKILL,
//! then, after 3 more seconds, SIGKILL to any environment process that outlived its server. Children stay in the
//! harness's process group, so a Ctrl-C at the terminal or a `kill -- -PGID` reaches them too.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};

use crate::args::SandboxArg;
use crate::client::{ACCESS_KEY_ID, ACCOUNT_ID, Endpoint, SECRET_ACCESS_KEY};
use crate::procfs;

/// How long a server may take to print its address and answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long its environments get to exit after the server is gone.
const LEFTOVER_GRACE: Duration = Duration::from_secs(3);

/// A child process that is terminated when dropped.
struct Owned {
    child: Child,
    name: String,
    done: bool,
}

impl Owned {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// TERM, grace, KILL, and the leftovers of its tree. Idempotent.
    fn stop(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let snapshot = procfs::descendants(self.pid());
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = Pid::from_raw(self.pid() as i32)
        {
            let _ = kill_process(pid, Signal::TERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!(
                    "nimbus-bench: {} ignored SIGTERM for 5 s; killing it",
                    self.name
                );
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        // Environments notice their server's death on their own (the jail ties them to it);
        // give them a moment before calling them leftovers.
        let deadline = Instant::now() + LEFTOVER_GRACE;
        while Instant::now() < deadline && snapshot.iter().any(procfs::still_running) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let killed = procfs::kill_leftovers(&snapshot);
        if !killed.is_empty() {
            eprintln!(
                "nimbus-bench: killed {} process(es) that outlived {}: {}",
                killed.len(),
                self.name,
                killed.join("; ")
            );
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    /// Names the server in messages (`main`, `reap`, `density`).
    pub(crate) label: &'static str,
    pub(crate) sandbox: SandboxArg,
    /// `--keep-alive-secs`, when not the server's default.
    pub(crate) keep_alive_secs: Option<u64>,
}

/// `--cpu-limit` for every server this run starts (`None`: the server's default). Set once
/// by `main` from the command line, before any server starts.
pub(crate) static CPU_LIMIT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
/// `--python-zygote` for every server (`None`: the server's default).
pub(crate) static PYTHON_ZYGOTE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// `--idle-poll` for every server (`None`: the server's default, auto).
pub(crate) static IDLE_POLL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
/// Whether the echo floor polls idle CPUs: whenever the servers do.
pub(crate) static FLOOR_IDLE_POLL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether a server given `--idle-poll mode` (`None`: auto) polls idle CPUs while it serves,
/// by the server's own rule (decision 0011).
pub(crate) fn idle_poll_effective(mode: Option<&str>) -> bool {
    use nimbus::config::IdlePollMode;
    let mode = mode.map_or(Some(IdlePollMode::Auto), IdlePollMode::parse);
    mode.is_some_and(nimbus::invoke::idle_poll::wanted)
        && nimbus_sys::cpuidle::CpuLatencyRequest::open().is_ok()
}

/// A running `nimbus serve`.
pub(crate) struct NimbusServer {
    // Field order matters: the process stops before its cgroups and its data directory are
    // removed.
    process: Owned,
    _cgroups: CgroupParentCleanup,
    endpoint: Endpoint,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Removes a stopped server's cgroup parent if it is left (a server killed after its grace,
/// or one that stopped while parking a jail, cannot): the data directory that names it goes
/// next, so no later server would sweep it, and leftover cgroups slow every cgroup operation
/// of the runs that follow (docs/benchmarks.md, "How stable these are").
struct CgroupParentCleanup(String);

impl Drop for CgroupParentCleanup {
    fn drop(&mut self) {
        if let Ok(layout) = nimbus_sys::cgroup::CgroupLayout::detect() {
            let parent = nimbus_sys::cgroup::CgroupParent::new(layout, &self.0);
            parent.sweep();
            let _ = parent.remove();
        }
    }
}

impl NimbusServer {
    pub(crate) async fn start(bin: &Path, opts: &ServerOptions) -> anyhow::Result<NimbusServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nimbus-bench-{}-", opts.label))
            .tempdir()
            .context("cannot create a temporary directory")?;
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--access-key")
            .arg(format!("{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}:{ACCOUNT_ID}"))
            .args(["--sandbox", opts.sandbox.as_str()]);
        if let Some(k) = opts.keep_alive_secs {
            cmd.args(["--keep-alive-secs", &k.to_string()]);
        }
        if let Some(limit) = CPU_LIMIT.get().and_then(Option::as_deref) {
            cmd.args(["--cpu-limit", limit]);
        }
        if let Some(zygote) = PYTHON_ZYGOTE.get().and_then(Option::as_deref) {
            cmd.args(["--python-zygote", zygote]);
        }
        if let Some(mode) = IDLE_POLL.get().and_then(Option::as_deref) {
            cmd.args(["--idle-poll", mode]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take();
        let process = Owned {
            child,
            name: format!("nimbus serve ({})", opts.label),
            done: false,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log_file = std::fs::File::create(&log)?;
        if let Some(stderr) = stderr {
            std::thread::spawn(move || copy_log(stderr, log_file, tx));
        }
        let announced = tokio::time::timeout(START_TIMEOUT, rx).await;
        let addr = match announced {
            Ok(Ok(addr)) => addr,
            _ => {
                drop(process);
                bail!(
                    "nimbus serve ({}, --sandbox {}) did not start:\n{}",
                    opts.label,
                    opts.sandbox.as_str(),
                    tail(&log, 15)
                );
            }
        };
        let server = NimbusServer {
            process,
            _cgroups: CgroupParentCleanup(nimbus::sandbox::jail::cgroup_parent_for(&data)),
            endpoint: Endpoint::new(addr),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while let Err(e) = server.endpoint.health().await {
            if Instant::now() > deadline {
                bail!(
                    "nimbus serve ({}) is not healthy: {e}\n{}",
                    opts.label,
                    server.log_tail(15)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Processes below the server now (environments, and whatever helpers its sandbox keeps:
    /// the jail parks a few ready jails and runs slirp4netns next to networked ones).
    pub(crate) fn processes(&self) -> usize {
        procfs::descendants(self.pid()).len()
    }

    /// After DeleteFunction: waits until the server is back to at most `baseline` processes,
    /// or its process count has stopped changing for a second (a sandbox refilling a pool of
    /// parked environments settles above its earlier count), so the next measurement does
    /// not share the CPU with hundreds of exits. Errs, naming what is left, after `cap`.
    pub(crate) async fn settle(&self, baseline: usize, cap: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let (mut last, mut since) = (usize::MAX, Instant::now());
        loop {
            let now = self.processes();
            if now <= baseline || (now == last && since.elapsed() >= Duration::from_secs(1)) {
                return Ok(());
            }
            if now != last {
                (last, since) = (now, Instant::now());
            }
            if started.elapsed() > cap {
                let left: Vec<String> = procfs::descendants(self.pid())
                    .iter()
                    .take(5)
                    .map(|p| format!("{} {}", p.pid, procfs::cmdline(p.pid)))
                    .collect();
                bail!(
                    "{now} processes still below the server {cap:?} after DeleteFunction (had {baseline} before), e.g. {}",
                    left.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the server logged, for error messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// Copies the server's stderr to its log file; sends the address it announces.
fn copy_log(
    stderr: impl std::io::Read,
    mut file: std::fs::File,
    tx: tokio::sync::oneshot::Sender<SocketAddr>,
) {
    let mut tx = Some(tx);
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(file, "{line}");
        if let Some(addr) = announced_addr(&line)
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(addr);
        }
    }
}

/// `Nimbus listening on http://127.0.0.1:4242 (region …` → the address.
pub(crate) fn announced_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The floor: a bare hyper echo server, this binary's hidden `echo-server` command.
pub(crate) struct EchoServer {
    process: Owned,
    pub(crate) addr: SocketAddr,
}

impl EchoServer {
    pub(crate) async fn start() -> anyhow::Result<EchoServer> {
        let exe = std::env::current_exe().context("cannot find the harness's own binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("echo-server");
        if FLOOR_IDLE_POLL.get().copied().unwrap_or(false) {
            cmd.arg("--idle-poll");
        }
        let mut child = cmd
            // Its stdin is how it notices the harness is gone (EOF), even after SIGKILL.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the echo server")?;
        let stdout = child.stdout.take();
        let process = Owned {
            child,
            name: "echo server".into(),
            done: false,
        };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            line
        });
        let line = tokio::time::timeout(START_TIMEOUT, line)
            .await
            .context("the echo server did not start")??;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("the echo server said {line:?}"))?;
        Ok(EchoServer { process, addr })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_address_is_parsed() {
        let line = "Nimbus listening on http://127.0.0.1:40123 (region us-east-1, account 123456789012, sandbox process, data /tmp/x)";
        assert_eq!(announced_addr(line), Some(([127, 0, 0, 1], 40123).into()));
        assert_eq!(announced_addr("WARN sandbox 'process': no isolation"), None);
    }
}
