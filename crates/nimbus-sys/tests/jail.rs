//! End-to-end tests of the jail: real jailed processes, real cgroups, real namespaces.
//!
//! `harness = false`: this binary is also the jailer (`<this binary> __jail`), dispatched at
//! the top of `main` before any thread exists, as `nimbus __jail` is in production. Needs root
//! (the rootless test drops to `nobody` itself); skipped with a message otherwise.
//!
//! Run one test: `cargo test -p nimbus-sys --test jail -- <substring>`.
//! Measure cold-start overhead: `cargo test --release -p nimbus-sys --test jail -- --bench`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nimbus_sys::cgroup::{CgroupLayout, CgroupLimits, CgroupParent, EnvCgroup};
use nimbus_sys::egress::EgressConfig;
use nimbus_sys::launch::{self, LaunchError, StartedJail};
use nimbus_sys::seccomp_notify::Listener;
use nimbus_sys::spec::{Bind, JailSpec};

const SANDBOX_UID: u32 = 993;
const SANDBOX_GID: u32 = 990;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("__jail") {
        nimbus_sys::jailer::jailer_main();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--") || a == "--bench")
        .collect();
    if !rustix::process::geteuid().is_root() {
        println!("jail tests need root; skipped");
        println!("0 passed, 0 failed");
        return;
    }
    let fixture = Fixture::get();
    if args.iter().any(|a| a == "--bench") {
        bench(fixture);
        return;
    }
    let filter: Vec<&String> = args.iter().filter(|a| *a != "--bench").collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in TESTS {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| test(fixture));
        let ms = started.elapsed().as_millis();
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({ms} ms)");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED ({ms} ms)");
            }
        }
    }
    fixture.cleanup();
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

type Test = fn(&Fixture);

const TESTS: &[(&str, Test)] = &[
    (
        "runs_the_command_and_reports_its_exit_code",
        runs_the_command_and_reports_its_exit_code,
    ),
    (
        "death_by_signal_is_reported_as_the_signal",
        death_by_signal_is_reported_as_the_signal,
    ),
    ("sees_only_its_own_processes", sees_only_its_own_processes),
    (
        "host_secrets_and_root_are_invisible",
        host_secrets_and_root_are_invisible,
    ),
    ("var_task_is_read_only", var_task_is_read_only),
    ("writes_outside_tmp_fail", writes_outside_tmp_fail),
    (
        "tmp_is_capped_at_ephemeral_size",
        tmp_is_capped_at_ephemeral_size,
    ),
    (
        "runs_unprivileged_without_capabilities_under_seccomp",
        runs_unprivileged_without_capabilities_under_seccomp,
    ),
    (
        "mount_ptrace_unshare_and_modules_fail_with_eperm",
        mount_ptrace_unshare_and_modules_fail_with_eperm,
    ),
    (
        "proc_self_root_and_symlinks_do_not_escape",
        proc_self_root_and_symlinks_do_not_escape,
    ),
    (
        "reaches_its_runtime_api_listener",
        reaches_its_runtime_api_listener,
    ),
    ("host_loopback_is_unreachable", host_loopback_is_unreachable),
    (
        "memory_limit_kills_with_signal_killed",
        memory_limit_kills_with_signal_killed,
    ),
    (
        "fork_bomb_is_contained_by_pids_limit",
        fork_bomb_is_contained_by_pids_limit,
    ),
    (
        "kill_and_cleanup_leave_no_process_or_cgroup",
        kill_and_cleanup_leave_no_process_or_cgroup,
    ),
    (
        "server_crash_kills_the_environment",
        server_crash_kills_the_environment,
    ),
    (
        "sweep_removes_leftover_cgroups",
        sweep_removes_leftover_cgroups,
    ),
    (
        "python_and_node_run_under_the_filter",
        python_and_node_run_under_the_filter,
    ),
    (
        "missing_program_is_a_setup_error",
        missing_program_is_a_setup_error,
    ),
    (
        "rootless_mode_isolates_without_root",
        rootless_mode_isolates_without_root,
    ),
    (
        "peak_memory_is_read_from_the_cgroup",
        peak_memory_is_read_from_the_cgroup,
    ),
    (
        "egress_carries_traffic_out_of_the_namespace",
        egress_carries_traffic_out_of_the_namespace,
    ),
    (
        "egress_keeps_the_host_loopback_out_of_reach",
        egress_keeps_the_host_loopback_out_of_reach,
    ),
    (
        "the_egress_trigger_holds_sends_for_its_listener",
        the_egress_trigger_holds_sends_for_its_listener,
    ),
    (
        "parked_jail_runs_what_it_is_told_later",
        parked_jail_runs_what_it_is_told_later,
    ),
    (
        "dropping_a_parked_jail_leaves_nothing",
        dropping_a_parked_jail_leaves_nothing,
    ),
    (
        "limits_can_be_raised_and_lowered_on_a_live_cgroup",
        limits_can_be_raised_and_lowered_on_a_live_cgroup,
    ),
];

