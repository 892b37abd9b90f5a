//! Section 5, density: how much memory an idle warm Python environment costs, in the server
//! and in total, and how many fit under a memory budget.
//!
//! On a server of its own (so allocator memory freed by earlier sections cannot hide growth),
//! environments are added in steps: each step creates a new Python function and invokes it
//! `density_step` times concurrently (each invoke sleeps 300 ms, so each gets its own
//! environment), then, once all are idle again, reads `VmRSS` of the server and RSS and PSS of
//! every process below it. Steps stop when server + environments reach the budget, at
//! `density_max_envs`, or at the section's time cap. One function per step keeps each
//! invoke burst a first-invoke burst; the per-function cost is spread over a step's
//! environments and included in the server's per-environment figure.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::{SandboxArg, Sizes};
use crate::client::Conn;
use crate::functions::Packages;
use crate::procfs;
use crate::server::{NimbusServer, ServerOptions};
use crate::stats::slope;

const SLEEP_MS: u64 = 300;
const STEP_CAP: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DensityStep {
    /// Idle environments the server reports.
    pub(crate) environments: u64,
    /// Processes below the server (environments and any helpers).
    pub(crate) processes: usize,
    pub(crate) server_rss: u64,
    pub(crate) env_rss_sum: u64,
    pub(crate) env_pss_sum: u64,
    /// The processes below the server by kind (python3, __jail, slirp4netns …).
    pub(crate) by_kind: Vec<procfs::KindMemory>,
    pub(crate) elapsed_s: f64,
}

impl DensityStep {
    pub(crate) fn total_rss(&self) -> u64 {
        self.server_rss + self.env_rss_sum
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct DensityResults {
    pub(crate) budget_bytes: u64,
    pub(crate) steps: Vec<DensityStep>,
    /// Slope of the server's VmRSS over idle environments, bytes.
    pub(crate) server_bytes_per_env: Option<f64>,
    /// Mean RSS and PSS of one environment's processes, bytes.
    pub(crate) env_rss_mean: Option<f64>,
    pub(crate) env_pss_mean: Option<f64>,
    /// Idle Python environments that fit under the budget (server RSS + environment RSS).
    pub(crate) fit: Option<u64>,
    /// True when the budget was not reached and `fit` is extrapolated from the slope.
    pub(crate) fit_projected: bool,
    /// The same count if environments were charged their PSS instead of their RSS.
    pub(crate) fit_by_pss: Option<u64>,
    pub(crate) stopped_because: String,
    pub(crate) errors: u64,
}

pub(crate) async fn run(
    nimbus_bin: &std::path::Path,
    packages: &Packages,
    sandbox: SandboxArg,
    budget_bytes: u64,
    sizes: &Sizes,
) -> anyhow::Result<DensityResults> {
    let opts = ServerOptions {
        label: "density",
        sandbox,
        keep_alive_secs: None,
    };
    let server = NimbusServer::start(nimbus_bin, &opts).await?;
    let ep = server.endpoint().clone();
    let started = Instant::now();
    let mut steps = vec![measure(&server, 0, started)];
    let mut errors = 0;
    let stopped_because;
    let mut k = 0;
    loop {
        let last = steps.last().map(DensityStep::total_rss).unwrap_or(0);
        if last >= budget_bytes {
            stopped_because = "reached the memory budget".to_string();
            break;
        }
        let envs = steps.last().map_or(0, |s| s.environments);
        if envs as usize >= sizes.density_max_envs {
            stopped_because = format!("reached {} environments", sizes.density_max_envs);
            break;
        }
        if started.elapsed() > sizes.density_time {
            stopped_because = format!("reached the section's {:?} cap", sizes.density_time);
            break;
        }
        let name = format!("density-{k}");
        k += 1;
        ep.create_function(&packages.sleeper(&name)).await?;
        let failed = burst(&ep, &name, sizes.density_step).await?;
        errors += failed;
        if failed > 0 {
            stopped_because = format!("{failed} invokes failed in the last step");
            break;
        }
        let idle: u64 = ep.idle_environments().await?.iter().map(|(_, n)| n).sum();
        steps.push(measure(&server, idle, started));
    }
    let server_points: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (s.environments as f64, s.server_rss as f64))
        .collect();
    let last = steps.last().cloned();
    let per_env = |sum: fn(&DensityStep) -> u64| {
        last.as_ref()
            .filter(|s| s.environments > 0)
            .map(|s| sum(s) as f64 / s.environments as f64)
    };
    let env_rss_mean = per_env(|s| s.env_rss_sum);
    let env_pss_mean = per_env(|s| s.env_pss_sum);
    let server_bytes_per_env = slope(&server_points);
    let (fit, fit_projected) = fit_under(&steps, budget_bytes, |s| s.total_rss());
    let (fit_by_pss, _) = fit_under(&steps, budget_bytes, |s| s.server_rss + s.env_pss_sum);
    Ok(DensityResults {
        budget_bytes,
        steps,
        server_bytes_per_env,
        env_rss_mean,
        env_pss_mean,
        fit,
        fit_projected,
        fit_by_pss,
        stopped_because,
        errors,
    })
}

/// Environments under `budget`: interpolated between the steps around it when it was
/// crossed, else extrapolated from the slope of the measured steps (`true`).
pub(crate) fn fit_under(
    steps: &[DensityStep],
    budget: u64,
    total: fn(&DensityStep) -> u64,
) -> (Option<u64>, bool) {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (s.environments as f64, total(s) as f64))
        .collect();
    let budget = budget as f64;
    if let Some(i) = pts.iter().position(|p| p.1 >= budget) {
        if i == 0 {
            return (Some(0), false);
        }
        let (a, b) = (pts[i - 1], pts[i]);
        let per = (b.1 - a.1) / (b.0 - a.0);
        if per <= 0.0 {
            return (Some(a.0 as u64), false);
        }
        return (Some((a.0 + ((budget - a.1) / per).floor()) as u64), false);
    }
    let (Some(per), Some(last)) = (slope(&pts), pts.last()) else {
        return (None, true);
    };
    if per <= 0.0 {
        return (None, true);
    }
    (
        Some((last.0 + ((budget - last.1) / per).floor()) as u64),
        true,
    )
}

