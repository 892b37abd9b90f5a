//! The command line, and the run sizes it implies (`--quick` or the full run).
//!
//! Every request loop of every section is bounded both in count and in time by a [`Sizes`]
//! value chosen here, so the default run stays within ~5 minutes on 2 cores and `--quick`
//! within ~1 minute. Nothing here starts processes or touches the network.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::functions::Runtime;

/// Benchmarks a Nimbus server started for the run: warm invoke latency against the loopback
/// floor, throughput, durable async enqueue, cold starts, scale-out and density. Prints a
/// table, writes JSON.
#[derive(Debug, Parser)]
#[command(name = "nimbus-bench", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Internal: the bare hyper echo server the warm section measures as its floor. It runs as
    /// a separate process, like `nimbus serve`, so both sides of the comparison pay the same
    /// process and scheduler costs. Prints `listening on ADDR` and serves until killed.
    #[command(hide = true)]
    EchoServer {
        /// Poll idle CPUs while serving, as `nimbus serve --idle-poll` does, so that the
        /// floor and the server see the same idle CPUs.
        #[arg(long)]
        idle_poll: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// A short run (under a minute): fewer samples and repetitions. Its results are not
    /// written to bench/results unless --json is given.
    #[arg(long)]
    pub(crate) quick: bool,
    /// The sandbox the server runs environments in (the server's default: the jail).
    #[arg(long, value_enum, default_value_t = SandboxArg::Jail)]
    pub(crate) sandbox: SandboxArg,
    /// Run only these sections (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) only: Vec<Section>,
    /// Measure only these runtimes in the warm, throughput and cold sections (comma-separated;
    /// handy when profiling one of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) runtimes: Vec<Runtime>,
    /// Write the JSON results here instead of
    /// bench/results/DATE-COMMIT[-dirty][-SANDBOX][-MEMmb][-N].json.
    #[arg(long, value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,
    /// Density: the memory budget (total RSS of the server and its environments) to fill.
    #[arg(long, value_name = "MIB", default_value_t = 4096)]
    pub(crate) memory_budget_mib: u64,
    /// MemorySize of every function the harness creates. Lambda's default and minimum, 128,
    /// is what users get; in the jail it also sets the CPU share (one vCPU at 1769), so 1769
    /// separates the platform's overhead from quota throttling under `--cpu-limit quota`.
    #[arg(long, value_name = "MB", default_value_t = 128)]
    pub(crate) memory_mb: u32,
    /// `--cpu-limit` of every server (the server's default: share). `quota` caps each function
    /// at its memory-proportional CPU share, as Lambda does; results get a `-quota` suffix.
    #[arg(long, value_name = "share|quota", value_parser = ["share", "quota"])]
    pub(crate) cpu_limit: Option<String>,
    /// `--python-zygote` of every server (the server's default: on). `off` execs a fresh
    /// interpreter per jailed Python environment; results get a `-nozygote` suffix.
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    pub(crate) python_zygote: Option<String>,
    /// `--idle-poll` of every server (the server's default: auto, polling where idle vCPUs
    /// halt without polling). The echo floor polls whenever the servers do; `off` gives
    /// results a `-noidlepoll` suffix.
    #[arg(long, value_name = "auto|on|off", value_parser = ["auto", "on", "off"])]
    pub(crate) idle_poll: Option<String>,
    /// Use this `nimbus` binary instead of building one with cargo.
    #[arg(long, value_name = "PATH")]
    pub(crate) nimbus_bin: Option<PathBuf>,
    /// Use this no-op `provided` bootstrap instead of building `nimbus-bench-noop`.
    #[arg(long, value_name = "PATH")]
    pub(crate) noop_bin: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SandboxArg {
    Process,
    Jail,
}

impl SandboxArg {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SandboxArg::Process => "process",
            SandboxArg::Jail => "jail",
        }
    }
}

/// The sections, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Section {
    Warm,
    Throughput,
    Enqueue,
    Cold,
    #[value(alias = "scale-out", alias = "scaleout")]
    Scale,
    Density,
}

impl BenchArgs {
    /// The sections to run: all of them unless `--only` names some.
    pub(crate) fn sections(&self) -> BTreeSet<Section> {
        if self.only.is_empty() {
            Section::value_variants().iter().copied().collect()
        } else {
            self.only.iter().copied().collect()
        }
    }

    /// The runtimes to measure: all three unless `--runtimes` names some.
    pub(crate) fn runtimes(&self) -> Vec<Runtime> {
        Runtime::ALL
            .into_iter()
            .filter(|r| self.runtimes.is_empty() || self.runtimes.contains(r))
            .collect()
    }

    pub(crate) fn sizes(&self) -> Sizes {
        if self.quick {
            Sizes::QUICK
        } else {
            Sizes::FULL
        }
    }
}