/// Shared state: a scratch directory (root mount point, code), the test cgroup parent.
struct Fixture {
    dir: PathBuf,
    code: PathBuf,
    root_mount_point: PathBuf,
    cgroups: CgroupParent,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

impl Fixture {
    fn get() -> &'static Fixture {
        FIXTURE.get_or_init(|| {
            // Not under /tmp of the host's tmpfs cleaner and readable by `nobody` for the
            // rootless test.
            let dir = std::env::temp_dir().join(format!("nimbus-jail-test-{}", std::process::id()));
            let code = dir.join("code");
            let root_mount_point = dir.join("root");
            std::fs::create_dir_all(&code).unwrap();
            std::fs::create_dir_all(&root_mount_point).unwrap();
            std::fs::write(code.join("handler.sh"), "echo handler\n").unwrap();
            std::os::unix::fs::symlink("/etc/shadow", code.join("shadow-link")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            for p in [&dir, &code, &root_mount_point] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            let layout = CgroupLayout::detect().expect("cgroups");
            let cgroups = CgroupParent::new(layout, &format!("nimbus-test-{}", std::process::id()));
            cgroups.prepare().expect("cgroup parent");
            Fixture {
                dir,
                code,
                root_mount_point,
                cgroups,
            }
        })
    }

    fn cleanup(&self) {
        self.cgroups.sweep();
        let _ = self.cgroups.remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn spec(&self, argv: &[&str]) -> JailSpec {
        let bind = |source: &str, target: &str, mirror: bool, optional: bool| Bind {
            source: source.into(),
            target: target.into(),
            mirror_symlink: mirror,
            optional,
        };
        JailSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
                ("AWS_LAMBDA_RUNTIME_API".into(), "127.0.0.1:9001".into()),
                ("LANG".into(), "C.UTF-8".into()),
            ],
            cwd: "/var/task".into(),
            hostname: "localhost".into(),
            root_mount_point: self.root_mount_point.clone(),
            binds: vec![
                bind("/usr", "/usr", true, false),
                bind("/bin", "/bin", true, true),
                bind("/sbin", "/sbin", true, true),
                bind("/lib", "/lib", true, true),
                bind("/lib64", "/lib64", true, true),
                bind("/etc/ld.so.cache", "/etc/ld.so.cache", false, true),
                bind("/etc/ssl/certs", "/etc/ssl/certs", false, true),
                bind("/etc/alternatives", "/etc/alternatives", false, true),
                Bind {
                    source: self.code.clone(),
                    target: "/var/task".into(),
                    mirror_symlink: false,
                    optional: false,
                },
            ],
            etc_files: vec![
                ("passwd".into(), b"root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:993:990::/tmp:/sbin/nologin\n".to_vec()),
                ("group".into(), b"root:x:0:\nsbx_user1051:x:990:\n".to_vec()),
                ("hosts".into(), b"127.0.0.1 localhost\n::1 localhost\n".to_vec()),
            ],
            tmp_mb: 16,
            shm_mb: 16,
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
            user_namespace: false,
            cgroup_procs: vec![],
            runtime_api_port: 9001,
            seccomp: true,
            max_open_files: 1024,
            wait_for_network: false,
            zygote: false,
            egress_on_demand: false,
        }
    }

    fn cgroup(&self, name: &str, memory_mb: u64, pids: u32) -> EnvCgroup {
        self.cgroups
            .create(
                name,
                &CgroupLimits {
                    memory_bytes: memory_mb << 20,
                    pids_max: pids,
                    cpu_millis: None,
                    cpu_quota: false,
                },
            )
            .expect("create cgroup")
    }
}

/// A running jail as a test holds it; kills and reaps on drop, so a failing assertion never
/// leaves processes behind.
struct Running {
    child: Child,
    jail: Option<StartedJail>,
    output: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn jail(&self) -> &StartedJail {
        self.jail.as_ref().expect("jail")
    }

