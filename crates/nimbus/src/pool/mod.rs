//! Execution-environment pools, one per function version (and configuration revision).
//!
//! A pool owns its idle environments; a busy environment is owned by the invocation that
//! leased it and comes back (or is destroyed) when that invocation ends, so an environment
//! serves exactly one invocation at a time and no lease can be left dangling. Idle
//! environments are reused most-recently-used first, so under falling load the coldest ones
//! age out, and are reaped after the keep-alive. The logic takes the time as an argument, so
//! tests drive it with a fake clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::logs::LogSink;
use crate::runtime_api::Invocation;
use crate::sandbox::EnvProcess;

/// One running execution environment.
pub struct Environment {
    pub id: String,
    pub log_stream: String,
    pub invocations: mpsc::Sender<Invocation>,
    pub process: Arc<dyn EnvProcess>,
    /// `Some(description)` once the environment's first process has exited.
    pub exit: watch::Receiver<Option<String>>,
    pub logs: LogSink,
    /// Set for the first invocation after init, so its REPORT carries `Init Duration`.
    pub init_duration: Option<Duration>,
    /// Started ahead of time for provisioned concurrency: never reaped, used first.
    pub provisioned: bool,
    pub server: tokio::task::JoinHandle<()>,
    /// The worker thread its Runtime API and log writer run on (`None`: not a worker's).
    pub home: Option<usize>,
}

impl Environment {
    pub fn has_exited(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.process.kill();
        self.server.abort();
    }
}

/// Identifies a pool: environments are only shared between invocations of exactly the same
/// code and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub account: String,
    pub function: String,
    pub version: String,
    pub revision: String,
}

struct Idle<E> {
    env: E,
    since: Instant,
}

/// Lambda's scale-out rate: 1,000 new execution environments per function every 10 s.
pub const SCALE_BURST: f64 = 1000.0;
pub const SCALE_PER_SECOND: f64 = 100.0;

/// A token bucket limiting how fast new environments are created.
#[derive(Debug)]
pub struct ScaleLimiter {
    tokens: f64,
    at: Instant,
}

impl ScaleLimiter {
    pub fn new(now: Instant) -> Self {
        ScaleLimiter {
            tokens: SCALE_BURST,
            at: now,
        }
    }

    /// Takes one creation token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * SCALE_PER_SECOND).min(SCALE_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The environments of one function version.
pub struct Pool<E = Environment> {
    pub key: PoolKey,
    idle: Mutex<Vec<Idle<E>>>,
    /// Idle provisioned environments: used before on-demand ones, never reaped.
    provisioned_idle: Mutex<Vec<E>>,
    /// Provisioned environments in existence (idle or busy).
    provisioned: AtomicUsize,
    /// Provisioned environments being initialised.
    pub provisioning: AtomicUsize,
    busy: AtomicUsize,
    retired: std::sync::atomic::AtomicBool,
    scale: Mutex<ScaleLimiter>,
}

impl<E> Pool<E> {
    fn new(key: PoolKey) -> Self {
        Pool {
            key,
            idle: Mutex::new(Vec::new()),
            provisioned_idle: Mutex::new(Vec::new()),
            provisioned: AtomicUsize::new(0),
            provisioning: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            scale: Mutex::new(ScaleLimiter::new(Instant::now())),
        }
    }

    /// Takes an idle environment — provisioned first, then the most recently used
    /// on-demand one — counting it busy. Among the most recently used few, one that is
    /// `local` is taken first (one on the caller's own worker thread). `None`: the caller
    /// starts a new one (after [`Pool::try_scale`] and [`Pool::lease_new`]).
    pub fn lease_idle(&self, local: impl Fn(&E) -> bool) -> Option<E> {
        let env = {
            let mut provisioned = self.provisioned_idle.lock().ok()?;
            match take_preferring(&mut provisioned, |e| local(e)) {
                Some(env) => env,
                None => {
                    drop(provisioned);
                    take_preferring(&mut *self.idle.lock().ok()?, |i| local(&i.env))?.env
                }
            }
        };
        self.busy.fetch_add(1, Ordering::AcqRel);
        Some(env)
    }

