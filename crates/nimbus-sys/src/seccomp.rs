//! Compiles the policy table of [`crate::seccomp_policy`] to a classic-BPF seccomp program and
//! installs it.
//!
//! Hand-assembled rather than through a filter library: the program is a straight line of
//! "syscall number equals X → verdict" tests plus an architecture check and an x32 guard, which
//! is short enough to review and to verify with the small interpreter in the tests below.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::seccomp_policy::{Condition, POLICY, Rule, Verdict};

/// A compiled filter, ready to install.
#[derive(Clone, Debug)]
pub struct SeccompProgram(Vec<libc::sock_filter>);

// Offsets in `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const fn offset_arg_low(arg: u8) -> u32 {
    // args[] starts at byte 16, 8 bytes each; x86_64 is little-endian, so the low half of
    // argument n sits first.
    16 + 8 * arg as u32
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
/// x32 syscalls are x86_64 numbers with this bit set; they share AUDIT_ARCH_X86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const RET_KILL_PROCESS: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
const RET_ERRNO: u32 = 0x0005_0000; // SECCOMP_RET_ERRNO | errno
const RET_USER_NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn verdict_value(v: Verdict) -> u32 {
    match v {
        Verdict::Eperm => RET_ERRNO | libc::EPERM as u32,
        Verdict::Enosys => RET_ERRNO | libc::ENOSYS as u32,
    }
}

impl SeccompProgram {
    /// Compiles the jail policy.
    pub fn jail_policy() -> SeccompProgram {
        Self::compile(POLICY)
    }

    /// The egress trigger (see [`crate::seccomp_notify`]): the system calls that can send a
    /// packet to an address — `connect`, `sendto` with an address, `sendmsg` and `sendmmsg`
    /// — wait for the supervisor holding the filter's listener, which lets each go on once
    /// it has looked at the destination. Everything else is allowed: this filter decides
    /// nothing about security (the jail policy, installed after it, does); it only tells the
    /// server when an environment first wants the network. `sendmsg` and `sendmmsg` on
    /// [`EXEMPT_FD`] are let through, so the process installing the filter can still hand its
    /// listener to the supervisor over that socket. Other architectures: allow (the jail
    /// policy kills them).
    ///
    /// [`EXEMPT_FD`]: crate::seccomp_notify::EXEMPT_FD
    pub fn egress_trigger() -> SeccompProgram {
        let exempt = crate::seccomp_notify::EXEMPT_FD as u32;
        SeccompProgram(vec![
            /* 0 */ stmt(LD_ABS, OFFSET_ARCH),
            /* 1 */ jump(JEQ, AUDIT_ARCH, 1, 0),
            /* 2 */ stmt(RET, RET_ALLOW),
            /* 3 */ stmt(LD_ABS, OFFSET_NR),
            /* 4 */ jump(JEQ, libc::SYS_connect as u32, 7, 0),
            /* 5 */ jump(JEQ, libc::SYS_sendto as u32, 0, 4),
            // sendto: only with a destination address (argument 4, a pointer, not NULL).
            /* 6 */
            stmt(LD_ABS, offset_arg_low(4)),
            /* 7 */ jump(JEQ, 0, 0, 4),
            /* 8 */ stmt(LD_ABS, offset_arg_low(4) + 4),
            /* 9 */ jump(JEQ, 0, 3, 2),
            /* 10 */ jump(JEQ, libc::SYS_sendmsg as u32, 3, 0),
            /* 11 */ jump(JEQ, libc::SYS_sendmmsg as u32, 2, 1),
            /* 12 */ stmt(RET, RET_USER_NOTIF),
            /* 13 */ stmt(RET, RET_ALLOW),
            // sendmsg, sendmmsg: unless on the exempt socket.
            /* 14 */
            stmt(LD_ABS, offset_arg_low(0)),
            /* 15 */ jump(JEQ, exempt, 1, 0),
            /* 16 */ stmt(RET, RET_USER_NOTIF),
            /* 17 */ stmt(RET, RET_ALLOW),
        ])
    }