    /// Waits for the end; returns Go's exit wording and the output.
    fn finish(mut self, timeout: Duration) -> (String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                self.jail().process.kill();
                panic!("jail did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = self
            .output
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (describe(status), out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(j) = &self.jail {
            j.process.kill();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else {
        match status.signal() {
            Some(9) => "signal: killed".into(),
            Some(11) => "signal: segmentation fault".into(),
            Some(n) => format!("signal {n}"),
            None => "unknown".into(),
        }
    }
}

fn spawn_jailer(uid: Option<u32>) -> (Command, OwnedFd, launch::PendingJail) {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("__jail")
        .process_group(0)
        .env_clear()
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let pending = launch::prepare(&mut cmd).unwrap();
    (cmd, reader.into(), pending)
}

fn try_start(
    spec: &JailSpec,
    uid: Option<u32>,
    egress: Option<&EgressConfig>,
) -> (Result<StartedJail, LaunchError>, Child, OwnedFd) {
    let (mut cmd, reader, pending) = spawn_jailer(uid);
    let child = cmd.spawn().expect("spawn jailer");
    drop(cmd); // closes our copies of the pipe's write end
    (
        pending.start(spec, Duration::from_secs(10), egress),
        child,
        reader,
    )
}

fn start(spec: &JailSpec) -> Running {
    start_with(spec, None, None)
}

fn start_as(spec: &JailSpec, uid: Option<u32>) -> Running {
    start_with(spec, uid, None)
}

fn start_with(spec: &JailSpec, uid: Option<u32>, egress: Option<&EgressConfig>) -> Running {
    let (jail, child, reader) = try_start(spec, uid, egress);
    let output = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::fs::File::from(reader).read_to_string(&mut s);
        s
    });
    let mut running = Running {
        child,
        jail: None,
        output: Some(output),
    };
    running.jail = Some(jail.expect("jail started"));
    running
}

/// Runs a shell script in a default jail; returns (exit wording, output).
fn sh(f: &Fixture, script: &str) -> (String, String) {
    start(&f.spec(&["/bin/sh", "-c", script])).finish(Duration::from_secs(20))
}

// ---------------------------------------------------------------------------------------------

fn runs_the_command_and_reports_its_exit_code(f: &Fixture) {
    let (status, out) = sh(f, "echo out; echo err >&2; exit 3");
    assert_eq!(status, "exit status 3");
    assert!(out.contains("out\n") && out.contains("err\n"), "{out}");
    let (status, _) = sh(f, "true");
    assert_eq!(status, "exit status 0");
}

fn death_by_signal_is_reported_as_the_signal(f: &Fixture) {
    let (status, _) = sh(f, "kill -SEGV $$");
    assert_eq!(status, "signal: segmentation fault");
    let (status, _) = sh(f, "kill -KILL $$");
    assert_eq!(status, "signal: killed");
}

fn sees_only_its_own_processes(f: &Fixture) {
    let (status, out) = sh(
        f,
        "echo pid=$$; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '",
    );
    assert_eq!(status, "exit status 0");
    assert!(
        out.contains("pid=2\n"),
        "the runtime is pid 2 under our init: {out}"
    );
    let pids: Vec<u32> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        !pids.is_empty() && pids.iter().all(|p| *p < 10),
        "foreign pids visible: {pids:?}"
    );
    // And cannot signal the host's init.
    let (_, out) = sh(f, "kill -0 1 2>&1; echo rc=$?");
    assert!(out.contains("rc=1"), "{out}");
}

fn host_secrets_and_root_are_invisible(f: &Fixture) {
    let data_dir = f.dir.display().to_string();
    let (status, out) = sh(
        f,
        &format!(
            "for p in /etc/shadow /root /home /var/lib /run /sys /boot {data_dir} /etc/ssl/private; do \
             test -e $p && echo VISIBLE $p; done; ls / | tr '\\n' ' '"
        ),
    );
    assert_eq!(status, "exit status 0");
    assert!(!out.contains("VISIBLE"), "{out}");
    let root: Vec<&str> = out.split_whitespace().collect();
    for entry in &root {
        assert!(
            [
                "bin", "dev", "etc", "lib", "lib64", "opt", "proc", "sbin", "tmp", "usr", "var"
            ]
            .contains(entry),
            "unexpected /{entry} in {root:?}"
        );
    }
}

fn var_task_is_read_only(f: &Fixture) {
    let (_, out) = sh(
        f,
        "cat /var/task/handler.sh; touch /var/task/x 2>&1; rm -f /var/task/handler.sh 2>&1",
    );
    assert!(out.contains("handler\n"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(f.code.join("handler.sh").exists());
}

fn writes_outside_tmp_fail(f: &Fixture) {
    let (_, out) = sh(
        f,
        "for p in /x /etc/x /usr/x /var/x /dev/x /opt/x /proc/x; do touch $p 2>/dev/null && echo WROTE $p; done; \
         touch /tmp/ok && echo tmp-ok; echo > /dev/shm/ok && echo shm-ok",
    );
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("tmp-ok") && out.contains("shm-ok"), "{out}");
}

fn tmp_is_capped_at_ephemeral_size(f: &Fixture) {
    let mut spec = f.spec(&[
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; ls -l /tmp/fill",
    ]);
    spec.tmp_mb = 8;
    let (_, out) = start(&spec).finish(Duration::from_secs(20));
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains(&(8u64 << 20).to_string()),
        "file stops at the cap: {out}"
    );
}

fn runs_unprivileged_without_capabilities_under_seccomp(f: &Fixture) {
    let (_, out) = sh(
        f,
        "id -u; id -g; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; hostname",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"993"), "{out}");
    assert_eq!(lines.get(1), Some(&"990"), "{out}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(cap) && l.ends_with("0000000000000000")),
            "{cap} not empty: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "{out}"
    );
    assert!(out.contains("localhost"), "{out}");
}

