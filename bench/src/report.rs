//! A run's results: the machine and build it came from, each section's numbers, the issue-5
//! targets marked met or missed, and the JSON file in `bench/results/`. The printed table is
//! [`crate::table`]'s.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::functions::Runtime;
use crate::sections::cold::ColdResults;
use crate::sections::density::DensityResults;
use crate::sections::enqueue::EnqueueResults;
use crate::sections::scale::ScaleRow;
use crate::sections::throughput::ThroughputRow;
use crate::sections::warm::WarmResults;
use crate::table::round;

#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) nproc: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
    pub(crate) mem_total_bytes: u64,
    /// How an idle CPU waits: the cpuidle driver and, for KVM's `haltpoll`, whether the guest
    /// polls before halting. A halted vCPU costs a VM exit and a host wake-up per message,
    /// which dominates a warm invoke's latency on an idle VM (docs/benchmarks.md).
    pub(crate) cpu_idle: String,
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub(crate) fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_string()),
            mem_total_bytes: crate::procfs::kb_field(&meminfo, "MemTotal").unwrap_or(0),
            cpu_idle: nimbus_sys::cpuidle::CpuIdle::read()
                .map_or_else(|| "unknown".into(), |i| i.to_string()),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Meta {
    /// UTC, ISO 8601.
    pub(crate) started: String,
    pub(crate) commit: String,
    /// The working tree had changes not in `commit`.
    pub(crate) dirty: bool,
    pub(crate) sandbox: String,
    pub(crate) quick: bool,
    pub(crate) sections: Vec<String>,
    pub(crate) runtimes: Vec<Runtime>,
    /// MemorySize of the functions (`--memory-mb`).
    pub(crate) memory_mb: u32,
    /// The servers' `--cpu-limit` (`share`, the server's default, unless `--cpu-limit`).
    pub(crate) cpu_limit: String,
    /// The servers' `--python-zygote` (`on`, the server's default, unless `--python-zygote`).
    pub(crate) python_zygote: String,
    /// The servers' `--idle-poll` (`auto`, the server's default, unless `--idle-poll`).
    pub(crate) idle_poll_mode: String,
    /// Whether the servers, and the echo floor with them, polled idle CPUs while serving.
    pub(crate) idle_poll: bool,
    /// The counts and time caps the sections ran with.
    pub(crate) sizes: crate::args::Sizes,
    pub(crate) machine: Machine,
    pub(crate) nimbus_bin: PathBuf,
    /// `/proc/loadavg` (1, 5, 15 min) when the run started and ended: other work on the
    /// machine shares the cores with the server and the load generator.
    pub(crate) load_average_start: String,
    /// CPU busy (all cores, %) during 1 s before the run, before any server started.
    pub(crate) background_cpu_percent: Option<f64>,
    pub(crate) load_average_end: String,
    /// Wall time of each section, s.
    pub(crate) section_seconds: Vec<(String, f64)>,
    pub(crate) total_seconds: f64,
}

/// One issue-5 target, checked.
#[derive(Debug, Serialize)]
pub(crate) struct Check {
    pub(crate) measure: String,
    pub(crate) target: String,
    pub(crate) measured: Option<String>,
    /// `None`: not measured in this run.
    pub(crate) met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) meta: Meta,
    pub(crate) warm: Option<WarmResults>,
    pub(crate) throughput: Option<Vec<ThroughputRow>>,
    pub(crate) enqueue: Option<EnqueueResults>,
    pub(crate) cold: Option<ColdResults>,
    pub(crate) scale: Option<Vec<ScaleRow>>,
    pub(crate) density: Option<DensityResults>,
    pub(crate) targets: Vec<Check>,
    /// Sections that could not run, with the reason (and the server's last log lines).
    pub(crate) errors: Vec<String>,
}

