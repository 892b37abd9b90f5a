//! Section 1, warm invoke latency: one keep-alive connection, sequential synchronous invokes
//! of each no-op function (its one environment stays warm), and in the same run the floor —
//! the same client, the same signed request bytes, against a bare hyper echo server.
//!
//! The clock runs from handing the (already signed) request to hyper until the last byte of
//! the answer, so it is the server's latency plus two loopback crossings, never client CPU
//! spent signing. The client runs on a current-thread runtime of its own thread: its request
//! and connection tasks never hand over between worker threads, which would add a futex
//! wake-up to every round trip and to the floor as much as to Nimbus.
//!
//! The targets take turns, in `warm_rounds` rounds of equal blocks, so the floor and the
//! functions see the same machine: on this VM a ping-pong's latency depends on whether the
//! vCPUs get to idle between messages (an idle vCPU costs a hypervisor wake-up), and on what
//! else runs, and both drift over a run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::args::Sizes;
use crate::client::{Conn, Endpoint, Prepared};
use crate::functions::Runtime;
use crate::procfs::{self, CpuSplit};
use crate::server::EchoServer;
use crate::stats::Summary;

/// The first invoke starts the environment: allow it this long before calling it a failure.
const FIRST_INVOKE_CAP: Duration = Duration::from_secs(30);
/// A run with this many failed requests is reported as broken, not as slow.
const MAX_ERRORS: u64 = 100;

#[derive(Debug, Serialize)]
pub(crate) struct WarmRow {
    /// `echo floor`, or the runtime.
    pub(crate) target: String,
    pub(crate) latency: Option<Summary>,
    pub(crate) errors: u64,
    /// p50 / the floor's p50.
    pub(crate) p50_over_floor: Option<f64>,
    /// The server's own `Duration` of the same warm invokes (REPORT lines): from handing the
    /// event to the environment until its reply arrived. The rest of the client-observed
    /// latency is the front end (HTTP, SigV4, routing, lease, logs) and the loopback.
    pub(crate) report_duration: Option<Summary>,
    /// CPU time the server (and, for functions, its environment) spent per request: what one
    /// invoke costs, whatever the latency.
    pub(crate) server_cpu_us_per_invoke: Option<f64>,
    pub(crate) env_cpu_us_per_invoke: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WarmResults {
    pub(crate) rows: Vec<WarmRow>,
}

impl WarmResults {
    pub(crate) fn row(&self, target: &str) -> Option<&WarmRow> {
        self.rows.iter().find(|r| r.target == target)
    }
}

/// One thing to measure: where, which process serves it, and the request.
struct Target {
    addr: SocketAddr,
    pid: u32,
    req: Prepared,
}

/// What the rounds gathered for one target.
#[derive(Default)]
struct Gathered {
    samples: Vec<Duration>,
    errors: u64,
    sent: u64,
    server_s: f64,
    envs_s: f64,
}

/// `functions` are the deployed no-op functions, by runtime.
pub(crate) async fn run(
    endpoint: &Endpoint,
    server_pid: u32,
    functions: &[(Runtime, String)],
    sizes: &Sizes,
) -> anyhow::Result<WarmResults> {
    let echo = EchoServer::start().await?;
    let mut targets = vec![Target {
        addr: echo.addr,
        pid: echo.pid(),
        // The same bytes as the first function's invoke, signed for the echo server's host.
        req: Endpoint::new(echo.addr).invoke(&functions[0].1, "{}")?,
    }];
    for (_, name) in functions {
        targets.push(Target {
            addr: endpoint.addr,
            pid: server_pid,
            req: endpoint.invoke(name, "{}")?,
        });
    }
    let sizes = *sizes;
    let gathered = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(rounds(&targets, &sizes))
    })
    .await??;
    drop(echo);

    let mut gathered = gathered.into_iter();
    let floor = gathered.next().unwrap_or_default();
    let floor_summary = Summary::of(&floor.samples);
    let floor_p50 = floor_summary.as_ref().map(|s| s.p50_us);
    let per = |g: &Gathered, s: f64| (g.sent > 0).then(|| s * 1e6 / g.sent as f64);
    let mut rows = vec![WarmRow {
        target: "echo floor".into(),
        latency: floor_summary,
        errors: floor.errors,
        p50_over_floor: Some(1.0),
        report_duration: None,
        server_cpu_us_per_invoke: per(&floor, floor.server_s),
        env_cpu_us_per_invoke: None,
    }];
    for ((runtime, name), g) in functions.iter().zip(gathered) {
        let latency = Summary::of(&g.samples);
        let ratio = latency.as_ref().zip(floor_p50).map(|(s, f)| s.p50_us / f);
        let durations: Vec<Duration> = endpoint
            .warm_report_durations_ms(name, 2 * sizes.warm_requests)
            .await
            .unwrap_or_default()
            .iter()
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
            .collect();
        rows.push(WarmRow {
            target: runtime.label().into(),
            latency,
            errors: g.errors,
            p50_over_floor: ratio,
            report_duration: Summary::of(&durations),
            server_cpu_us_per_invoke: per(&g, g.server_s),
            env_cpu_us_per_invoke: per(&g, g.envs_s),
        });
    }
    Ok(WarmResults { rows })
}