const PY_ESCAPES: &str = r#"
import ctypes, ctypes.util, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    r = fn()
    e = ctypes.get_errno()
    print(name, "rc=%d" % r, errno.errorcode.get(e, e) if r != 0 else "OK")
attempt("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
attempt("umount", lambda: libc.umount2(b"/proc", 2))
attempt("unshare-user", lambda: libc.unshare(0x10000000))
attempt("unshare-net", lambda: libc.unshare(0x40000000))
attempt("ptrace-attach", lambda: libc.ptrace(16, 1, None, None))
attempt("ptrace-traceme", lambda: libc.ptrace(0, 0, None, None))
attempt("bpf", lambda: libc.syscall(321, 0, None, 0))
attempt("init_module", lambda: libc.syscall(175, None, 0, b""))
attempt("kexec_load", lambda: libc.syscall(246, 0, 0, None, 0))
attempt("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0, 0))
attempt("chroot", lambda: libc.chroot(b"/tmp"))
attempt("clone-newuser", lambda: libc.syscall(56, 0x10000000 | 17, None, None, None, None))
attempt("setuid0", lambda: libc.setuid(0))
"#;

fn mount_ptrace_unshare_and_modules_fail_with_eperm(f: &Fixture) {
    std::fs::write(f.code.join("escapes.py"), PY_ESCAPES).unwrap();
    let (_, out) = start(&f.spec(&["/usr/bin/python3", "-I", "-S", "/var/task/escapes.py"]))
        .finish(Duration::from_secs(20));
    for name in [
        "mount",
        "umount",
        "unshare-user",
        "unshare-net",
        "ptrace-attach",
        "ptrace-traceme",
        "bpf",
        "init_module",
        "kexec_load",
        "keyctl",
        "chroot",
        "clone-newuser",
        "setuid0",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing: {out}"));
        assert!(line.ends_with("EPERM"), "{line}\n{out}");
    }
}

fn proc_self_root_and_symlinks_do_not_escape(f: &Fixture) {
    let (_, out) = sh(
        f,
        "ls /proc/self/root/ | tr '\\n' ' '; echo; cat /var/task/shadow-link 2>&1; \
         cat /proc/1/root/etc/shadow 2>&1; ls /proc/1/cwd 2>&1; cd /; cd ..; pwd",
    );
    assert!(!out.contains("root:"), "{out}");
    assert!(out.contains("No such file or directory"), "{out}");
    assert!(
        out.contains("Permission denied"),
        "init's root is not ours to read: {out}"
    );
    assert!(out.trim_end().ends_with('/'), "{out}");
}

fn reaches_its_runtime_api_listener(f: &Fixture) {
    let running = start(&f.spec(&[
        "/usr/bin/python3",
        "-I",
        "-S",
        "-c",
        "import socket,os; s=socket.create_connection(tuple(os.environ['AWS_LAMBDA_RUNTIME_API'].split(':')[:1]+[9001])); s.sendall(b'hello'); print(s.recv(10).decode())",
    ]));
    let listener = &running.jail().listener;
    listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = listener.accept().expect("the function connects");
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    conn.write_all(b"world").unwrap();
    drop(conn);
    let (status, out) = running.finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
    assert!(out.contains("world"), "{out}");
}

fn host_loopback_is_unreachable(f: &Fixture) {
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let (_, out) = sh(
        f,
        &format!(
            "/usr/bin/python3 -I -S -c \"
import socket
for addr in [('127.0.0.1', {port}), ('127.0.0.1', 9001 + 1)]:
    try:
        socket.create_connection(addr, timeout=2); print('CONNECTED', addr)
    except OSError as e: print('refused', addr, e.errno)
try:
    socket.create_connection(('10.255.255.1', 80), timeout=1); print('CONNECTED out')
except OSError as e: print('no route', e.errno)
\""
        ),
    );
    assert!(!out.contains("CONNECTED"), "{out}");
    assert!(
        out.contains(&format!("refused ('127.0.0.1', {port}) 111")),
        "{out}"
    );
    assert!(
        out.contains("no route 101"),
        "network unreachable without egress: {out}"
    );
}

fn memory_limit_kills_with_signal_killed(f: &Fixture) {
    let cg = f.cgroup("oom", 64, 64);
    let mut spec = f.spec(&[
        "/usr/bin/python3",
        "-I",
        "-S",
        "-c",
        "b = bytearray(400 << 20); print('survived')",
    ]);
    spec.cgroup_procs = cg.procs_files();
    let (status, out) = start(&spec).finish(Duration::from_secs(30));
    assert_eq!(status, "signal: killed", "{out}");
    assert!(!out.contains("survived"));
    assert_eq!(cg.oom_kills(), Some(1));
    cg.remove().expect("cgroup removed");
}

fn fork_bomb_is_contained_by_pids_limit(f: &Fixture) {
    let cg = f.cgroup("forkbomb", 256, 64);
    let mut spec = f.spec(&[
        "/usr/bin/python3",
        "-I",
        "-S",
        "-c",
        "import os, time\nn = 0\nfor i in range(500):\n    try:\n        if os.fork() == 0:\n            time.sleep(60); os._exit(0)\n        n += 1\n    except OSError as e:\n        print('fork failed', e.errno, flush=True); break\nprint('forked', n, flush=True); time.sleep(60)",
    ]);
    spec.cgroup_procs = cg.procs_files();
    let running = start(&spec);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.pids().len() < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let in_cgroup = cg.pids().len();
    assert!(
        (60..=64).contains(&in_cgroup),
        "{in_cgroup} tasks with pids.max=64"
    );
    running.jail().process.kill();
    let (status, out) = running.finish(Duration::from_secs(20));
    assert!(
        out.contains("fork failed 11"),
        "fork fails with EAGAIN: {out}"
    );
    assert_eq!(status, "signal: killed");
    assert!(cg.pids().is_empty(), "all killed with the init");
    cg.remove().expect("cgroup removed");
}

fn kill_and_cleanup_leave_no_process_or_cgroup(f: &Fixture) {
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cg = f.cgroup("cleanup", 128, 64);
    let mut spec = f.spec(&[
        "/bin/sh",
        "-c",
        "sleep 100 & sleep 100 & (setsid sleep 100 &); echo started; wait",
    ]);
    spec.cgroup_procs = cg.procs_files();
    let running = start(&spec);
    let init = running.jail().process.init_pid;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.pids().len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids = cg.pids();
    assert!(
        pids.contains(&(init as i32)),
        "init {init} is in the cgroup: {pids:?}"
    );
    assert!(pids.len() >= 5, "{pids:?}");
    running.jail().process.kill();
    running.jail().process.kill(); // idempotent
    let (status, _) = running.finish(Duration::from_secs(10));
    assert_eq!(status, "signal: killed");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived"
        );
    }
    cg.remove().expect("cgroup removed");
    assert!(cg.procs_files().iter().all(|p| !p.exists()));
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(host_mounts, after, "the host's mount table is untouched");
}

