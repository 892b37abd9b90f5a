//! The jail's seccomp policy: a reviewed table, one reason per entry.
//!
//! It is a deny list on top of the other layers, not an allow list: the runtime already runs
//! as an unprivileged uid with every capability dropped, so most of these calls would fail
//! anyway. The filter removes kernel attack surface that an unprivileged process can still
//! reach (bpf, perf_event_open, userfaultfd, io_uring, keyrings, new user namespaces) and
//! keeps failing what capabilities alone guard, in case a kernel bug hands one back.
//! An allow list would be tighter but breaks runtimes on every new glibc/Node/CPython that
//! adopts a new syscall; Lambda itself runs a deny-style profile for the same reason.
//!
//! Everything not listed is allowed; syscalls of a foreign architecture kill the process
//! and x32 syscalls (numbers with bit 30 set) fail with ENOSYS, so no entry can be bypassed
//! through another ABI. Changes to this table need a review: add the reason, and a test in
//! `tests/jail.rs` if the entry is security relevant.

/// What a rule answers when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail with EPERM: what the call would return without the needed capability.
    Eperm,
    /// Fail with ENOSYS: "not implemented", so libraries fall back to an older call.
    Enosys,
}

/// When a rule matches its syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// When the low 32 bits of argument `arg` have any bit of `mask` set.
    ArgHasAnyBit { arg: u8, mask: u32 },
    /// When the low 32 bits of argument `arg` equal `value`.
    ArgEquals { arg: u8, value: u32 },
}

/// One entry of the policy.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub condition: Condition,
    pub verdict: Verdict,
    pub reason: &'static str,
}

/// The clone(2) flags that create namespaces (CLONE_NEWTIME shares its bit with the exit
/// signal in clone(2), so it can only be requested through clone3/unshare, both denied).
pub const NAMESPACE_CLONE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// The clone(2) flags a function may not use: the namespace flags, and `CLONE_PARENT`, which
/// would make the new process a child of the runtime's parent — for a Python runtime forked
/// by the zygote, the server, whose process table a function could then fill with zombies it
/// never reaps. No runtime or thread library sets it.
pub const DENIED_CLONE_FLAGS: u32 = NAMESPACE_CLONE_FLAGS | libc::CLONE_PARENT as u32;

const fn deny(name: &'static str, nr: libc::c_long, reason: &'static str) -> Rule {
    Rule {
        name,
        nr,
        condition: Condition::Always,
        verdict: Verdict::Eperm,
        reason,
    }
}