fn check(
    measure: &str,
    target: &str,
    value: Option<f64>,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> Check {
    Check {
        measure: measure.into(),
        target: target.into(),
        measured: value.map(|v| format!("{} {unit}", round(v))),
        met: value.map(ok),
    }
}

impl Report {
    /// Fills `targets` from the results (issue 5's table).
    pub(crate) fn check_targets(&mut self) {
        let mut t = Vec::new();
        let warm = |rt: &str| self.warm.as_ref().and_then(|w| w.row(rt));
        let p = warm("provided");
        t.push(check(
            "warm invoke, provided no-op, p50",
            "≤ 150 µs",
            p.and_then(|r| r.latency.as_ref()).map(|s| s.p50_us),
            "µs",
            |v| v <= 150.0,
        ));
        t.push(check(
            "warm invoke, provided no-op, p50 / echo floor p50",
            "≤ 5×",
            p.and_then(|r| r.p50_over_floor),
            "×",
            |v| v <= 5.0,
        ));
        for rt in Runtime::ALL {
            t.push(check(
                &format!("warm invoke, {} no-op, p99", rt.label()),
                "≤ 1 ms",
                warm(rt.label())
                    .and_then(|r| r.latency.as_ref())
                    .map(|s| s.p99_us),
                "µs",
                |v| v <= 1000.0,
            ));
        }
        let tput = |rt: Runtime, c: usize| {
            self.throughput
                .as_ref()
                .and_then(|rows| {
                    rows.iter()
                        .find(|r| r.target == rt.label() && r.clients == c)
                })
                .map(|r| r.per_second)
        };
        t.push(check(
            "throughput, provided no-op, 32 clients",
            "≥ 10,000 /s",
            tput(Runtime::Provided, 32),
            "/s",
            |v| v >= 10_000.0,
        ));
        t.push(check(
            "throughput, Python no-op, 32 clients",
            "≥ 3,000 /s",
            tput(Runtime::Python, 32),
            "/s",
            |v| v >= 3_000.0,
        ));
        t.push(check(
            "durable async enqueue, 32 clients",
            "≥ 5,000 /s",
            self.enqueue
                .as_ref()
                .and_then(|e| e.rows.iter().find(|r| r.clients == 32))
                .map(|r| r.per_second),
            "/s",
            |v| v >= 5_000.0,
        ));
        for (rt, limit) in [
            (Runtime::Provided, 10.0),
            (Runtime::Python, 25.0),
            (Runtime::Node, 60.0),
        ] {
            let row = self.cold.as_ref().and_then(|c| c.row(rt));
            t.push(check(
                &format!("cold start, {} (client-observed, after create)", rt.label()),
                &format!("≤ {limit} ms"),
                row.and_then(|r| r.after_create.median_ms()),
                "ms",
                |v| v <= limit,
            ));
            t.push(check(
                &format!("cold start, {} (client-observed, after reap)", rt.label()),
                &format!("≤ {limit} ms"),
                row.and_then(|r| r.after_reap.median_ms()),
                "ms",
                |v| v <= limit,
            ));
        }
        for row in self.scale.iter().flatten() {
            t.push(check(
                &format!("environment creation rate, Python, burst of {}", row.burst),
                "≥ 200 /s",
                row.envs_per_second,
                "/s",
                |v| v >= 200.0,
            ));
        }
        t.push(check(
            "server memory per idle environment",
            "≤ 1 MB",
            self.density
                .as_ref()
                .and_then(|d| d.server_bytes_per_env)
                .map(|b| b / 1e6),
            "MB",
            |v| v <= 1.0,
        ));
        self.targets = t;
    }

    pub(crate) fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")?;
        Ok(())
    }
}

