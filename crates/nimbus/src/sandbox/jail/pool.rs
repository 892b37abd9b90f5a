//! Jails parked ahead of demand: the slow part of a jail's start (a v1 memory cgroup join
//! waits for an RCU grace period, ~10 ms on our machines; slirp4netns ~20 ms) done by a
//! background thread, so a cold start only sends the run spec (~1-2 ms, see docs/sandbox.md).
//!
//! Two kinds are kept, with and without outbound access; each up to `pool_size`. A parked jail
//! runs no function code and holds a cgroup with the minimum limits until it is taken.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::{JailInner, PARKED_MEMORY_MB, ParkedEnv};

/// The pool.
#[derive(Debug)]
pub(super) struct JailPool {
    state: Mutex<PoolState>,
    wake: Condvar,
    size: usize,
    handle: tokio::runtime::Handle,
}

#[derive(Debug, Default)]
struct PoolState {
    with_egress: VecDeque<ParkedEnv>,
    lo_only: VecDeque<ParkedEnv>,
    stopped: bool,
}

impl JailPool {
    /// Starts the refill thread. `handle` is the runtime that reaps the jailers.
    pub(super) fn start(inner: Arc<JailInner>, handle: tokio::runtime::Handle) -> Arc<JailPool> {
        let pool = Arc::new(JailPool {
            state: Mutex::new(PoolState::default()),
            wake: Condvar::new(),
            size: inner.config.pool_size,
            handle,
        });
        let weak = Arc::downgrade(&pool);
        let spawned = std::thread::Builder::new()
            .name("nimbus-jail-pool".into())
            .spawn(move || refill(&weak, &inner));
        if let Err(e) = spawned {
            tracing::warn!("jail: no pool of parked jails (cannot start its thread: {e})");
        }
        pool
    }

    /// Takes a parked jail of the wanted kind, if one is ready; never waits for one.
    pub(super) fn take(&self, with_egress: bool) -> Option<ParkedEnv> {
        let mut st = self.state.lock().ok()?;
        let parked = if with_egress {
            st.with_egress.pop_front()
        } else {
            st.lo_only.pop_front()
        };
        drop(st);
        self.wake.notify_all();
        parked
    }

    /// Stops refilling and discards every parked jail.
    pub(super) fn stop(&self) {
        let drained: Vec<ParkedEnv> = match self.state.lock() {
            Ok(mut st) => {
                st.stopped = true;
                let st = &mut *st;
                st.with_egress
                    .drain(..)
                    .chain(st.lo_only.drain(..))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let _guard = self.handle.enter();
        for parked in drained {
            parked.discard();
        }
        self.wake.notify_all();
    }

    /// Which kind to park next, or `None` after waiting a while with nothing missing.
    fn next_kind(&self, egress_available: bool) -> Result<Option<bool>, ()> {
        let st = self.state.lock().map_err(|_| ())?;
        if st.stopped {
            return Err(());
        }
        if egress_available && st.with_egress.len() < self.size {
            return Ok(Some(true));
        }
        if st.lo_only.len() < self.size {
            return Ok(Some(false));
        }
        let (st, _) = self
            .wake
            .wait_timeout(st, Duration::from_secs(1))
            .map_err(|_| ())?;
        if st.stopped { Err(()) } else { Ok(None) }
    }

    fn put(&self, parked: ParkedEnv, with_egress: bool) {
        match self.state.lock() {
            Ok(mut st) if !st.stopped => {
                if with_egress {
                    st.with_egress.push_back(parked);
                } else {
                    st.lo_only.push_back(parked);
                }
            }
            _ => parked.discard(),
        }
    }
}

/// The refill loop; ends when the pool is stopped or dropped.
fn refill(pool: &Weak<JailPool>, inner: &JailInner) {
    let egress_available = inner.egress_up_front();
    let parking_limits = inner.limits(PARKED_MEMORY_MB);
    loop {
        let Some(p) = pool.upgrade() else {
            return;
        };
        let _guard = p.handle.enter();
        let with_egress = match p.next_kind(egress_available) {
            Err(()) => return,
            Ok(None) => continue,
            Ok(Some(kind)) => kind,
        };
        let name = format!("parked-{:016x}", fastrand::u64(..));
        match inner.park(&name, &parking_limits, with_egress, true) {
            Ok(parked) => p.put(parked, with_egress),
            Err(e) => {
                tracing::warn!("jail: cannot park a jail ahead of demand: {e}");
                drop(p);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
impl JailPool {
    /// Parked jails of one kind ready now.
    pub(super) fn ready(&self, with_egress: bool) -> usize {
        self.state.lock().map_or(0, |st| {
            if with_egress {
                st.with_egress.len()
            } else {
                st.lo_only.len()
            }
        })
    }
}
