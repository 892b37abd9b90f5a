//! The closed-loop client shared by the throughput and durable-enqueue sections: each client
//! has one keep-alive connection and one request in flight, and counts answers only while
//! the shared phase says [`MEASURE`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::task::JoinHandle;

use crate::client::{Answer, Conn, Prepared};

pub(crate) const WARM_UP: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;
/// Per client per cell, whatever the window: a loop must end even if time misbehaves.
const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;
/// After the window, how long in-flight requests may take before their clients are abandoned.
const DRAIN_CAP: Duration = Duration::from_secs(35);

/// What the clients counted during the measured window.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) throttled: u64,
    pub(crate) latencies: Vec<Duration>,
}

/// One client: send, await the answer, repeat, until the phase says stop. `success` says
/// which answers count as `ok` (429 counts as throttled, anything else as an error);
/// `answered` counts clients that have had their first answer.
pub(crate) async fn client(
    mut conn: Conn,
    addr: SocketAddr,
    req: Prepared,
    phase: Arc<AtomicU8>,
    answered: Arc<AtomicUsize>,
    success: fn(&Answer) -> bool,
) -> Tally {
    let mut tally = Tally::default();
    let mut first = true;
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if phase.load(Ordering::Acquire) == STOP {
            break;
        }
        let result = conn.timed(req.request()).await;
        let counting = phase.load(Ordering::Acquire) == MEASURE;
        if first {
            first = false;
            answered.fetch_add(1, Ordering::AcqRel);
        }
        match result {
            Ok((a, took)) if success(&a) => {
                if counting {
                    tally.ok += 1;
                    tally.latencies.push(took);
                }
            }
            Ok((a, _)) if a.status == StatusCode::TOO_MANY_REQUESTS => {
                if counting {
                    tally.throttled += 1;
                }
            }
            Ok(_) => {
                if counting {
                    tally.errors += 1;
                }
            }
            Err(_) => {
                if counting {
                    tally.errors += 1;
                }
                // A broken connection: reopen, without spinning if the server is gone.
                match Conn::open(addr).await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    tally
}

/// Collects the clients' tallies once the phase is [`STOP`]; a client stuck past the drain
/// cap, or one that panicked, is aborted and counted as an error.
pub(crate) async fn collect(tasks: Vec<JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    let drain_end = Instant::now() + DRAIN_CAP;
    for t in tasks {
        let left = drain_end.saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(tally)) => {
                total.ok += tally.ok;
                total.errors += tally.errors;
                total.throttled += tally.throttled;
                total.latencies.extend(tally.latencies);
            }
            _ => {
                abort.abort();
                total.errors += 1;
            }
        }
    }
    total
}
