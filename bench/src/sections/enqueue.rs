//! Section 6, durable enqueue (issue 6): N closed-loop clients (each its own keep-alive
//! connection, one request in flight) sending `Event` invokes of one function for a fixed
//! window, N = 8, 32, 64. Nimbus answers 202 only once the event is committed (fsync'd, group
//! commit) to its queue database, so invokes/s here is the durable enqueue rate.
//!
//! The function (the `provided` no-op) gets reserved concurrency 0 before the run: the
//! dispatcher then runs none of the events but hands each straight to the failure destination
//! (there is none, so it is dropped as `RetriesExhausted`), and no environment competes with
//! the enqueue for the cores. After the last cell the section reads the server's
//! `/nimbus/metrics` (waiting briefly for the queue to drain) to show the events went that
//! way, then deletes the function.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use crate::args::Sizes;
use crate::client::{Answer, Conn, Endpoint, Prepared};
use crate::functions::{Packages, Runtime};
use crate::sections::closed_loop::{MEASURE, STOP, WARM_UP, client, collect};
use crate::stats::Summary;
use crate::table::round;

/// Unmeasured sending before each window (connections and the queue database are already up;
/// this only gets every client into its loop).
const WARM_UP_TIME: Duration = Duration::from_millis(100);
/// After the last cell, how long to wait for the dispatcher to empty the queue.
const QUEUE_DRAIN_CAP: Duration = Duration::from_secs(2);
const FUNCTION: &str = "enqueue-noop";

#[derive(Debug, Serialize)]
pub(crate) struct EnqueueResults {
    pub(crate) function: String,
    pub(crate) reserved_concurrency: u32,
    pub(crate) rows: Vec<EnqueueRow>,
    /// The server's async counters for the function after the last cell.
    pub(crate) queue_after: Option<QueueAfter>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EnqueueRow {
    pub(crate) clients: usize,
    pub(crate) window_s: f64,
    /// HTTP 202s answered in the window.
    pub(crate) accepted: u64,
    /// Transport failures and HTTP errors other than 429.
    pub(crate) errors: u64,
    /// HTTP 429 (TooManyRequestsException).
    pub(crate) throttled: u64,
    pub(crate) per_second: f64,
    /// Latency of the 202s in the window.
    pub(crate) latency: Option<Summary>,
}

/// `nimbus_async_*` of the function from `/nimbus/metrics`.
#[derive(Debug, Serialize)]
pub(crate) struct QueueAfter {
    /// Every 202 of the section, warm-ups included.
    pub(crate) enqueued: u64,
    /// Events handed to the (absent) failure destination because of reserved concurrency 0.
    pub(crate) retries_exhausted: u64,
    /// Events that ran (should be 0).
    pub(crate) succeeded: u64,
    /// Still queued when the section stopped waiting (they are discarded with the function).
    pub(crate) queue_depth: u64,
    pub(crate) waited_s: f64,
}

pub(crate) async fn run(
    endpoint: &Endpoint,
    packages: &Packages,
    levels: &[usize],
    sizes: &Sizes,
) -> anyhow::Result<EnqueueResults> {
    endpoint
        .create_function(&packages.noop(Runtime::Provided, FUNCTION))
        .await?;
    let result = measure(endpoint, levels, sizes).await;
    let deleted = endpoint.delete_function(FUNCTION).await;
    let result = result?;
    deleted?;
    Ok(result)
}

async fn measure(
    endpoint: &Endpoint,
    levels: &[usize],
    sizes: &Sizes,
) -> anyhow::Result<EnqueueResults> {
    put_reserved_zero(endpoint).await?;
    let req = endpoint.prepare(
        "lambda",
        Method::POST,
        &format!("/2015-03-31/functions/{FUNCTION}/invocations"),
        &[
            ("content-type", "application/json"),
            ("x-amz-invocation-type", "Event"),
        ],
        Bytes::from_static(b"{}"),
    )?;
    let mut rows = Vec::new();
    for &clients in levels {
        rows.push(cell(endpoint.addr, &req, clients, sizes.enqueue_window).await?);
    }
    // The metrics are informative: a failure to read them is not the section's failure.
    let queue_after = queue_after(endpoint.addr).await.ok();
    Ok(EnqueueResults {
        function: FUNCTION.into(),
        reserved_concurrency: 0,
        rows,
        queue_after,
    })
}

/// `PUT /2017-10-31/functions/{F}/concurrency` with `{"ReservedConcurrentExecutions":0}`.
async fn put_reserved_zero(endpoint: &Endpoint) -> anyhow::Result<()> {
    let p = endpoint.prepare(
        "lambda",
        Method::PUT,
        &format!("/2017-10-31/functions/{FUNCTION}/concurrency"),
        &[("content-type", "application/json")],
        Bytes::from_static(br#"{"ReservedConcurrentExecutions":0}"#),
    )?;
    let mut conn = Conn::open(endpoint.addr).await?;
    let a = conn.send(p.request()).await?;
    if a.status != StatusCode::OK {
        bail!(
            "PutFunctionConcurrency {FUNCTION}: HTTP {} {}",
            a.status.as_u16(),
            String::from_utf8_lossy(&a.body)
        );
    }
    Ok(())
}

async fn cell(
    addr: SocketAddr,
    req: &Prepared,
    clients: usize,
    window: Duration,
) -> anyhow::Result<EnqueueRow> {
    let phase = Arc::new(AtomicU8::new(WARM_UP));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (req, phase) = (req.clone(), phase.clone());
            tokio::spawn(client(conn, addr, req, phase, answered.clone(), accepted))
        })
        .collect();
    tokio::time::sleep(WARM_UP_TIME).await;
    phase.store(MEASURE, Ordering::Release);
    let window_start = Instant::now();
    tokio::time::sleep(window).await;
    phase.store(STOP, Ordering::Release);
    let window = window_start.elapsed();
    let total = collect(tasks).await;
    Ok(EnqueueRow {
        clients,
        window_s: window.as_secs_f64(),
        accepted: total.ok,
        errors: total.errors,
        throttled: total.throttled,
        per_second: total.ok as f64 / window.as_secs_f64(),
        latency: Summary::of(&total.latencies),
    })
}

