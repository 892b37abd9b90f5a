//! Section 4, scale-out: a burst of N concurrent first invokes (N = 100, 500) of a Python
//! function that sleeps 1 s, on a function created just before, so every invoke needs a new
//! environment. Measures the time until all have answered and the environment creation rate:
//! the environments the server reports idle afterwards, over the time it had to create them
//! (the last answer, minus the 1 s every invoke sleeps after its environment is ready).
//!
//! All N connections are opened before the clock starts; the requests are released together.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::args::Sizes;
use crate::client::Conn;
use crate::functions::Packages;
use crate::procfs::{self, CpuSplit};
use crate::server::NimbusServer;
use crate::stats::Summary;

const SLEEP_MS: u64 = 1000;
/// The whole burst, from release to the last answer.
const BURST_CAP: Duration = Duration::from_secs(90);
/// After deleting the function, how long its environments may take to disappear.
const TEARDOWN_CAP: Duration = Duration::from_secs(20);

#[derive(Debug, Serialize)]
pub(crate) struct ScaleRow {
    pub(crate) burst: usize,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) throttled: usize,
    /// Release to the last answer, s.
    pub(crate) all_done_s: Option<f64>,
    /// Per-invoke latency (each includes the 1 s sleep).
    pub(crate) latency: Option<Summary>,
    /// Idle environments of the function once all answered.
    pub(crate) environments: u64,
    /// environments / (all_done − sleep).
    pub(crate) envs_per_second: Option<f64>,
    /// CPU from the release to the last answer: what creating the environments cost, and what
    /// else competed for the cores.
    pub(crate) cpu: CpuSplit,
}

pub(crate) async fn run(
    server: &NimbusServer,
    packages: &Packages,
    sizes: &Sizes,
) -> anyhow::Result<Vec<ScaleRow>> {
    let mut rows = Vec::new();
    for &burst in sizes.scale_bursts {
        rows.push(one_burst(server, packages, burst).await?);
    }
    Ok(rows)
}

async fn one_burst(
    server: &NimbusServer,
    packages: &Packages,
    burst: usize,
) -> anyhow::Result<ScaleRow> {
    let ep = server.endpoint();
    let name = format!("scale-{burst}");
    let processes_before = server.processes();
    ep.create_function(&packages.sleeper(&name)).await?;
    let req = ep.invoke(&name, &format!("{{\"sleep_ms\": {SLEEP_MS}}}"))?;
    let mut conns = Vec::with_capacity(burst);
    for _ in 0..burst {
        conns.push(Conn::open(ep.addr).await?);
    }
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (req, mut go) = (req.clone(), go_rx.clone());
            tokio::spawn(async move {
                let t0 = match go.wait_for(Option::is_some).await {
                    Ok(t) => t.unwrap_or_else(Instant::now),
                    Err(_) => return None,
                };
                let answer = conn.send(req.request()).await.ok()?;
                Some((answer.status, answer.invoke_ok(), t0.elapsed()))
            })
        })
        .collect();
    // Let every task reach its wait before the release.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pid = server.pid();
    let cpu_before = tokio::task::spawn_blocking(move || procfs::cpu_sample(pid)).await?;
    let released = Instant::now();
    go_tx.send_replace(Some(released));
    let mut latencies = Vec::with_capacity(burst);
    let (mut ok, mut errors, mut throttled) = (0, 0, 0);
    for t in tasks {
        let left = (released + BURST_CAP).saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(Some((_, true, took)))) => {
                ok += 1;
                latencies.push(took);
            }
            Ok(Ok(Some((status, false, _)))) if status.as_u16() == 429 => throttled += 1,
            _ => {
                abort.abort();
                errors += 1;
            }
        }
    }
    let cpu_after = tokio::task::spawn_blocking(move || procfs::cpu_sample(pid)).await?;
    let cpu = CpuSplit::between(&cpu_before, &cpu_after);
    let all_done = latencies.iter().max().copied();
    let environments = ep.idle_of(&name).await?;
    let creating = all_done.map(|d| d.as_secs_f64() - SLEEP_MS as f64 / 1e3);
    let row = ScaleRow {
        burst,
        ok,
        errors,
        throttled,
        all_done_s: all_done.map(|d| d.as_secs_f64()),
        latency: Summary::of(&latencies),
        environments,
        envs_per_second: creating
            .filter(|s| *s > 0.0)
            .map(|s| environments as f64 / s),
        cpu,
    };
    ep.delete_function(&name).await?;
    // Deleting retires the environments; wait until their processes are gone, so the next
    // burst does not share the CPU with their teardown.
    server.settle(processes_before, TEARDOWN_CAP).await?;
    Ok(row)
}
