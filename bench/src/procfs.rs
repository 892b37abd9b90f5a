//! What `/proc` says about the processes the harness started: resident memory, and the tree
//! of descendants (a server's environments), so they can be measured and, at the end, killed.
//!
//! Only reads `/proc`; the one thing it sends is SIGKILL to descendants of a server this run
//! started, identified by pid *and* start time so a recycled pid is never hit.

use std::collections::HashMap;

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// A process as seen at one moment: pid, parent, process group and start time (clock ticks
/// since boot, which makes `(pid, start)` unique over the machine's uptime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    pub(crate) pid: u32,
    /// `R`, `S`, `Z` (exited, not yet reaped by its parent) …
    pub(crate) state: char,
    pub(crate) ppid: u32,
    pub(crate) pgrp: u32,
    pub(crate) start: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) may contain spaces and parentheses,
/// so fields are counted from the last `)`.
pub(crate) fn parse_stat(pid: u32, text: &str) -> Option<ProcInfo> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, pgrp 5, starttime 22.
    Some(ProcInfo {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn info(pid: u32) -> Option<ProcInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

fn all_processes() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(info)
        .collect()
}

/// Every live descendant of `root` (not `root` itself), parents before children.
pub(crate) fn descendants(root: u32) -> Vec<ProcInfo> {
    let all = all_processes();
    let mut children: HashMap<u32, Vec<ProcInfo>> = HashMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            out.push(*c);
            queue.push(c.pid);
        }
    }
    out
}

/// A `kB` field of `/proc/PID/status` (e.g. `VmRSS`), in bytes.
pub(crate) fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kb_field(&text, field)
}

/// A `kB` field of `status` or `smaps_rollup` text, in bytes.
pub(crate) fn kb_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size (`VmRSS`) in bytes.
pub(crate) fn rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// Proportional set size in bytes: shared pages (the interpreter's code) divided among the
/// processes that map them, so a sum over environments does not count them many times.
pub(crate) fn pss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kb_field(&text, "Pss")
}

/// Clock ticks per second of `/proc` times (`USER_HZ`): fixed at 100 by the Linux ABI on
/// every architecture the project targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of a whole process (all threads), in ticks. The kernel truncates
/// each of the two to whole ticks per process, so a process that ran 8 ms reads as 0: fine
/// for a long-lived server, useless for a fleet of small environments (see [`cpu_ns`]).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime), counted from field 3 at index 0.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of a whole process in nanoseconds: the scheduler's exact run time of each live
/// thread (`/proc/PID/task/*/schedstat`), or the tick count when that is larger (threads that
/// exited are only in the latter).
pub(crate) fn cpu_ns(pid: u32) -> Option<u64> {
    let ticks_ns = cpu_ticks(pid)? * (1e9 / TICKS_PER_SECOND) as u64;
    let exact: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.ok()?.path().join("schedstat");
            let text = std::fs::read_to_string(path).ok()?;
            text.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Some(exact.max(ticks_ns))
}

/// `/proc/stat`'s machine-wide ticks.
#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    /// user + nice + system: time charged to processes.
    process: u64,
    /// irq + softirq: not charged to any process; on loopback this is mostly the receive
    /// half of TCP, done in softirq context.
    irq: u64,
    /// Taken by the hypervisor.
    steal: u64,
    /// idle + iowait.
    idle: u64,
    total: u64,
}

fn machine_ticks() -> Option<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // included in user.
    Some(MachineTicks {
        process: v.first()? + v.get(1)? + v.get(2)?,
        irq: v.get(5)? + v.get(6)?,
        steal: *v.get(7)?,
        idle: v.get(3)? + v.get(4)?,
        total: v.iter().take(8).sum(),
    })
}

/// CPU times at one moment: a server, its environments, this process (ns), the machine (ticks).
#[derive(Debug, Clone)]
pub(crate) struct CpuSample {
    server: u64,
    envs: HashMap<u32, (u64, String)>,
    me: u64,
    machine: MachineTicks,
}

pub(crate) fn cpu_sample(server: u32) -> CpuSample {
    let machine = machine_ticks().unwrap_or_default();
    CpuSample {
        server: cpu_ns(server).unwrap_or(0),
        envs: descendants(server)
            .iter()
            .filter_map(|p| Some((p.pid, (cpu_ns(p.pid)?, kind(p.pid)))))
            .collect(),
        me: cpu_ns(std::process::id()).unwrap_or(0),
        machine,
    }
}