/// Opens a connection per target and warms each up, then runs the rounds.
async fn rounds(targets: &[Target], sizes: &Sizes) -> anyhow::Result<Vec<Gathered>> {
    let mut conns = Vec::with_capacity(targets.len());
    for t in targets {
        let mut conn = Conn::open(t.addr).await?;
        warm_up(&mut conn, &t.req, sizes).await?;
        conns.push(conn);
    }
    let rounds = sizes.warm_rounds.max(1);
    let per_block = sizes.warm_requests.div_ceil(rounds);
    let block_time = sizes.warm_time / rounds as u32;
    let mut out: Vec<Gathered> = targets.iter().map(|_| Gathered::default()).collect();
    for _ in 0..rounds {
        for ((t, conn), g) in targets.iter().zip(conns.iter_mut()).zip(out.iter_mut()) {
            let before = procfs::cpu_sample(t.pid);
            block(conn, t, per_block, block_time, g).await?;
            let cpu = CpuSplit::between(&before, &procfs::cpu_sample(t.pid));
            g.server_s += cpu.server_s;
            g.envs_s += cpu.envs_s;
        }
    }
    Ok(out)
}

/// The first invoke (it may start the environment), then unmeasured ones.
async fn warm_up(conn: &mut Conn, req: &Prepared, sizes: &Sizes) -> anyhow::Result<()> {
    match tokio::time::timeout(FIRST_INVOKE_CAP, conn.send(req.request())).await {
        Ok(Ok(a)) if a.invoke_ok() => {}
        Ok(Ok(a)) => bail!(
            "the first invoke answered HTTP {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        ),
        Ok(Err(e)) => bail!("the first invoke failed: {e:#}"),
        Err(_) => bail!("the first invoke took longer than {FIRST_INVOKE_CAP:?}"),
    }
    let end = Instant::now() + sizes.warm_time / 10;
    for _ in 0..sizes.warm_up_requests {
        if Instant::now() > end {
            break;
        }
        conn.send(req.request()).await?;
    }
    Ok(())
}

/// Up to `n` sequential invokes or `time`, whichever ends first, into `g`.
async fn block(
    conn: &mut Conn,
    t: &Target,
    n: usize,
    time: Duration,
    g: &mut Gathered,
) -> anyhow::Result<()> {
    let end = Instant::now() + time;
    let mut done = 0;
    while done < n && Instant::now() < end {
        done += 1;
        g.sent += 1;
        match conn.timed(t.req.request()).await {
            Ok((a, took)) if a.invoke_ok() => g.samples.push(took),
            Ok(_) => g.errors += 1,
            Err(_) => {
                g.errors += 1;
                *conn = Conn::open(t.addr).await?;
            }
        }
        if g.errors >= MAX_ERRORS {
            bail!(
                "{} failed invokes (and {} successful ones)",
                g.errors,
                g.samples.len()
            );
        }
    }
    Ok(())
}