fn server_crash_kills_the_environment(f: &Fixture) {
    let cg = f.cgroup("crash", 128, 64);
    let mut spec = f.spec(&["/bin/sh", "-c", "sleep 100"]);
    spec.cgroup_procs = cg.procs_files();
    let mut running = start(&spec);
    let init = running.jail().process.init_pid;
    // Dropping the server's side (as a crash would) closes the control socket.
    drop(running.jail.take());
    let (status, _) = running.finish(Duration::from_secs(5));
    assert_eq!(status, "signal: killed");
    assert!(!Path::new(&format!("/proc/{init}")).exists());
    assert!(
        cg.procs_files().iter().all(|p| !p.exists()),
        "the monitor removed the orphaned cgroup"
    );
}

fn sweep_removes_leftover_cgroups(f: &Fixture) {
    let parent = CgroupParent::new(
        f.cgroups.layout().clone(),
        &format!("nimbus-sweep-{}", std::process::id()),
    );
    parent.prepare().unwrap();
    let cg = parent
        .create(
            "left",
            &CgroupLimits {
                memory_bytes: 128 << 20,
                pids_max: 64,
                cpu_millis: Some(500),
                cpu_quota: true,
            },
        )
        .unwrap();
    // A process stands in for an environment orphaned by a crashed server.
    let mut orphan = Command::new("/bin/sleep").arg("100").spawn().unwrap();
    for procs in cg.procs_files() {
        std::fs::write(procs, orphan.id().to_string()).unwrap();
    }
    assert_eq!(parent.sweep(), 1);
    let status = orphan.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(cg.procs_files().iter().all(|p| !p.exists()));
    parent.remove().unwrap();
}