/// `bench/results/DATE-COMMIT[-dirty][-SANDBOX][-MEMmb][-quota][-nozygote][-noidlepoll][-N].json`, never
/// overwriting an earlier run.
pub(crate) fn default_json_path(results: &Path, meta: &Meta) -> PathBuf {
    let date = meta.started.get(..10).unwrap_or("unknown-date");
    let mut stem = format!("{date}-{}", meta.commit);
    if meta.dirty {
        stem.push_str("-dirty");
    }
    if meta.sandbox != "process" {
        stem.push('-');
        stem.push_str(&meta.sandbox);
    }
    if meta.memory_mb != 128 {
        stem.push_str(&format!("-{}mb", meta.memory_mb));
    }
    if meta.cpu_limit != "share" {
        stem.push('-');
        stem.push_str(&meta.cpu_limit);
    }
    if meta.sandbox == "jail" && meta.python_zygote == "off" {
        stem.push_str("-nozygote");
    }
    if meta.idle_poll_mode == "off" {
        stem.push_str("-noidlepoll");
    }
    let mut path = results.join(format!("{stem}.json"));
    let mut n = 2;
    while path.exists() {
        path = results.join(format!("{stem}-{n}.json"));
        n += 1;
    }
    path
}

/// The commit the server was built from, and whether the tree differs from it.
pub(crate) fn git_state(root: &Path) -> (String, bool) {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (commit, dirty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(started: &str, dirty: bool, sandbox: &str) -> Meta {
        Meta {
            started: started.into(),
            commit: "d8de6e7abcde".into(),
            dirty,
            sandbox: sandbox.into(),
            quick: false,
            sections: vec![],
            runtimes: vec![],
            memory_mb: 128,
            cpu_limit: "share".into(),
            python_zygote: "on".into(),
            idle_poll_mode: "auto".into(),
            idle_poll: true,
            sizes: crate::args::Sizes::QUICK,
            machine: Machine {
                nproc: 2,
                cpu_model: "x".into(),
                kernel: "k".into(),
                mem_total_bytes: 0,
                cpu_idle: "none".into(),
            },
            nimbus_bin: PathBuf::new(),
            load_average_start: String::new(),
            background_cpu_percent: None,
            load_average_end: String::new(),
            section_seconds: vec![],
            total_seconds: 0.0,
        }
    }

    #[test]
    fn results_are_named_by_date_and_commit_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = meta("2026-11-25T18:00:00Z", true, "jail");
        let first = default_json_path(dir.path(), &m);
        assert_eq!(
            first.file_name().and_then(|n| n.to_str()),
            Some("2026-11-25-d8de6e7abcde-dirty-jail.json")
        );
        std::fs::write(&first, "{}").expect("write");
        let second = default_json_path(dir.path(), &m);
        assert!(second.ends_with("2026-11-25-d8de6e7abcde-dirty-jail-2.json"));
        let clean = default_json_path(dir.path(), &meta("2026-11-25T18:00:00Z", false, "process"));
        assert!(clean.ends_with("2026-11-25-d8de6e7abcde.json"));
        let mut exec = meta("2026-11-25T18:00:00Z", false, "jail");
        exec.python_zygote = "off".into();
        let exec = default_json_path(dir.path(), &exec);
        assert!(exec.ends_with("2026-11-25-d8de6e7abcde-jail-nozygote.json"));
        let mut halting = meta("2026-11-25T18:00:00Z", false, "jail");
        halting.idle_poll_mode = "off".into();
        let halting = default_json_path(dir.path(), &halting);
        assert!(halting.ends_with("2026-11-25-d8de6e7abcde-jail-noidlepoll.json"));
    }

    #[test]
    fn unmeasured_targets_are_neither_met_nor_missed() {
        let mut r = Report {
            meta: meta("2026-11-25T18:00:00Z", false, "process"),
            warm: None,
            throughput: None,
            enqueue: None,
            cold: None,
            scale: None,
            density: None,
            targets: vec![],
            errors: vec![],
        };
        r.check_targets();
        assert!(!r.targets.is_empty());
        assert!(
            r.targets
                .iter()
                .all(|c| c.met.is_none() && c.measured.is_none())
        );
    }
}
