//! `nimbus-bench`: the benchmark harness of issue 5. `cargo run --release -p nimbus-bench`
//! builds `nimbus` and the no-op function, starts `nimbus serve` on a free loopback port with a
//! temporary data directory, measures, prints a table and writes JSON to `bench/results/`.
//! See `docs/benchmarks.md` for what each number means.
//!
//! Module map:
//! - [`args`] — flags and the run sizes (`--quick` or full) that bound every loop;
//! - [`artifacts`] — building / finding the binaries;
//! - [`server`] — the processes a run starts (`nimbus serve`, the echo floor) and their cleanup;
//! - [`client`] — keep-alive hyper connections, SigV4 signing, the Lambda calls used;
//! - [`functions`] — the deployment packages (no-ops per runtime, a Python sleeper);
//! - [`sections`] — warm, throughput, enqueue, cold, scale, density;
//! - [`stats`], [`procfs`] — percentiles; memory and process trees from `/proc`;
//! - [`report`], [`table`] — targets and JSON; the printed tables;
//! - [`echo`] — the echo floor server (`nimbus-bench echo-server`, internal).

mod args;
mod artifacts;
mod client;
mod echo;
mod functions;
mod procfs;
mod report;
mod sections;
mod server;
mod stats;
mod table;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::args::{BenchArgs, Cli, Command, ENQUEUE_CLIENTS, Section, THROUGHPUT_CLIENTS};
use crate::artifacts::Binaries;
use crate::functions::Packages;
use crate::report::{Machine, Meta, Report};
use crate::server::{NimbusServer, ServerOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::EchoServer { idle_poll }) = cli.command {
        return match echo::run(idle_poll) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo server: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match bench(cli.bench) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nimbus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    raise_fd_limit();
    let bins = artifacts::locate(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        // One worker per core, explicitly: TOKIO_WORKER_THREADS in the environment is meant
        // for the server under test (it inherits it), not for the harness.
        .worker_threads(cores())
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        tokio::select! {
            report = run(&args, &bins) => report.map(Some),
            () = interrupted() => Ok(None),
        }
    });
    // Dropping the run future above stopped every server it had started.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let Some(mut report) = report? else {
        eprintln!("nimbus-bench: interrupted; servers stopped, nothing written");
        return Ok(ExitCode::from(130));
    };
    report.check_targets();
    print!("{}", report.render());
    if let Some(e) = &report.enqueue {
        print!("{}", sections::enqueue::render(e));
    }
    let path = match (&args.json, args.quick) {
        (Some(p), _) => Some(p.clone()),
        (None, false) => Some(report::default_json_path(
            &artifacts::workspace_root().join("bench/results"),
            &report.meta,
        )),
        (None, true) => None,
    };
    if let Some(path) = path {
        report.write_json(&path)?;
        println!("results written to {}", path.display());
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The machine's cores (the default of tokio's multi-threaded runtime).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Scale-out opens 500 client connections and the server a listener and pipes per
/// environment: lift the soft descriptor limit to the hard one (children inherit it).
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