/// Where the CPU went between two samples, in CPU-seconds.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CpuSplit {
    pub(crate) server_s: f64,
    /// Environments (function processes) below the server.
    pub(crate) envs_s: f64,
    /// `envs_s` by process [`kind`], largest first.
    pub(crate) envs_by_kind: Vec<(String, f64)>,
    /// The load generator (this process).
    pub(crate) client_s: f64,
    /// Other processes: other users' work, kernel threads.
    pub(crate) other_s: f64,
    /// Interrupt and softirq time (everyone's loopback networking, mostly).
    pub(crate) irq_s: f64,
    /// Stolen by the hypervisor.
    pub(crate) steal_s: f64,
    /// All cores together (wall time × cores).
    pub(crate) capacity_s: f64,
}

impl CpuSplit {
    pub(crate) fn between(a: &CpuSample, b: &CpuSample) -> CpuSplit {
        let s = |t: u64| t as f64 / TICKS_PER_SECOND;
        let ns = |t: u64| t as f64 / 1e9;
        let mut by_kind: HashMap<&str, u64> = HashMap::new();
        for (pid, (t, k)) in &b.envs {
            let before = a.envs.get(pid).map_or(0, |e| e.0);
            *by_kind.entry(k.as_str()).or_default() += t.saturating_sub(before);
        }
        let envs: u64 = by_kind.values().sum();
        let mut envs_by_kind: Vec<(String, f64)> = by_kind
            .into_iter()
            .map(|(k, t)| (k.to_string(), t as f64 / 1e9))
            .collect();
        envs_by_kind.sort_by(|x, y| y.1.total_cmp(&x.1));
        let server = b.server.saturating_sub(a.server);
        let me = b.me.saturating_sub(a.me);
        let (ma, mb) = (a.machine, b.machine);
        let process = s(mb.process.saturating_sub(ma.process));
        let ours = ns(server + envs + me);
        CpuSplit {
            server_s: ns(server),
            envs_s: ns(envs),
            envs_by_kind,
            client_s: ns(me),
            other_s: (process - ours).max(0.0),
            irq_s: s(mb.irq.saturating_sub(ma.irq)),
            steal_s: s(mb.steal.saturating_sub(ma.steal)),
            capacity_s: s(mb.total.saturating_sub(ma.total)),
        }
    }
}

/// Busy share of all CPUs over `window`, from `/proc/stat` (everything but idle and iowait),
/// in percent of the whole machine. Run before the servers start, it says how much of the
/// machine other work was already using.
pub(crate) fn cpu_busy_percent(window: std::time::Duration) -> Option<f64> {
    let t0 = machine_ticks()?;
    std::thread::sleep(window);
    let t1 = machine_ticks()?;
    let total = t1.total.checked_sub(t0.total)?;
    let idle = t1.idle.checked_sub(t0.idle)?;
    (total > 0).then(|| 100.0 * (total - idle) as f64 / total as f64)
}

/// Processes of one kind below a server, and their memory in bytes.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct KindMemory {
    pub(crate) kind: String,
    pub(crate) processes: usize,
    pub(crate) rss: u64,
    pub(crate) pss: u64,
}

/// Memory of a server's descendants, by [`kind`], largest RSS first.
pub(crate) fn tree_memory(root: u32) -> Vec<KindMemory> {
    let mut by: HashMap<String, KindMemory> = HashMap::new();
    for p in descendants(root) {
        let k = kind(p.pid);
        let e = by.entry(k.clone()).or_insert_with(|| KindMemory {
            kind: k,
            ..Default::default()
        });
        e.processes += 1;
        e.rss += rss(p.pid).unwrap_or(0);
        e.pss += pss(p.pid).unwrap_or(0);
    }
    let mut v: Vec<KindMemory> = by.into_values().collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.rss));
    v
}

/// What a process is, for grouping: its program's file name (`python3`, `node`, `bootstrap`,
/// `slirp4netns`), or for a re-executed server (`/proc/self/exe __jail`) its subcommand.
pub(crate) fn kind(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    kind_of(&raw)
}