    /// Whether the scale-out rate allows one more environment now.
    pub fn try_scale(&self, now: Instant) -> bool {
        self.scale.lock().is_ok_and(|mut s| s.try_take(now))
    }

    /// Adds a freshly initialised provisioned environment.
    pub fn add_provisioned(&self, env: E) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        self.provisioned.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut v) = self.provisioned_idle.lock() {
            v.push(env);
        }
    }

    /// Returns a provisioned environment after an invocation.
    pub fn release_provisioned(&self, env: E) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        if self.retired.load(Ordering::Acquire) {
            self.provisioned.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if let Ok(mut v) = self.provisioned_idle.lock() {
            v.push(env);
        }
    }

    /// A provisioned environment that broke: the reconciler replaces it.
    pub fn discard_provisioned(&self, env: E) {
        self.provisioned.fetch_sub(1, Ordering::AcqRel);
        self.discard(env);
    }

    /// Provisioned environments in existence and being started.
    pub fn provisioned_count(&self) -> (usize, usize) {
        (
            self.provisioned.load(Ordering::Acquire),
            self.provisioning.load(Ordering::Acquire),
        )
    }

    /// Destroys idle provisioned environments beyond `target`; returns them.
    pub fn shrink_provisioned(&self, target: usize) -> Vec<E> {
        let mut out = Vec::new();
        let Ok(mut idle) = self.provisioned_idle.lock() else {
            return out;
        };
        while self.provisioned.load(Ordering::Acquire) > target {
            let Some(env) = idle.pop() else { break };
            self.provisioned.fetch_sub(1, Ordering::AcqRel);
            out.push(env);
        }
        out
    }

    /// Counts a freshly started environment as busy.
    pub fn lease_new(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// Returns a healthy environment after an invocation. A retired pool (the function was
    /// updated or deleted) destroys it instead.
    pub fn release(&self, env: E, now: Instant) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle { env, since: now });
        }
    }

    /// Gives back a lease whose environment never became usable (its start failed).
    pub fn forget_lease(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// An environment that broke (timeout, crash) is dropped, not returned.
    pub fn discard(&self, env: E) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        drop(env);
    }

    /// Removes idle environments unused for `keep_alive`; returns them for the caller to drop.
    fn reap(&self, now: Instant, keep_alive: Duration) -> Vec<E> {
        let Ok(mut idle) = self.idle.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // Oldest first: the list is in release order.
        while idle
            .first()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= keep_alive)
        {
            out.push(idle.remove(0).env);
        }
        out
    }

    fn retire(&self) -> Vec<E> {
        self.retired.store(true, Ordering::Release);
        let mut out: Vec<E> = self
            .idle
            .lock()
            .map(|mut v| v.drain(..).map(|i| i.env).collect())
            .unwrap_or_default();
        if let Ok(mut v) = self.provisioned_idle.lock() {
            self.provisioned.fetch_sub(v.len(), Ordering::AcqRel);
            out.extend(v.drain(..));
        }
        out
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
            + self.provisioned_idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub fn busy_count(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }
}

/// How far from the most recently used end [`Pool::lease_idle`] looks for a local environment.
const LOCAL_SEARCH: usize = 32;

/// Removes the last element that is `preferred` among the last [`LOCAL_SEARCH`], else the
/// last one.
fn take_preferring<T>(v: &mut Vec<T>, preferred: impl Fn(&T) -> bool) -> Option<T> {
    let from = v.len().saturating_sub(LOCAL_SEARCH);
    match v[from..].iter().rposition(preferred) {
        Some(i) => Some(v.remove(from + i)),
        None => v.pop(),
    }
}