    fn compile(rules: &[Rule]) -> SeccompProgram {
        let mut p = vec![
            stmt(LD_ABS, OFFSET_ARCH),
            jump(JEQ, AUDIT_ARCH, 1, 0),
            stmt(RET, RET_KILL_PROCESS),
            stmt(LD_ABS, OFFSET_NR),
            jump(JGE, X32_SYSCALL_BIT, 0, 1),
            stmt(RET, verdict_value(Verdict::Enosys)),
        ];
        for rule in rules {
            let nr = rule.nr as u32;
            match rule.condition {
                Condition::Always => {
                    p.push(jump(JEQ, nr, 0, 1));
                    p.push(stmt(RET, verdict_value(rule.verdict)));
                }
                Condition::ArgHasAnyBit { arg, mask } => {
                    // Not this syscall: skip the 4 instructions of the check. Otherwise load
                    // the argument, test it, and reload the number for the rules after.
                    p.push(jump(JEQ, nr, 0, 4));
                    p.push(stmt(LD_ABS, offset_arg_low(arg)));
                    p.push(jump(JSET, mask, 0, 1));
                    p.push(stmt(RET, verdict_value(rule.verdict)));
                    p.push(stmt(LD_ABS, OFFSET_NR));
                }
                Condition::ArgEquals { arg, value } => {
                    p.push(jump(JEQ, nr, 0, 4));
                    p.push(stmt(LD_ABS, offset_arg_low(arg)));
                    p.push(jump(JEQ, value, 0, 1));
                    p.push(stmt(RET, verdict_value(rule.verdict)));
                    p.push(stmt(LD_ABS, OFFSET_NR));
                }
            }
        }
        p.push(stmt(RET, RET_ALLOW));
        SeccompProgram(p)
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a program always holds at least the architecture check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The program as the kernel reads it (`struct sock_filter[]`, native byte order), for a
    /// process that installs it without this crate: the Python zygote's forks.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 8);
        for f in &self.0 {
            out.extend_from_slice(&f.code.to_ne_bytes());
            out.push(f.jt);
            out.push(f.jf);
            out.extend_from_slice(&f.k.to_ne_bytes());
        }
        out
    }

    /// Installs the filter on the calling thread. `no_new_privs` must already be set (the
    /// kernel refuses filters from unprivileged callers otherwise). Async-signal-safe: only
    /// a system call, no allocation.
    pub fn install(&self) -> io::Result<()> {
        self.load(0).map(drop)
    }

