//! Section 3, cold start: the client-observed latency of an invoke that has to start an
//! environment, per runtime, and the `Init Duration` the server wrote in its REPORT line; and,
//! in the same run, the floor — the bare process start of the same interpreter or binary.
//!
//! Two kinds of cold start, `cold_reps` of each per runtime, runtimes interleaved:
//! - **after create**: CreateFunction of a new function (not timed), then its first invoke;
//! - **after reap**: on a second server started with `--keep-alive-secs 1`, each function is
//!   invoked once, the harness waits until `/nimbus/status` shows no idle environment left
//!   (the reaper destroyed them), then invokes each again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::args::{SandboxArg, Sizes};
use crate::client::{Conn, Endpoint};
use crate::functions::{Packages, Runtime};
use crate::server::{NimbusServer, ServerOptions};
use crate::stats::median;

/// The reaping server's keep-alive.
const REAP_KEEP_ALIVE_S: u64 = 1;
/// How long to wait for the reaper (it runs every keep-alive / 4, so ~1.25 s is enough).
const REAP_WAIT_CAP: Duration = Duration::from_secs(20);
/// A cold invoke slower than this is a failure (Lambda's init limit is 10 s).
const INVOKE_CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Serialize)]
pub(crate) struct ColdSamples {
    /// Client-observed latency of each cold invoke, ms.
    pub(crate) latency_ms: Vec<f64>,
    /// Init Duration of each from its REPORT line, ms.
    pub(crate) init_ms: Vec<f64>,
    pub(crate) errors: Vec<String>,
}

impl ColdSamples {
    pub(crate) fn median_ms(&self) -> Option<f64> {
        median(&self.latency_ms)
    }