fn python_and_node_run_under_the_filter(f: &Fixture) {
    let (status, out) = start(&f.spec(&[
        "/usr/bin/python3",
        "-c",
        "import subprocess, ssl, json, threading; print(subprocess.run(['echo','sub'],capture_output=True).stdout.decode().strip(), ssl.OPENSSL_VERSION[:7], len(ssl.create_default_context().get_ca_certs()) >= 0)",
    ]))
    .finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
    assert!(out.contains("sub OpenSSL True"), "{out}");
    if Path::new("/usr/bin/node").exists() {
        let (status, out) = start(&f.spec(&[
            "/usr/bin/node",
            "-e",
            "require('child_process').execFileSync('/bin/true'); require('fs').writeFileSync('/tmp/n','x'); console.log('node ok', require('os').cpus().length > 0)",
        ]))
        .finish(Duration::from_secs(30));
        assert_eq!(status, "exit status 0", "{out}");
        assert!(out.contains("node ok true"), "{out}");
    }
}

fn missing_program_is_a_setup_error(f: &Fixture) {
    let (result, mut child, _) = try_start(&f.spec(&["/var/task/bootstrap"]), None, None);
    match result {
        Err(LaunchError::Setup { step, source }) => {
            assert_eq!(step, "exec the runtime");
            assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        }
        other => panic!("{other:?}"),
    }
    // The launcher killed what was left; the jailer ends promptly either way.
    child.wait().unwrap();
}