/// How much each section does. Every loop stops at its count or its time, whichever is first.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Sizes {
    /// Warm: sequential invokes per function (and for the floor), and the time cap on them.
    pub(crate) warm_requests: usize,
    pub(crate) warm_time: Duration,
    /// Warm: unmeasured invokes first (the first one starts the environment).
    pub(crate) warm_up_requests: usize,
    /// Warm: the floor and the functions take turns in this many rounds.
    pub(crate) warm_rounds: usize,
    /// Throughput: the measured window per (function, clients) cell.
    pub(crate) throughput_window: Duration,
    /// Throughput: the warm-up before each window lasts at least this, and until every client
    /// has had an answer (so every environment exists), but never longer than the cap.
    pub(crate) throughput_warm_up: Duration,
    pub(crate) throughput_warm_up_cap: Duration,
    /// Durable enqueue: the measured window per clients level.
    pub(crate) enqueue_window: Duration,
    /// Cold start: repetitions per runtime and per kind (after create, after reap).
    pub(crate) cold_reps: usize,
    /// Scale-out: burst sizes of concurrent first invokes.
    pub(crate) scale_bursts: &'static [usize],
    /// Density: environments added per step, the most to create, and the section's time cap.
    pub(crate) density_step: usize,
    pub(crate) density_max_envs: usize,
    pub(crate) density_time: Duration,
}

/// Concurrency levels of the throughput section (issue 5).
pub(crate) const THROUGHPUT_CLIENTS: [usize; 4] = [1, 8, 32, 128];

/// Concurrency levels of the durable enqueue section (issue 6).
pub(crate) const ENQUEUE_CLIENTS: [usize; 3] = [8, 32, 64];

impl Sizes {
    pub(crate) const FULL: Sizes = Sizes {
        warm_requests: 20_000,
        warm_time: Duration::from_secs(6),
        warm_up_requests: 300,
        warm_rounds: 10,
        throughput_window: Duration::from_secs(2),
        throughput_warm_up: Duration::from_millis(500),
        throughput_warm_up_cap: Duration::from_secs(30),
        enqueue_window: Duration::from_secs(2),
        cold_reps: 15,
        scale_bursts: &[100, 500],
        density_step: 100,
        density_max_envs: 1000,
        density_time: Duration::from_secs(90),
    };

    pub(crate) const QUICK: Sizes = Sizes {
        warm_requests: 3_000,
        warm_time: Duration::from_millis(1500),
        warm_up_requests: 100,
        warm_rounds: 3,
        throughput_window: Duration::from_millis(500),
        throughput_warm_up: Duration::from_millis(200),
        throughput_warm_up_cap: Duration::from_secs(15),
        enqueue_window: Duration::from_secs(1),
        cold_reps: 10,
        scale_bursts: &[100],
        density_step: 50,
        density_max_envs: 200,
        density_time: Duration::from_secs(20),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nimbus-bench").chain(args.iter().copied()))
            .expect("valid arguments")
    }

    #[test]
    fn defaults_run_everything_on_the_jail_as_the_server_does() {
        let cli = parse(&[]);
        assert!(cli.command.is_none());
        assert_eq!(cli.bench.sandbox, SandboxArg::Jail);
        assert_eq!(cli.bench.sections().len(), 6);
        assert_eq!(cli.bench.memory_budget_mib, 4096);
        assert_eq!(cli.bench.memory_mb, 128);
        assert!(!cli.bench.quick);
        assert_eq!(cli.bench.sizes().scale_bursts, &[100, 500]);
        assert_eq!(cli.bench.runtimes(), Runtime::ALL.to_vec());
    }

    #[test]
    fn runtimes_keep_their_canonical_order() {
        let cli = parse(&["--runtimes", "node,provided"]);
        assert_eq!(cli.bench.runtimes(), vec![Runtime::Provided, Runtime::Node]);
    }

    #[test]
    fn only_takes_a_comma_separated_list_with_aliases() {
        let cli = parse(&["--only", "warm,scale-out", "--quick", "--sandbox", "jail"]);
        let s = cli.bench.sections();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![Section::Warm, Section::Scale]
        );
        assert_eq!(cli.bench.sandbox, SandboxArg::Jail);
        assert_eq!(cli.bench.sizes().scale_bursts, &[100]);
    }

    #[test]
    fn unknown_sections_are_rejected() {
        let err = Cli::try_parse_from(["nimbus-bench", "--only", "warm,tepid"]);
        assert!(err.is_err());
    }

    #[test]
    fn the_echo_server_is_a_subcommand() {
        let cli = parse(&["echo-server"]);
        assert!(matches!(
            cli.command,
            Some(Command::EchoServer { idle_poll: false })
        ));
        let cli = parse(&["echo-server", "--idle-poll"]);
        assert!(matches!(
            cli.command,
            Some(Command::EchoServer { idle_poll: true })
        ));
    }

    #[test]
    fn quick_runs_are_shorter_in_every_dimension() {
        let (q, f) = (Sizes::QUICK, Sizes::FULL);
        assert!(q.warm_requests < f.warm_requests && q.warm_time < f.warm_time);
        assert!(q.throughput_window < f.throughput_window);
        assert!(q.enqueue_window < f.enqueue_window);
        assert!(
            q.cold_reps >= 10,
            "issue 5 asks for medians over at least 10"
        );
        assert!(q.density_max_envs < f.density_max_envs && q.density_time < f.density_time);
    }
}