/// Enqueue succeeds with 202.
fn accepted(a: &Answer) -> bool {
    a.status == StatusCode::ACCEPTED
}

/// Waits (up to [`QUEUE_DRAIN_CAP`]) for the function's queue to empty, then reads its counters.
async fn queue_after(addr: SocketAddr) -> anyhow::Result<QueueAfter> {
    let start = Instant::now();
    loop {
        let text = metrics(addr).await?;
        let get = |name: &str| metric(&text, name, FUNCTION).unwrap_or(0.0) as u64;
        let depth = get("nimbus_async_queue_depth");
        if depth == 0 || start.elapsed() >= QUEUE_DRAIN_CAP {
            return Ok(QueueAfter {
                enqueued: get("nimbus_async_enqueued_total"),
                retries_exhausted: get("nimbus_async_retries_exhausted_total"),
                succeeded: get("nimbus_async_succeeded_total"),
                queue_depth: depth,
                waited_s: start.elapsed().as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /nimbus/metrics` (unauthenticated, Prometheus text).
async fn metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let req = Request::get("/nimbus/metrics")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let mut conn = Conn::open(addr).await?;
    let a = tokio::time::timeout(Duration::from_secs(10), conn.send(req))
        .await
        .context("GET /nimbus/metrics timed out")??;
    if a.status != StatusCode::OK {
        bail!("GET /nimbus/metrics answered {}", a.status);
    }
    Ok(String::from_utf8_lossy(&a.body).into_owned())
}

/// The value of `name{…function="F"…} V` in Prometheus text.
fn metric(text: &str, name: &str, function: &str) -> Option<f64> {
    let label = format!("function=\"{function}\"");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The printed table, in the layout of the others (first column left, numbers right).
pub(crate) fn render(r: &EnqueueResults) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        [
            "durable enqueue (Event)",
            "clients",
            "invokes/s",
            "202",
            "errors",
            "429",
            "p50 µs",
            "p99 µs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for row in &r.rows {
        let s = row.latency.as_ref();
        rows.push(vec![
            format!("provided no-op, reserved {}", r.reserved_concurrency),
            row.clients.to_string(),
            format!("{:.0}", row.per_second),
            row.accepted.to_string(),
            row.errors.to_string(),
            row.throttled.to_string(),
            s.map_or("-".into(), |s| round(s.p50_us)),
            s.map_or("-".into(), |s| round(s.p99_us)),
        ]);
    }
    let cols = rows[0].len();
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::from("  ");
        for (c, cell) in r.iter().enumerate() {
            let pad = " ".repeat(width[c].saturating_sub(cell.chars().count()));
            if c == 0 {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str("  ");
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = width.iter().sum::<usize>() + 2 * (cols - 1);
            let _ = writeln!(out, "  {}", "─".repeat(total));
        }
    }
    if let Some(q) = &r.queue_after {
        let _ = writeln!(
            out,
            "  afterwards: {} enqueued, {} dropped as RetriesExhausted (reserved 0, no destination), {} ran, {} still queued after {:.1} s",
            q.enqueued, q.retries_exhausted, q.succeeded, q.queue_depth, q.waited_s
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_function() {
        let text = "# TYPE nimbus_async_queue_depth gauge\n\
            nimbus_async_queue_depth{account=\"1\",function=\"other\"} 7\n\
            nimbus_async_queue_depth{account=\"1\",function=\"enqueue-noop\"} 3\n\
            nimbus_async_queue_depth_x{account=\"1\",function=\"enqueue-noop\"} 9\n";
        assert_eq!(
            metric(text, "nimbus_async_queue_depth", FUNCTION),
            Some(3.0)
        );
        assert_eq!(metric(text, "nimbus_async_enqueued_total", FUNCTION), None);
    }
}