/// All pools. The owner of every idle environment in the server.
pub struct Pools<E = Environment> {
    pools: Mutex<HashMap<PoolKey, Arc<Pool<E>>>>,
}

impl<E> Default for Pools<E> {
    fn default() -> Self {
        Pools {
            pools: Mutex::new(HashMap::new()),
        }
    }
}

impl<E> Pools<E> {
    pub fn get(&self, key: &PoolKey) -> Arc<Pool<E>> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pools.get(key) {
            return p.clone();
        }
        // A new revision of a function retires the pools of its older revisions.
        let stale: Vec<PoolKey> = pools
            .keys()
            .filter(|k| {
                k.account == key.account
                    && k.function == key.function
                    && k.version == key.version
                    && k.revision != key.revision
            })
            .cloned()
            .collect();
        for k in stale {
            if let Some(p) = pools.remove(&k) {
                drop(p.retire());
            }
        }
        let p = Arc::new(Pool::new(key.clone()));
        pools.insert(key.clone(), p.clone());
        p
    }

    /// Retires the pools of one version of a function (it was updated or deleted).
    pub fn retire_version(&self, account: &str, function: &str, version: &str) -> Vec<E> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<PoolKey> = pools
            .keys()
            .filter(|k| k.account == account && k.function == function && k.version == version)
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|k| pools.remove(k))
            .flat_map(|p| p.retire())
            .collect()
    }

    /// Every pool (for the provisioned-concurrency reconciler).
    pub fn all(&self) -> Vec<Arc<Pool<E>>> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.values().cloned().collect()
    }

    /// Retires every pool of a function (update or delete): idle environments are destroyed
    /// now, busy ones when their invocation ends.
    pub fn retire_function(&self, account: &str, function: &str) -> Vec<E> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<PoolKey> = pools
            .keys()
            .filter(|k| k.account == account && k.function == function)
            .cloned()
            .collect();
        let mut out = Vec::new();
        for k in keys {
            if let Some(p) = pools.remove(&k) {
                out.extend(p.retire());
            }
        }
        out
    }

    /// Retires every pool (shutdown).
    pub fn retire_all(&self) -> Vec<E> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.drain().flat_map(|(_, p)| p.retire()).collect()
    }

    /// Reaps idle environments past the keep-alive and forgets pools left empty.
    pub fn reap(&self, now: Instant, keep_alive: Duration) -> Vec<E> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for p in pools.values() {
            out.extend(p.reap(now, keep_alive));
        }
        pools.retain(|_, p| {
            p.idle_count() > 0 || p.busy_count() > 0 || p.provisioned_count() != (0, 0)
        });
        out
    }

    /// (idle, busy) environments of every function: for the status endpoint.
    pub fn counts(&self) -> Vec<(PoolKey, usize, usize)> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .values()
            .map(|p| (p.key.clone(), p.idle_count(), p.busy_count()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rev: &str) -> PoolKey {
        PoolKey {
            account: "a".into(),
            function: "f".into(),
            version: "$LATEST".into(),
            revision: rev.into(),
        }
    }

    #[test]
    fn reuses_the_most_recently_used_environment() {
        let pools: Pools<u32> = Pools::default();
        let p = pools.get(&key("1"));
        let t0 = Instant::now();
        p.lease_new();
        p.lease_new();
        p.release(1, t0);
        p.release(2, t0 + Duration::from_secs(1));
        assert_eq!(p.lease_idle(|_| false), Some(2));
        assert_eq!(p.busy_count(), 1);
    }

    #[test]
    fn an_environment_of_the_callers_own_worker_is_leased_first() {
        let pools: Pools<u32> = Pools::default();
        let p = pools.get(&key("1"));
        let t0 = Instant::now();
        for i in 1..=4 {
            p.lease_new();
            p.release(i, t0 + Duration::from_secs(u64::from(i)));
        }
        // Odd numbers stand for the caller's worker: the most recent odd one, then the next.
        assert_eq!(p.lease_idle(|e| e % 2 == 1), Some(3));
        assert_eq!(p.lease_idle(|e| e % 2 == 1), Some(1));
        // None local: the most recently used.
        assert_eq!(p.lease_idle(|e| e % 2 == 1), Some(4));
        // Reaping still goes oldest first.
        p.release(3, t0 + Duration::from_secs(10));
        let reaped = pools.reap(t0 + Duration::from_secs(9), Duration::from_secs(5));
        assert_eq!(reaped, vec![2]);
    }

    #[test]
    fn reaps_only_environments_idle_past_the_keep_alive() {
        let pools: Pools<u32> = Pools::default();
        let p = pools.get(&key("1"));
        let t0 = Instant::now();
        for i in 0..3 {
            p.lease_new();
            p.release(i, t0 + Duration::from_secs(i as u64 * 10));
        }
        let reaped = pools.reap(t0 + Duration::from_secs(25), Duration::from_secs(10));
        assert_eq!(reaped, vec![0, 1]);
        assert_eq!(p.idle_count(), 1);
        let reaped = pools.reap(t0 + Duration::from_secs(100), Duration::from_secs(10));
        assert_eq!(reaped, vec![2]);
        // An empty pool is forgotten: scale to zero.
        assert!(pools.counts().is_empty());
    }

    #[test]
    fn a_new_revision_retires_the_old_environments() {
        let pools: Pools<u32> = Pools::default();
        let old = pools.get(&key("1"));
        let t0 = Instant::now();
        old.lease_new();
        old.lease_new();
        old.release(1, t0);
        let _new = pools.get(&key("2"));
        assert_eq!(old.idle_count(), 0);
        // A busy environment of the old revision is not kept when it comes back.
        old.release(2, t0);
        assert_eq!(old.idle_count(), 0);
    }

    #[test]
    fn provisioned_environments_are_used_first_and_never_reaped() {
        let pools: Pools<u32> = Pools::default();
        let p = pools.get(&key("1"));
        let t0 = Instant::now();
        p.lease_new();
        p.release(1, t0);
        p.add_provisioned(100);
        assert_eq!(p.lease_idle(|_| false), Some(100));
        p.release_provisioned(100);
        let reaped = pools.reap(t0 + Duration::from_secs(3600), Duration::from_secs(10));
        assert_eq!(reaped, vec![1]);
        assert_eq!(p.provisioned_count(), (1, 0));
        assert_eq!(p.shrink_provisioned(0), vec![100]);
        assert_eq!(p.provisioned_count(), (0, 0));
    }

    #[test]
    fn scale_out_is_limited_to_lambdas_rate() {
        let t0 = Instant::now();
        let mut s = ScaleLimiter::new(t0);
        let burst = (0..2000).filter(|_| s.try_take(t0)).count();
        assert_eq!(burst, 1000);
        assert!(!s.try_take(t0));
        // 100 more per second.
        let later = t0 + Duration::from_secs(1);
        let more = (0..500).filter(|_| s.try_take(later)).count();
        assert_eq!(more, 100);
    }

    #[test]
    fn retiring_a_version_leaves_the_others() {
        let pools: Pools<u32> = Pools::default();
        let latest = pools.get(&key("1"));
        let mut k1 = key("v1");
        k1.version = "1".into();
        let v1 = pools.get(&k1);
        latest.lease_new();
        latest.release(1, Instant::now());
        v1.lease_new();
        v1.release(2, Instant::now());
        assert_eq!(pools.retire_version("a", "f", "$LATEST"), vec![1]);
        assert_eq!(v1.idle_count(), 1);
    }

    #[test]
    fn retiring_a_function_returns_its_idle_environments() {
        let pools: Pools<u32> = Pools::default();
        let p = pools.get(&key("1"));
        p.lease_new();
        p.release(7, Instant::now());
        assert_eq!(pools.retire_function("a", "f"), vec![7]);
        assert!(pools.counts().is_empty());
    }
}