    pub(crate) fn median_init_ms(&self) -> Option<f64> {
        median(&self.init_ms)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ColdRow {
    pub(crate) runtime: Runtime,
    pub(crate) after_create: ColdSamples,
    pub(crate) after_reap: ColdSamples,
    /// Median CreateFunction latency, ms (not part of the cold start; for reference).
    pub(crate) create_ms: Option<f64>,
    /// The process-start floor of this runtime's interpreter/binary.
    pub(crate) floor: Floor,
}

#[derive(Debug, Serialize)]
pub(crate) struct Floor {
    pub(crate) command: String,
    pub(crate) samples_ms: Vec<f64>,
}

impl Floor {
    pub(crate) fn median_ms(&self) -> Option<f64> {
        median(&self.samples_ms)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ColdResults {
    pub(crate) rows: Vec<ColdRow>,
    /// Extra floors (the Python runtime's own flags), for the analysis.
    pub(crate) extra_floors: Vec<Floor>,
    pub(crate) reap_method: String,
}

impl ColdResults {
    pub(crate) fn row(&self, runtime: Runtime) -> Option<&ColdRow> {
        self.rows.iter().find(|r| r.runtime == runtime)
    }
}

pub(crate) async fn run(
    main: &NimbusServer,
    nimbus_bin: &Path,
    noop_bin: &Path,
    packages: &Packages,
    runtimes: &[Runtime],
    sandbox: SandboxArg,
    sizes: &Sizes,
) -> anyhow::Result<ColdResults> {
    let reps = sizes.cold_reps;
    let (floors, extra_floors) = floors(noop_bin, reps).await?;
    let floors: Vec<Floor> = Runtime::ALL
        .into_iter()
        .zip(floors)
        .filter(|(rt, _)| runtimes.contains(rt))
        .map(|(_, f)| f)
        .collect();

    // After create, on the main server.
    let ep = main.endpoint();
    let mut after_create: Vec<ColdSamples> = runtimes.iter().map(|_| Default::default()).collect();
    let mut create_ms: Vec<Vec<f64>> = vec![Vec::new(); runtimes.len()];
    let mut conn = Conn::open(ep.addr).await?;
    let mut created = Vec::new();
    let mut measured = Vec::new();
    for i in 0..reps {
        for (k, rt) in runtimes.iter().enumerate() {
            let name = format!("cold-{}-{i}", rt.label());
            let t0 = Instant::now();
            ep.create_function(&packages.noop(*rt, &name)).await?;
            create_ms[k].push(ms(t0.elapsed()));
            created.push(name.clone());
            match cold_invoke(ep, &mut conn, &name).await {
                Ok((latency, id)) => {
                    after_create[k].latency_ms.push(latency);
                    measured.push((k, name, id));
                }
                Err(e) => after_create[k].errors.push(format!("{name}: {e:#}")),
            }
        }
    }
    collect_init(ep, &measured, &mut after_create).await;
    for name in &created {
        ep.delete_function(name).await?;
    }
    drop(conn);

    // After reap, on a server that reaps after one second.
    let after_reap = after_reap(nimbus_bin, packages, runtimes, sandbox, reps).await?;

    let rows = runtimes
        .iter()
        .zip(after_create)
        .zip(after_reap)
        .zip(create_ms)
        .zip(floors)
        .map(|((((rt, ac), ar), c), floor)| ColdRow {
            runtime: *rt,
            after_create: ac,
            after_reap: ar,
            create_ms: median(&c),
            floor,
        })
        .collect();
    Ok(ColdResults {
        rows,
        extra_floors,
        reap_method: format!(
            "a second server with --keep-alive-secs {REAP_KEEP_ALIVE_S}: each function invoked once, \
             then invoked again once /nimbus/status showed no idle environment"
        ),
    })
}

async fn after_reap(
    nimbus_bin: &Path,
    packages: &Packages,
    runtimes: &[Runtime],
    sandbox: SandboxArg,
    reps: usize,
) -> anyhow::Result<Vec<ColdSamples>> {
    let opts = ServerOptions {
        label: "reap",
        sandbox,
        keep_alive_secs: Some(REAP_KEEP_ALIVE_S),
    };
    let server = NimbusServer::start(nimbus_bin, &opts).await?;
    let ep = server.endpoint();
    let mut out: Vec<ColdSamples> = runtimes.iter().map(|_| Default::default()).collect();
    let mut names = Vec::new();
    for i in 0..reps {
        for (k, rt) in runtimes.iter().enumerate() {
            let name = format!("reap-{}-{i}", rt.label());
            ep.create_function(&packages.noop(*rt, &name)).await?;
            names.push((k, name));
        }
    }
    let mut conn = Conn::open(ep.addr).await?;
    for (k, name) in &names {
        if let Err(e) = cold_invoke(ep, &mut conn, name).await {
            out[*k].errors.push(format!("{name} (first invoke): {e:#}"));
        }
    }
    let deadline = Instant::now() + REAP_WAIT_CAP;
    loop {
        let idle: u64 = ep.idle_environments().await?.iter().map(|(_, n)| n).sum();
        if idle == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{idle} environments still idle {REAP_WAIT_CAP:?} after a 1 s keep-alive");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut measured = Vec::new();
    for (k, name) in &names {
        match cold_invoke(ep, &mut conn, name).await {
            Ok((latency, id)) => {
                out[*k].latency_ms.push(latency);
                measured.push((*k, name.clone(), id));
            }
            Err(e) => out[*k].errors.push(format!("{name}: {e:#}")),
        }
    }
    collect_init(ep, &measured, &mut out).await;
    Ok(out)
}

/// One invoke that is expected to start an environment: (latency ms, request id).
async fn cold_invoke(ep: &Endpoint, conn: &mut Conn, name: &str) -> anyhow::Result<(f64, String)> {
    let req = ep.invoke(name, "{}")?;
    let (answer, took) = tokio::time::timeout(INVOKE_CAP, conn.timed(req.request()))
        .await
        .context("no answer within 30 s")??;
    if !answer.invoke_ok() {
        bail!(
            "HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let id = answer
        .header("x-amzn-requestid")
        .context("no x-amzn-RequestId header")?
        .to_string();
    Ok((ms(took), id))
}

/// Reads the Init Duration of each measured invoke from its REPORT line.
async fn collect_init(
    ep: &Endpoint,
    measured: &[(usize, String, String)],
    out: &mut [ColdSamples],
) {
    for (k, name, id) in measured {
        match ep.init_duration_ms(name, id).await {
            Ok(Some(init)) => out[*k].init_ms.push(init),
            Ok(None) => out[*k].errors.push(format!(
                "{name}: the REPORT of a cold invoke has no Init Duration"
            )),
            Err(e) => out[*k].errors.push(format!("{name}: {e:#}")),
        }
    }
}

/// The process-start floors, interleaved: one per runtime (in `Runtime::ALL` order) and the
/// extra ones.
async fn floors(noop_bin: &Path, reps: usize) -> anyhow::Result<(Vec<Floor>, Vec<Floor>)> {
    let mut rust = Floor {
        command: format!(
            "{} (exec until its first Runtime API connection)",
            noop_bin.display()
        ),
        samples_ms: Vec::new(),
    };
    // (command, with an empty environment). Environments get an environment of the server's
    // making, never the caller's, so the floors that stand for them start with an empty one
    // too. The inherited-environment variant is there because it differs: a shell that sets
    // NODE_EXTRA_CA_CERTS (as this project's machines do) makes every `node` load the CA
    // bundle at start, ~40 ms.
    let commands: [(&[&str], bool); 4] = [
        (&["/usr/bin/python3", "-c", "pass"], true),
        (&["/usr/bin/node", "-e", "0"], true),
        // What the python3.11 runtime actually runs: no site module, no .pyc writing.
        (&["/usr/bin/python3", "-S", "-B", "-c", "pass"], true),
        (&["/usr/bin/node", "-e", "0"], false),
    ];
    let mut plain: Vec<Floor> = commands
        .iter()
        .map(|(c, clean)| Floor {
            command: if *clean {
                c.join(" ")
            } else {
                format!("{} (inherited environment)", c.join(" "))
            },
            samples_ms: Vec::new(),
        })
        .collect();
    for _ in 0..reps {
        rust.samples_ms.push(ms(rust_start(noop_bin).await?));
        for (floor, (argv, clean)) in plain.iter_mut().zip(commands) {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let took = tokio::task::spawn_blocking(move || process_start(&argv, clean)).await??;
            floor.samples_ms.push(ms(took));
        }
    }
    let extra = plain.split_off(2);
    let node = plain.pop().context("node floor")?;
    let python = plain.pop().context("python floor")?;
    Ok((vec![rust, python, node], extra))
}

/// Spawn to exit of a short command.
fn process_start(argv: &[String], clean_env: bool) -> anyhow::Result<Duration> {
    let mut cmd = Command::new(&argv[0]);
    if clean_env {
        cmd.env_clear();
    }
    let t0 = Instant::now();
    let status = cmd
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    let took = t0.elapsed();
    if !status.success() {
        bail!("{} exited with {status}", argv.join(" "));
    }
    Ok(took)
}

/// Spawn of the no-op `lambda_runtime` binary until it connects to its Runtime API (a
/// listener of ours): the Rust function's process start, with its runtime client initialised.
async fn rust_start(noop_bin: &Path) -> anyhow::Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let t0 = Instant::now();
    let mut child = Command::new(noop_bin)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "floor")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/floor")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "floor")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", noop_bin.display()))?;
    let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept()).await;
    let took = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    match accepted {
        Ok(Ok(_)) => Ok(took),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("the no-op function did not connect to its Runtime API within 10 s"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
