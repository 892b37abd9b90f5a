//! The kernel-facing part of Nimbus, and the only crate allowed `unsafe` (each block carries
//! a `// SAFETY:` comment). It knows nothing of Lambda: the server's `sandbox::jail` module
//! decides the policy (which paths, which limits) and this crate carries it out.
//!
//! Module map:
//! - [`spec`]: the [`spec::JailSpec`] the server sends to the jailer, and its encoding.
//! - [`launch`]: the server's side of starting a jail (control socket, handshake, kill).
//! - [`control`]: the messages on the control socket, with descriptor passing.
//! - [`jailer`]: `nimbus __jail`, the separate single-threaded process that unshares
//!   namespaces, builds the root, drops privileges and execs the runtime.
//! - [`rootfs`] (private): the mount plan and `pivot_root`.
//! - [`net`]: `lo` and the Runtime API listener inside a network namespace.
//! - [`egress`]: outbound access for a jail through slirp4netns.
//! - [`cpuidle`]: how idle CPUs wait (halted vCPUs on a KVM guest), and the server's request
//!   that they poll while it serves invokes.
//! - [`cgroup`]: per-environment cgroups, v1 and v2, and the sweep of leftovers.
//! - [`spawn`]: helper programs started with `posix_spawn` (no fork of the server).
//! - [`seccomp`] and [`seccomp_policy`]: the filter compiler and the reviewed policy table.
//! - [`seccomp_notify`]: the server's side of the egress trigger, which attaches outbound
//!   networking when an environment first sends to an address outside it.

pub mod cgroup;
pub mod control;
pub mod cpuidle;
pub mod egress;
pub mod jailer;
pub mod launch;
pub mod net;
mod rootfs;
pub mod seccomp;
pub mod seccomp_notify;
pub mod seccomp_policy;
pub mod spawn;
pub mod spec;