fn rootless_mode_isolates_without_root(f: &Fixture) {
    let mut spec = f.spec(&["/bin/sh", "-c", "id -u; test -e /etc/shadow && echo VISIBLE; touch /var/task/x 2>&1; grep CapEff /proc/self/status; ls /proc | grep -cE '^[0-9]+$'"]);
    spec.user_namespace = true;
    let (status, out) = start_as(&spec, Some(65534)).finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
    assert!(out.starts_with("993\n"), "{out}");
    assert!(!out.contains("VISIBLE"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
}

fn peak_memory_is_read_from_the_cgroup(f: &Fixture) {
    let cg = f.cgroup("peak", 256, 64);
    let mut spec = f.spec(&[
        "/usr/bin/python3",
        "-I",
        "-S",
        "-c",
        "b = bytearray(50 << 20); b[::4096] = b'x' * len(b[::4096])",
    ]);
    spec.cgroup_procs = cg.procs_files();
    let (status, out) = start(&spec).finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
    let peak = cg.peak_memory_bytes().unwrap();
    assert!(peak > 50 << 20 && peak < 200 << 20, "peak {peak}");
    cg.remove().unwrap();
}

/// The data path, proven without sending a packet off this machine: with the tests-only
/// `allow_host_loopback`, the gateway address leads to the host's 127.0.0.1.
fn egress_carries_traffic_out_of_the_namespace(_f: &Fixture) {
    let Some(mut egress) = EgressConfig::detect() else {
        println!("  (slirp4netns not installed: skipped)");
        return;
    };
    egress.allow_host_loopback = true;
    let f = Fixture::get();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let spec = f.spec(&[
        "/usr/bin/python3",
        "-I",
        "-S",
        "-c",
        &format!("import socket; s = socket.create_connection(('10.0.2.2', {port}), timeout=5); s.sendall(b'out'); print('sent')"),
    ]);
    let running = start_with(&spec, None, Some(&egress));
    host.set_nonblocking(false).unwrap();
    let (mut conn, _) = host
        .accept()
        .expect("the function's connection arrives on the host");
    let mut buf = [0u8; 3];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"out");
    let (status, out) = running.finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
}

fn egress_keeps_the_host_loopback_out_of_reach(_f: &Fixture) {
    let Some(egress) = EgressConfig::detect() else {
        println!("  (slirp4netns not installed: skipped)");
        return;
    };
    let f = Fixture::get();
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let spec = f.spec(&[
        "/bin/sh",
        "-c",
        &format!(
            "grep -c tap0 /proc/net/dev; /usr/bin/python3 -I -S -c \"
import socket
for a in [('10.0.2.2', {port}), ('127.0.0.1', {port})]:
    try:
        socket.create_connection(a, timeout=3); print('CONNECTED', a)
    except OSError as e: print('blocked', a, e.errno)
\""
        ),
    ]);
    let (status, out) = start_with(&spec, None, Some(&egress)).finish(Duration::from_secs(20));
    assert_eq!(status, "exit status 0", "{out}");
    assert!(out.starts_with("1\n"), "tap0 exists: {out}");
    assert!(!out.contains("CONNECTED"), "{out}");
    drop(host);
}

/// Egress on demand, without egress: the runtime's connects wait for the listener's holder,
/// which sees where each goes; let through, the outside one fails as it would without a
/// network (nobody attached one). As root and in rootless mode (the init installs the trigger
/// with its capabilities in the user namespace).
fn the_egress_trigger_holds_sends_for_its_listener(f: &Fixture) {
    for uid in [None, Some(65534)] {
        let mut spec = f.spec(&[
            "/usr/bin/python3",
            "-I",
            "-S",
            "-c",
            "import socket\nfor a in [('127.0.0.1', 9), ('10.0.2.2', 80)]:\n    try:\n        socket.create_connection(a, timeout=3)\n    except OSError as e:\n        print(a[0], e.errno)",
        ]);
        spec.egress_on_demand = true;
        spec.user_namespace = uid.is_some();
        let mut running = start_with(&spec, uid, None);
        let listener = running
            .jail
            .as_mut()
            .and_then(|j| j.egress_trigger.take())
            .expect("the init hands over the trigger's listener");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        // Served until the listener hangs up: every process of the jail has ended.
        let held = runtime.block_on(async {
            let listener = Listener::new(listener).unwrap();
            let mut held = Vec::new();
            while let Some(n) = listener.next().await {
                held.push((n.nr, listener.wants_the_outside(&n)));
                listener.let_through(n.id).unwrap();
            }
            held
        });
        assert_eq!(
            held,
            [(libc::SYS_connect, false), (libc::SYS_connect, true)],
            "uid {uid:?}"
        );
        let (status, out) = running.finish(Duration::from_secs(20));
        assert_eq!(status, "exit status 0", "{out}");
        assert!(
            out.contains(&format!("127.0.0.1 {}", libc::ECONNREFUSED)),
            "{out}"
        );
        assert!(
            out.contains(&format!("10.0.2.2 {}", libc::ENETUNREACH)),
            "{out}"
        );
    }
}

fn parked_jail_runs_what_it_is_told_later(f: &Fixture) {
    let cg = f.cgroup("parked", 128, 64);
    let mut shape = f.spec(&["/bin/false"]);
    shape.cgroup_procs = cg.procs_files();
    let (mut cmd, reader, pending) = spawn_jailer(None);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let parked = pending
        .park(&shape, Duration::from_secs(10), None)
        .expect("parked");
    assert!(
        cg.pids().contains(&(parked.init_pid() as i32)),
        "parked init already in its cgroup"
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut spec = f.spec(&[
        "/bin/sh",
        "-c",
        "echo ran $(sh /var/task/handler.sh) in $(pwd); cat /proc/self/cgroup | head -3",
    ]);
    spec.tmp_mb = 3;
    let jail = parked.run(&spec, Duration::from_secs(10)).expect("runs");
    let status = child.wait().unwrap();
    drop(jail);
    let mut out = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(describe(status), "exit status 0", "{out}");
    assert!(out.contains("ran handler in /var/task"), "{out}");
    assert!(
        out.lines().skip(1).all(|l| l.ends_with(":/")),
        "cgroup namespace rooted at the env: {out}"
    );
    cg.remove().unwrap();
}

fn dropping_a_parked_jail_leaves_nothing(f: &Fixture) {
    let cg = f.cgroup("parkdrop", 128, 64);
    let mut shape = f.spec(&["/bin/false"]);
    shape.cgroup_procs = cg.procs_files();
    let (mut cmd, _reader, pending) = spawn_jailer(None);
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let parked = pending
        .park(
            &shape,
            Duration::from_secs(10),
            EgressConfig::detect().as_ref(),
        )
        .unwrap();
    let init = parked.init_pid();
    drop(parked);
    let status = child.wait().unwrap();
    assert_eq!(describe(status), "signal: killed");
    assert!(!Path::new(&format!("/proc/{init}")).exists());
    assert!(cg.pids().is_empty());
    cg.remove().unwrap();
}

fn limits_can_be_raised_and_lowered_on_a_live_cgroup(f: &Fixture) {
    let cg = f.cgroup("relimit", 128, 64);
    for mb in [256u64, 64, 1024, 128] {
        cg.apply_limits(&CgroupLimits {
            memory_bytes: mb << 20,
            pids_max: 1024,
            cpu_millis: Some(500),
            cpu_quota: true,
        })
        .unwrap_or_else(|e| panic!("{mb} MB: {e}"));
        if let CgroupLayout::V1 { memory, .. } = f.cgroups.layout() {
            let dir = memory
                .join(format!("nimbus-test-{}", std::process::id()))
                .join("relimit");
            let limit = std::fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap();
            assert_eq!(limit.trim(), (mb << 20).to_string());
        }
    }
    cg.remove().unwrap();
}

// ---------------------------------------------------------------------------------------------

/// Cold-start overhead: spawn → first line of output, plain process vs jail variants. The
/// variants run round-robin so that the noise of a shared machine hits them alike.
fn bench(f: &Fixture) {
    const N: usize = 60;
    let egress = EgressConfig::detect();
    let first_line = |reader: OwnedFd| {
        let mut r = std::io::BufReader::new(std::fs::File::from(reader));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
    };
    let plain = |argv: &[&str]| {
        let t = Instant::now();
        let (reader, writer) = std::io::pipe().unwrap();
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdout(writer)
            .spawn()
            .unwrap();
        first_line(reader.into());
        let d = t.elapsed();
        child.wait().unwrap();
        d
    };
    // Parked jails are prepared before the clock starts, as the server's pool does.
    let jailed = |argv: &[&str], with_cgroup: bool, with_egress: bool, parked: bool| {
        let egress = if with_egress { egress.as_ref() } else { None };
        let mut spec = f.spec(argv);
        let mut t = Instant::now();
        let cg = with_cgroup.then(|| {
            let cg = f.cgroup(&format!("bench{}", fastid()), 128, 1024);
            spec.cgroup_procs = cg.procs_files();
            cg
        });
        let (mut cmd, reader, pending) = spawn_jailer(None);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let p = pending
            .park(&spec, Duration::from_secs(10), egress)
            .unwrap();
        if parked {
            t = Instant::now();
        }
        let jail = p.run(&spec, Duration::from_secs(10)).unwrap();
        first_line(reader);
        let d = t.elapsed();
        child.wait().unwrap();
        drop(jail);
        if let Some(cg) = cg {
            cg.remove().unwrap();
        }
        d
    };
    let echo: &[&str] = &["/bin/echo", "ready"];
    let py: &[&str] = &["/usr/bin/python3", "-I", "-S", "-c", "print('ready')"];
    type Variant<'a> = (&'a str, Box<dyn Fn(&[&str]) -> Duration + 'a>);
    let mut variants: Vec<Variant> = vec![
        ("plain process", Box::new(plain)),
        (
            "jail, inline, no cgroup",
            Box::new(|a: &[&str]| jailed(a, false, false, false)),
        ),
        (
            "jail, inline, cgroup",
            Box::new(|a: &[&str]| jailed(a, true, false, false)),
        ),
        (
            "jail, parked, cgroup",
            Box::new(|a: &[&str]| jailed(a, true, false, true)),
        ),
    ];
    if egress.is_some() {
        variants.push((
            "jail + egress, inline, cgroup",
            Box::new(|a: &[&str]| jailed(a, true, true, false)),
        ));
        variants.push((
            "jail + egress, parked, cgroup",
            Box::new(|a: &[&str]| jailed(a, true, true, true)),
        ));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (label, argv) in [("echo", echo), ("python3 -I -S", py)] {
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        for _ in 0..N {
            for (k, (_, run)) in variants.iter().enumerate() {
                // Let the previous environment's namespaces finish tearing down (the kernel
                // does it asynchronously, and it slows the next creation): this measures
                // each variant's own cost. A busy server pays that contention too, which the
                // namespace pool absorbs.
                std::thread::sleep(Duration::from_millis(40));
                samples[k].push(run(argv));
            }
        }
        let mut base = 0.0;
        println!("{label}: spawn -> first line of output, {N} runs each, round-robin, 40 ms apart");
        for (k, (name, _)) in variants.iter().enumerate() {
            let v = &mut samples[k];
            v.sort();
            let median = ms(v[v.len() / 2]);
            if k == 0 {
                base = median;
            }
            println!(
                "  {name:<38} min {:>6.2}  median {median:>6.2}  p90 {:>6.2} ms   median overhead {:>+6.2} ms",
                ms(v[0]),
                ms(v[v.len() * 9 / 10]),
                median - base
            );
        }
    }
    variants.clear();
    f.cleanup();
}

fn fastid() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
