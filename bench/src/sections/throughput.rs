//! Section 2, throughput: N closed-loop clients (each its own keep-alive connection, one
//! request in flight) invoking one no-op function for a fixed window, N = 1, 8, 32, 128.
//!
//! Lambda semantics: N concurrent invokes need N environments, so each cell first runs a
//! warm-up until every client has had an answer (every environment exists) and a minimum time
//! has passed; only answers that arrive inside the window that follows are counted. Clients and
//! server share the machine's cores, as in the floor measured with `wrk` (platform notes). The
//! floor is measured here too: the echo server with the same client at 32 clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::Sizes;
use crate::client::{Answer, Conn, Endpoint, Prepared};
use crate::functions::Runtime;
use crate::procfs::{self, CpuSplit};
use crate::sections::closed_loop::{MEASURE, STOP, WARM_UP, client, collect};
use crate::server::EchoServer;
use crate::stats::Summary;

#[derive(Debug, Serialize)]
pub(crate) struct ThroughputRow {
    /// The runtime, or `echo floor`.
    pub(crate) target: String,
    pub(crate) clients: usize,
    pub(crate) window_s: f64,
    pub(crate) ok: u64,
    /// Transport failures, function errors and non-429 HTTP errors.
    pub(crate) errors: u64,
    /// HTTP 429 (TooManyRequestsException).
    pub(crate) throttled: u64,
    pub(crate) per_second: f64,
    /// Latency of the successful invokes in the window.
    pub(crate) latency: Option<Summary>,
    /// How long the warm-up took, and whether every client got an answer in it.
    pub(crate) warm_up_s: f64,
    pub(crate) all_clients_warm: bool,
    /// CPU used during the window by the server, its environments, the load generator and
    /// everything else on the machine.
    pub(crate) cpu: CpuSplit,
}

impl ThroughputRow {
    /// CPU microseconds per successful invoke.
    pub(crate) fn cpu_us_per_invoke(&self, seconds: f64) -> Option<f64> {
        (self.ok > 0).then(|| seconds * 1e6 / self.ok as f64)
    }
}

/// The floor is measured at this many clients (the level issue 5's targets name).
const FLOOR_CLIENTS: usize = 32;

/// What a cell loads: where, and which process is the server (for its CPU time).
struct Target {
    addr: SocketAddr,
    pid: u32,
    label: &'static str,
}

pub(crate) async fn run(
    endpoint: &Endpoint,
    server_pid: u32,
    functions: &[(Runtime, String)],
    levels: &[usize],
    sizes: &Sizes,
) -> anyhow::Result<Vec<ThroughputRow>> {
    let mut rows = Vec::new();
    {
        let echo = EchoServer::start().await?;
        let req = Endpoint::new(echo.addr).invoke(&functions[0].1, "{}")?;
        let target = Target {
            addr: echo.addr,
            pid: echo.pid(),
            label: "echo floor",
        };
        rows.push(cell(&target, req, FLOOR_CLIENTS, sizes).await?);
    }
    for (runtime, name) in functions {
        for &clients in levels {
            let req = endpoint.invoke(name, "{}")?;
            let target = Target {
                addr: endpoint.addr,
                pid: server_pid,
                label: runtime.label(),
            };
            rows.push(cell(&target, req, clients, sizes).await?);
        }
    }
    Ok(rows)
}

async fn cell(
    target: &Target,
    req: Prepared,
    clients: usize,
    sizes: &Sizes,
) -> anyhow::Result<ThroughputRow> {
    let addr = target.addr;
    let phase = Arc::new(AtomicU8::new(WARM_UP));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (req, phase, answered) = (req.clone(), phase.clone(), answered.clone());
            tokio::spawn(client(conn, addr, req, phase, answered, Answer::invoke_ok))
        })
        .collect();
    loop {
        let elapsed = started.elapsed();
        let all = answered.load(Ordering::Acquire) >= clients;
        if (all && elapsed >= sizes.throughput_warm_up) || elapsed >= sizes.throughput_warm_up_cap {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warm_up = started.elapsed();
    let all_clients_warm = answered.load(Ordering::Acquire) >= clients;
    let pid = target.pid;
    let cpu_before = tokio::task::spawn_blocking(move || procfs::cpu_sample(pid)).await?;
    phase.store(MEASURE, Ordering::Release);
    let window_start = Instant::now();
    tokio::time::sleep(sizes.throughput_window).await;
    phase.store(STOP, Ordering::Release);
    let window = window_start.elapsed();
    let cpu_after = tokio::task::spawn_blocking(move || procfs::cpu_sample(pid)).await?;
    let cpu = CpuSplit::between(&cpu_before, &cpu_after);
    let total = collect(tasks).await;
    Ok(ThroughputRow {
        target: target.label.into(),
        clients,
        window_s: window.as_secs_f64(),
        ok: total.ok,
        errors: total.errors,
        throttled: total.throttled,
        per_second: total.ok as f64 / window.as_secs_f64(),
        latency: Summary::of(&total.latencies),
        warm_up_s: warm_up.as_secs_f64(),
        all_clients_warm,
        cpu,
    })
}