async fn run(args: &BenchArgs, bins: &Binaries) -> anyhow::Result<Report> {
    let _ = crate::server::CPU_LIMIT.set(args.cpu_limit.clone());
    let _ = crate::server::PYTHON_ZYGOTE.set(args.python_zygote.clone());
    let _ = crate::server::IDLE_POLL.set(args.idle_poll.clone());
    let idle_poll = server::idle_poll_effective(args.idle_poll.as_deref());
    let _ = crate::server::FLOOR_IDLE_POLL.set(idle_poll);
    let t_run = Instant::now();
    let sections = args.sections();
    let sizes = args.sizes();
    let (commit, dirty) = report::git_state(&artifacts::workspace_root());
    let mut report = Report {
        meta: Meta {
            started: nimbus::model::time::iso8601_z(nimbus::model::time::now_ms()),
            commit,
            dirty,
            sandbox: args.sandbox.as_str().into(),
            quick: args.quick,
            sections: sections
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect(),
            runtimes: args.runtimes(),
            memory_mb: args.memory_mb,
            cpu_limit: args.cpu_limit.clone().unwrap_or_else(|| "share".into()),
            python_zygote: args.python_zygote.clone().unwrap_or_else(|| "on".into()),
            idle_poll_mode: args.idle_poll.clone().unwrap_or_else(|| "auto".into()),
            idle_poll,
            sizes,
            machine: Machine::probe(),
            nimbus_bin: bins.nimbus.clone(),
            load_average_start: report::load_average(),
            background_cpu_percent: tokio::task::spawn_blocking(|| {
                procfs::cpu_busy_percent(std::time::Duration::from_secs(1))
            })
            .await
            .ok()
            .flatten(),
            load_average_end: String::new(),
            section_seconds: Vec::new(),
            total_seconds: 0.0,
        },
        warm: None,
        throughput: None,
        enqueue: None,
        cold: None,
        scale: None,
        density: None,
        targets: Vec::new(),
        errors: Vec::new(),
    };
    let packages = Packages::build(&bins.noop, args.memory_mb)?;
    let main_sections = [
        Section::Warm,
        Section::Throughput,
        Section::Enqueue,
        Section::Cold,
        Section::Scale,
    ];
    if main_sections.iter().any(|s| sections.contains(s)) {
        let opts = ServerOptions {
            label: "main",
            sandbox: args.sandbox,
            keep_alive_secs: None,
        };
        match NimbusServer::start(&bins.nimbus, &opts).await {
            Ok(main) => run_on_main(args, bins, &packages, &main, &mut report).await,
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    if sections.contains(&Section::Density) {
        let t = Instant::now();
        let budget = args.memory_budget_mib * 1024 * 1024;
        match sections::density::run(&bins.nimbus, &packages, args.sandbox, budget, &sizes).await {
            Ok(d) => report.density = Some(d),
            Err(e) => report.errors.push(format!("density: {e:#}")),
        }
        report
            .meta
            .section_seconds
            .push(("density".into(), t.elapsed().as_secs_f64()));
    }
    report.meta.total_seconds = t_run.elapsed().as_secs_f64();
    report.meta.load_average_end = report::load_average();
    Ok(report)
}

/// The sections that share the main server (default keep-alive).
async fn run_on_main(
    args: &BenchArgs,
    bins: &Binaries,
    packages: &Packages,
    main: &NimbusServer,
    report: &mut Report,
) {
    let sections = args.sections();
    let sizes = args.sizes();
    let ep = main.endpoint();
    let fail = |what: &str, e: anyhow::Error| {
        format!(
            "{what}: {e:#}\n  last lines of the server log:\n{}",
            main.log_tail(10)
        )
    };
    let baseline = main.processes();
    let mut noops = Vec::new();
    if sections.contains(&Section::Warm) || sections.contains(&Section::Throughput) {
        for rt in args.runtimes() {
            let name = format!("noop-{}", rt.label());
            match ep.create_function(&packages.noop(rt, &name)).await {
                Ok(()) => noops.push((rt, name)),
                Err(e) => report.errors.push(fail("creating the no-op functions", e)),
            }
        }
    }
    if sections.contains(&Section::Warm) && !noops.is_empty() {
        let t = Instant::now();
        match sections::warm::run(ep, main.pid(), &noops, &sizes).await {
            Ok(w) => report.warm = Some(w),
            Err(e) => report.errors.push(fail("warm", e)),
        }
        report
            .meta
            .section_seconds
            .push(("warm".into(), t.elapsed().as_secs_f64()));
    }
    if sections.contains(&Section::Throughput) && !noops.is_empty() {
        let t = Instant::now();
        match sections::throughput::run(ep, main.pid(), &noops, &THROUGHPUT_CLIENTS, &sizes).await {
            Ok(rows) => report.throughput = Some(rows),
            Err(e) => report.errors.push(fail("throughput", e)),
        }
        report
            .meta
            .section_seconds
            .push(("throughput".into(), t.elapsed().as_secs_f64()));
    }
    // Retire their environments (up to 128 per runtime) before measuring cold starts, and
    // let their processes finish exiting: hundreds of exits overlap the next measurements.
    for (_, name) in &noops {
        if let Err(e) = ep.delete_function(name).await {
            report.errors.push(fail("deleting the no-op functions", e));
        }
    }
    if !noops.is_empty()
        && let Err(e) = main
            .settle(baseline, std::time::Duration::from_secs(30))
            .await
    {
        report
            .errors
            .push(fail("retiring the no-op functions' environments", e));
    }
    // No environments: the function takes no invocations (reserved concurrency 0).
    if sections.contains(&Section::Enqueue) {
        let t = Instant::now();
        match sections::enqueue::run(ep, packages, &ENQUEUE_CLIENTS, &sizes).await {
            Ok(r) => report.enqueue = Some(r),
            Err(e) => report.errors.push(fail("enqueue", e)),
        }
        report
            .meta
            .section_seconds
            .push(("enqueue".into(), t.elapsed().as_secs_f64()));
    }
    if sections.contains(&Section::Cold) {
        let t = Instant::now();
        let r = sections::cold::run(
            main,
            &bins.nimbus,
            &bins.noop,
            packages,
            &args.runtimes(),
            args.sandbox,
            &sizes,
        )
        .await;
        match r {
            Ok(c) => report.cold = Some(c),
            Err(e) => report.errors.push(fail("cold", e)),
        }
        report
            .meta
            .section_seconds
            .push(("cold".into(), t.elapsed().as_secs_f64()));
    }
    if sections.contains(&Section::Scale) {
        let t = Instant::now();
        match sections::scale::run(main, packages, &sizes).await {
            Ok(rows) => report.scale = Some(rows),
            Err(e) => report.errors.push(fail("scale", e)),
        }
        report
            .meta
            .section_seconds
            .push(("scale".into(), t.elapsed().as_secs_f64()));
    }
}