    /// Installs the filter on the calling thread and returns its user-notification listener
    /// (close-on-exec). The caller needs `no_new_privs` or `CAP_SYS_ADMIN`.
    pub fn install_with_listener(&self) -> io::Result<OwnedFd> {
        let fd = self.load(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
        let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: with NEW_LISTENER, the (non-negative) result is a new descriptor that
        // nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// seccomp(SECCOMP_SET_MODE_FILTER, `flags`, this program): its non-negative result.
    fn load(&self, flags: libc::c_ulong) -> io::Result<libc::c_long> {
        let prog = libc::sock_fprog {
            len: u16::try_from(self.0.len())
                .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
            filter: self.0.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.0`, a live, correctly typed array of `len` BPF
        // instructions that outlives the call; the kernel copies the program before returning.
        // seccomp(2) with SECCOMP_SET_MODE_FILTER takes exactly a flags word and this pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc >= 0 {
            Ok(rc)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Evaluates the program in user space on one syscall, for tests and reviews.
    pub fn evaluate(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        while let Some(ins) = self.0.get(pc) {
            pc += 1;
            match ins.code {
                LD_ABS => {
                    let at = ins.k as usize;
                    let word = data.get(at..at + 4).unwrap_or(&[0; 4]);
                    acc = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                }
                RET => return ins.k,
                JEQ | JGE | JSET => {
                    let taken = match ins.code {
                        JEQ => acc == ins.k,
                        JGE => acc >= ins.k,
                        _ => acc & ins.k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                _ => return RET_KILL_PROCESS,
            }
        }
        RET_KILL_PROCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(nr: libc::c_long, args: [u64; 6]) -> u32 {
        SeccompProgram::jail_policy().evaluate(AUDIT_ARCH, nr as u32, args)
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_mmap,
            libc::SYS_execve,
            libc::SYS_wait4,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_epoll_wait,
            libc::SYS_futex,
        ] {
            assert_eq!(verdict_of(nr, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn every_always_rule_denies_its_syscall() {
        for rule in POLICY.iter().filter(|r| r.condition == Condition::Always) {
            assert_eq!(
                verdict_of(rule.nr, [0; 6]),
                verdict_value(rule.verdict),
                "{}",
                rule.name
            );
        }
    }

    #[test]
    fn fork_and_threads_pass_but_namespace_clones_fail() {
        let fork = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(
            verdict_of(libc::SYS_clone, [fork, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            verdict_of(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
            libc::CLONE_PARENT,
        ] {
            let flags = fork | flag as u64;
            assert_eq!(
                verdict_of(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]),
                RET_ERRNO | libc::EPERM as u32
            );
        }
        assert_eq!(
            verdict_of(libc::SYS_clone3, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn only_tiocsti_ioctl_is_denied() {
        assert_eq!(
            verdict_of(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]),
            RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(
            verdict_of(libc::SYS_ioctl, [0, libc::FIONREAD, 0, 0, 0, 0]),
            RET_ALLOW
        );
    }

    #[test]
    fn foreign_architectures_are_killed_and_x32_gets_enosys() {
        let p = SeccompProgram::jail_policy();
        // AUDIT_ARCH_I386: the int 0x80 entry, where numbers mean other syscalls.
        assert_eq!(p.evaluate(0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS);
        let x32_mount = X32_SYSCALL_BIT | libc::SYS_mount as u32;
        assert_eq!(
            p.evaluate(AUDIT_ARCH, x32_mount, [0; 6]),
            RET_ERRNO | libc::ENOSYS as u32
        );
    }

    #[test]
    fn program_fits_the_kernel_limit_and_jumps_stay_in_range() {
        let p = SeccompProgram::jail_policy();
        assert!(p.len() < 4096);
        for (i, ins) in p.0.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                let far = i + 1 + usize::from(ins.jt.max(ins.jf));
                assert!(far < p.len(), "jump at {i} leaves the program");
            }
        }
    }

    #[test]
    fn every_rule_has_a_reason_and_no_syscall_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for rule in POLICY {
            assert!(rule.reason.len() > 10, "{} needs a reason", rule.name);
            assert!(seen.insert(rule.nr), "{} listed twice", rule.name);
        }
    }

    #[test]
    fn the_egress_trigger_holds_only_sends_that_can_name_a_destination() {
        let p = SeccompProgram::egress_trigger();
        let exempt = crate::seccomp_notify::EXEMPT_FD as u64;
        let run = |nr: libc::c_long, args: [u64; 6]| p.evaluate(AUDIT_ARCH, nr as u32, args);
        let to = 0x7fff_0000_1000_u64; // a destination address in user memory
        assert_eq!(run(libc::SYS_connect, [3, to, 16, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(run(libc::SYS_sendto, [3, 0, 1, 0, to, 16]), RET_USER_NOTIF);
        assert_eq!(
            run(libc::SYS_sendto, [3, 0, 1, 0, 0x1_0000_0000, 16]),
            RET_USER_NOTIF,
            "an address above 4 GiB"
        );
        assert_eq!(
            run(libc::SYS_sendto, [3, 0, 1, 0, 0, 0]),
            RET_ALLOW,
            "send() on a connected socket"
        );
        assert_eq!(run(libc::SYS_sendmsg, [3, to, 0, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(run(libc::SYS_sendmmsg, [3, to, 2, 0, 0, 0]), RET_USER_NOTIF);
        assert_eq!(
            run(libc::SYS_sendmsg, [exempt, to, 0, 0, 0, 0]),
            RET_ALLOW,
            "the exempt socket"
        );
        assert_eq!(run(libc::SYS_sendmmsg, [exempt, to, 1, 0, 0, 0]), RET_ALLOW);
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_socket,
            libc::SYS_bind,
            libc::SYS_accept4,
            libc::SYS_recvmsg,
        ] {
            assert_eq!(run(nr, [3, to, 16, 0, 0, 0]), RET_ALLOW, "syscall {nr}");
        }
        assert_eq!(p.evaluate(0x4000_0003, 102, [0; 6]), RET_ALLOW, "i386");
        for (i, ins) in p.0.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                let far = i + 1 + usize::from(ins.jt.max(ins.jf));
                assert!(far < p.len(), "jump at {i} leaves the program");
            }
        }
    }
}