fn kind_of(cmdline: &[u8]) -> String {
    let mut args = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let argv0 = args.next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or("").to_string();
    match args.next() {
        Some(sub) if sub.starts_with("__") => sub,
        _ if name.is_empty() => "(exited)".into(),
        _ => name,
    }
}

/// A process's command line, for messages.
pub(crate) fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether `p` is still that very process (same start time) and not yet dead.
pub(crate) fn still_running(p: &ProcInfo) -> bool {
    info(p.pid).is_some_and(|now| now.start == p.start && now.state != 'Z')
}

/// SIGKILLs the processes of `snapshot` that are still the same processes (same start time),
/// and the process groups they lead (environments of the process sandbox are group leaders).
/// Returns the command lines of those it killed.
pub(crate) fn kill_leftovers(snapshot: &[ProcInfo]) -> Vec<String> {
    let mut killed = Vec::new();
    for p in snapshot {
        // Gone, replaced by another process, or already dead and awaiting its reaper.
        if !still_running(p) {
            continue;
        }
        killed.push(format!("{} {}", p.pid, cmdline(p.pid)));
        let Some(pid) = Pid::from_raw(p.pid as i32) else {
            continue;
        };
        if p.pgrp == p.pid {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = kill_process(pid, Signal::KILL);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let text = "4242 (a) b (c) S 17 4242 17 0 -1 4194560 113 0 0 0 0 0 0 0 20 0 1 0 987654 2342912 160 18446744073709551615";
        let p = parse_stat(4242, text).expect("parses");
        assert_eq!((p.pid, p.ppid, p.pgrp, p.start), (4242, 17, 4242, 987654));
        assert_eq!(p.state, 'S');
    }

    #[test]
    fn processes_are_grouped_by_program_or_internal_subcommand() {
        assert_eq!(
            kind_of(b"/usr/bin/python3\0-S\0-B\0/var/runtime/bootstrap.py\0"),
            "python3"
        );
        assert_eq!(kind_of(b"/proc/self/exe\0__jail\0"), "__jail");
        assert_eq!(kind_of(b"/var/task/bootstrap\0"), "bootstrap");
        assert_eq!(kind_of(b""), "(exited)");
    }

    #[test]
    fn kb_fields_become_bytes() {
        let text = "Name:\tnimbus\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kb_field(text, "VmRSS"), Some(1024 * 1024));
        assert_eq!(kb_field(text, "VmSwap"), None);
        let rollup = "55d0-7ff [rollup]\nRss:    900 kB\nPss:    300 kB\nPss_Anon: 200 kB\n";
        assert_eq!(kb_field(rollup, "Pss"), Some(300 * 1024));
    }

    #[test]
    fn cpu_is_split_by_owner_and_the_rest_is_other() {
        const T: u64 = 10_000_000; // one tick, in ns
        let a = CpuSample {
            server: 100 * T,
            envs: HashMap::from([(7, (10 * T, "python3".into()))]),
            me: 50 * T,
            machine: MachineTicks {
                process: 1000,
                irq: 100,
                steal: 0,
                idle: 3900,
                total: 5000,
            },
        };
        // Environment 8 started inside the window: all of its time counts.
        let b = CpuSample {
            server: 200 * T,
            envs: HashMap::from([
                (7, (30 * T, "python3".into())),
                (8, (5 * T, "__jail".into())),
            ]),
            me: 80 * T,
            machine: MachineTicks {
                process: 1200,
                irq: 130,
                steal: 2,
                idle: 4068,
                total: 5400,
            },
        };
        let s = CpuSplit::between(&a, &b);
        assert_eq!(s.server_s, 1.0);
        assert_eq!(s.envs_s, 0.25);
        assert_eq!(
            s.envs_by_kind,
            vec![("python3".to_string(), 0.2), ("__jail".to_string(), 0.05)]
        );
        assert_eq!(s.client_s, 0.3);
        assert!((s.other_s - 0.45).abs() < 1e-9);
        assert_eq!(s.irq_s, 0.3);
        assert_eq!(s.steal_s, 0.02);
        assert_eq!(s.capacity_s, 4.0);
    }

    #[test]
    fn this_process_has_memory_a_parent_and_cpu_time() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {}
        assert!(cpu_ns(me).is_some_and(|ns| ns >= 10_000_000));
        assert!(rss(me).is_some_and(|b| b > 0));
        assert!(info(me).is_some_and(|p| p.ppid > 0));
    }
}