fn measure(server: &NimbusServer, environments: u64, started: Instant) -> DensityStep {
    let by_kind = procfs::tree_memory(server.pid());
    DensityStep {
        environments,
        processes: by_kind.iter().map(|k| k.processes).sum(),
        server_rss: procfs::rss(server.pid()).unwrap_or(0),
        env_rss_sum: by_kind.iter().map(|k| k.rss).sum(),
        env_pss_sum: by_kind.iter().map(|k| k.pss).sum(),
        by_kind,
        elapsed_s: started.elapsed().as_secs_f64(),
    }
}

/// `n` concurrent invokes of `function`; returns how many failed.
async fn burst(ep: &crate::client::Endpoint, function: &str, n: usize) -> anyhow::Result<u64> {
    let req = ep.invoke(function, &format!("{{\"sleep_ms\": {SLEEP_MS}}}"))?;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = Conn::open(ep.addr).await?;
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            matches!(conn.send(req.request()).await, Ok(a) if a.invoke_ok())
        }));
    }
    let deadline = Instant::now() + STEP_CAP;
    let mut failed = 0;
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(true)) => {}
            _ => {
                abort.abort();
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// MiB, for the table.
pub(crate) fn mib(bytes: f64) -> f64 {
    bytes / MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(envs: u64, server: u64, envs_rss: u64) -> DensityStep {
        DensityStep {
            environments: envs,
            processes: envs as usize,
            server_rss: server,
            env_rss_sum: envs_rss,
            env_pss_sum: envs_rss / 2,
            by_kind: vec![],
            elapsed_s: 0.0,
        }
    }

    #[test]
    fn the_fit_is_interpolated_when_the_budget_was_crossed() {
        // 10 MB per environment on top of a 10 MB server: a 1,010 MB budget fits 100.
        let steps = [step(0, 10, 0), step(50, 10, 500), step(150, 10, 1500)];
        assert_eq!(
            fit_under(&steps, 1010, DensityStep::total_rss),
            (Some(100), false)
        );
    }

    #[test]
    fn the_fit_is_projected_when_the_budget_was_not_reached() {
        let steps = [step(0, 10, 0), step(100, 110, 1000)];
        // 11 per environment: (10,000 − 1,110) / 11 = 808 more.
        assert_eq!(
            fit_under(&steps, 10_000, DensityStep::total_rss),
            (Some(908), true)
        );
        assert_eq!(
            fit_under(&steps[..1], 10_000, DensityStep::total_rss),
            (None, true)
        );
    }
}