/// The table. Order does not matter for correctness. The compiled filter is linear: every
/// syscall walks about 70 BPF comparisons, tens of nanoseconds, not visible in measurements.
#[cfg(target_arch = "x86_64")]
pub const POLICY: &[Rule] = &[
    // --- Filesystem namespace: the jail's root must stay what we built.
    deny(
        "mount",
        libc::SYS_mount,
        "would remount the read-only root or reveal host filesystems",
    ),
    deny(
        "umount2",
        libc::SYS_umount2,
        "would uncover what our mounts hide",
    ),
    deny(
        "pivot_root",
        libc::SYS_pivot_root,
        "changes the root the jail was built on",
    ),
    deny(
        "chroot",
        libc::SYS_chroot,
        "classic escape helper; never needed by a function",
    ),
    deny(
        "open_tree",
        libc::SYS_open_tree,
        "new mount API: clones mounts",
    ),
    deny(
        "move_mount",
        libc::SYS_move_mount,
        "new mount API: attaches mounts",
    ),
    deny(
        "fsopen",
        libc::SYS_fsopen,
        "new mount API: creates filesystems",
    ),
    deny(
        "fsconfig",
        libc::SYS_fsconfig,
        "new mount API: configures filesystems",
    ),
    deny(
        "fsmount",
        libc::SYS_fsmount,
        "new mount API: creates mounts",
    ),
    deny(
        "fspick",
        libc::SYS_fspick,
        "new mount API: reconfigures existing mounts",
    ),
    deny(
        "mount_setattr",
        libc::SYS_mount_setattr,
        "would clear read-only/nosuid on our mounts",
    ),
    deny(
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        "opens files by handle outside the mount tree (the 'shocker' escape)",
    ),
    deny(
        "name_to_handle_at",
        libc::SYS_name_to_handle_at,
        "produces handles for open_by_handle_at; leaks inode identities",
    ),
    deny(
        "quotactl",
        libc::SYS_quotactl,
        "filesystem quota administration",
    ),
    deny(
        "quotactl_fd",
        libc::SYS_quotactl_fd,
        "filesystem quota administration",
    ),
    deny("swapon", libc::SYS_swapon, "host swap administration"),
    deny("swapoff", libc::SYS_swapoff, "host swap administration"),
    deny("acct", libc::SYS_acct, "host process accounting"),
    // --- Namespaces: a function must not build itself a new, more privileged view.
    deny(
        "unshare",
        libc::SYS_unshare,
        "new namespaces (user namespaces re-grant capabilities inside them)",
    ),
    deny("setns", libc::SYS_setns, "joining other namespaces"),
    Rule {
        name: "clone",
        nr: libc::SYS_clone,
        condition: Condition::ArgHasAnyBit {
            arg: 0,
            mask: DENIED_CLONE_FLAGS,
        },
        verdict: Verdict::Eperm,
        reason: "clone with CLONE_NEW* flags creates namespaces, with CLONE_PARENT a child of the runtime's parent (the server, for a forked Python runtime); plain fork/thread creation stays allowed",
    },
    Rule {
        name: "clone3",
        nr: libc::SYS_clone3,
        condition: Condition::Always,
        verdict: Verdict::Enosys,
        reason: "its flags live in memory seccomp cannot inspect; ENOSYS makes glibc, Python and Node fall back to clone(2), which is checked",
    },
    // --- Other processes.
    deny(
        "ptrace",
        libc::SYS_ptrace,
        "tracing/reading other processes' memory",
    ),
    deny(
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        "reads another process's memory (ptrace-equivalent)",
    ),
    deny(
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        "writes another process's memory (ptrace-equivalent)",
    ),
    deny(
        "pidfd_getfd",
        libc::SYS_pidfd_getfd,
        "steals file descriptors of another process",
    ),
    deny(
        "kcmp",
        libc::SYS_kcmp,
        "probes other processes' kernel objects (ptrace-gated, info leak)",
    ),
    // --- Kernel and host administration.
    deny(
        "kexec_load",
        libc::SYS_kexec_load,
        "replaces the running kernel",
    ),
    deny(
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        "replaces the running kernel",
    ),
    deny("init_module", libc::SYS_init_module, "loads kernel code"),
    deny("finit_module", libc::SYS_finit_module, "loads kernel code"),
    deny(
        "delete_module",
        libc::SYS_delete_module,
        "unloads kernel code",
    ),
    deny(
        "reboot",
        libc::SYS_reboot,
        "reboots the host (or the PID namespace)",
    ),
    deny(
        "syslog",
        libc::SYS_syslog,
        "reads the kernel log (addresses, other tenants' events)",
    ),
    deny(
        "settimeofday",
        libc::SYS_settimeofday,
        "sets the host clock",
    ),
    deny(
        "clock_settime",
        libc::SYS_clock_settime,
        "sets the host clock",
    ),
    deny(
        "clock_adjtime",
        libc::SYS_clock_adjtime,
        "adjusts the host clock",
    ),
    deny("iopl", libc::SYS_iopl, "raw I/O port access"),
    deny("ioperm", libc::SYS_ioperm, "raw I/O port access"),
    deny(
        "vhangup",
        libc::SYS_vhangup,
        "hangs up the controlling terminal",
    ),
    deny(
        "lookup_dcookie",
        libc::SYS_lookup_dcookie,
        "profiling interface; kernel path leak",
    ),
    deny(
        "nfsservctl",
        libc::SYS_nfsservctl,
        "obsolete NFS server control",
    ),
    deny(
        "uselib",
        libc::SYS_uselib,
        "obsolete a.out loader; historic exploit vector",
    ),
    deny("_sysctl", libc::SYS__sysctl, "obsolete binary sysctl"),
    deny("sysfs", libc::SYS_sysfs, "obsolete filesystem-type query"),
    deny(
        "modify_ldt",
        libc::SYS_modify_ldt,
        "16-bit segment tricks; historic exploit vector, unused by runtimes",
    ),
    // --- Large kernel attack surface reachable without privileges.
    deny(
        "bpf",
        libc::SYS_bpf,
        "eBPF verifier/JIT: a frequent source of kernel exploits",
    ),
    deny(
        "perf_event_open",
        libc::SYS_perf_event_open,
        "performance counters: side channels and kernel exploits",
    ),
    deny(
        "userfaultfd",
        libc::SYS_userfaultfd,
        "makes kernel races reliably exploitable",
    ),
    deny(
        "keyctl",
        libc::SYS_keyctl,
        "kernel keyrings are not namespaced: other tenants' keys",
    ),
    deny(
        "add_key",
        libc::SYS_add_key,
        "kernel keyrings are not namespaced",
    ),
    deny(
        "request_key",
        libc::SYS_request_key,
        "kernel keyrings are not namespaced; can call user-mode helpers",
    ),
    deny(
        "fanotify_init",
        libc::SYS_fanotify_init,
        "filesystem-wide event monitoring",
    ),
    Rule {
        name: "io_uring_setup",
        nr: libc::SYS_io_uring_setup,
        condition: Condition::Always,
        verdict: Verdict::Enosys,
        reason: "io_uring bypasses seccomp for the operations it performs and has a long CVE record; ENOSYS makes libuv fall back to threads",
    },
    Rule {
        name: "io_uring_enter",
        nr: libc::SYS_io_uring_enter,
        condition: Condition::Always,
        verdict: Verdict::Enosys,
        reason: "see io_uring_setup",
    },
    Rule {
        name: "io_uring_register",
        nr: libc::SYS_io_uring_register,
        condition: Condition::Always,
        verdict: Verdict::Enosys,
        reason: "see io_uring_setup",
    },
    Rule {
        name: "ioctl(TIOCSTI)",
        nr: libc::SYS_ioctl,
        condition: Condition::ArgEquals {
            arg: 1,
            value: libc::TIOCSTI as u32,
        },
        verdict: Verdict::Eperm,
        reason: "injects keystrokes into a terminal (none is attached, kept as defence in depth)",
    },
];

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the jail's seccomp policy is written for x86_64 only (see docs/sandbox.md)");
