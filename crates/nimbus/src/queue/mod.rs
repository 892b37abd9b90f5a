//! Durable asynchronous invocation: the event queue behind `InvocationType: Event` and
//! InvokeAsync, the dispatcher that drains it under Lambda's retry policy, event invoke
//! configs, destinations, and the built-in queues that SQS destination and dead-letter
//! ARNs name.
//!
//! It owns `DATA/queue.db` ([`journal`]) and nothing else on disk: an event is accepted
//! (and 202 returned) only once its row is durably committed, and leaves the table only in
//! the same transaction that stores what it produced (a destination record, a dead letter),
//! so a crash at any point leaves each event either done or still queued — at-least-once,
//! with the request id and the count of failed attempts kept across restarts.
//!
//! It must not touch function metadata (the store owns it) nor environments (the invoker
//! owns them): it reaches both only through the [`Platform`] trait, which tests fake.

pub mod destination;
mod dispatcher;
pub mod invoke_config;
mod journal;
pub mod retry;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

use crate::invoke::{InvokeError, InvokeRequest, InvokeResult, Invoker};
use crate::model::FunctionConfig;
use crate::store::Store;
pub use destination::{Destination, DestinationError, MessageAttribute, Target};
pub use invoke_config::EventInvokeConfig;
pub use journal::{NewMessage, ReceivedMessage};
pub use stats::{Counters, Gauges};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt queue record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the queue database did not commit: {0}")]
    Commit(String),
    #[error("the queue's writer thread is gone or dropped the write (see the log)")]
    WriterGone,
    #[error("cannot start the queue's writer thread: {0}")]
    Spawn(std::io::Error),
    #[error("a queue lock was poisoned by a panic")]
    Poisoned,
    #[error("a queue task failed: {0}")]
    Task(String),
    #[error("invalid {name}: {reason}")]
    Config { name: &'static str, reason: String },
}

/// The environment variable that sets the delay before the first retry after a function
/// error, in milliseconds (Lambda: about a minute). For tests and impatient development.
pub const RETRY_BASE_ENV: &str = "NIMBUS_ASYNC_RETRY_BASE_MS";
/// The environment variable that caps how many queued events run at once.
pub const PARALLELISM_ENV: &str = "NIMBUS_ASYNC_PARALLELISM";
/// Events invoked at once by default; also never more than the account concurrency, so
/// the dispatcher does not throttle itself.
pub const DEFAULT_PARALLELISM: usize = 64;

/// Server-wide settings of the queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub region: String,
    pub retry: retry::RetryPolicy,
    pub parallelism: usize,
}

impl QueueConfig {
    /// Defaults, overridden by `NIMBUS_ASYNC_RETRY_BASE_MS` and `NIMBUS_ASYNC_PARALLELISM`.
    pub fn from_env(region: &str, concurrency_limit: u32) -> Result<QueueConfig, QueueError> {
        let number = |name: &'static str| -> Result<Option<u64>, QueueError> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|e| QueueError::Config {
                        name,
                        reason: format!("'{v}': {e}"),
                    }),
            }
        };
        let mut retry = retry::RetryPolicy::default();
        if let Some(ms) = number(RETRY_BASE_ENV)? {
            retry.retry_base_ms = ms;
        }
        let parallelism = number(PARALLELISM_ENV)?
            .map(|p| p as usize)
            .unwrap_or(DEFAULT_PARALLELISM)
            .min(concurrency_limit as usize)
            .max(1);
        Ok(QueueConfig {
            region: region.to_string(),
            retry,
            parallelism,
        })
    }
}

/// What the queue needs from the rest of the platform.
pub trait Platform: Send + Sync + 'static {
    /// The configuration a qualifier (None: unqualified) of a function resolves to now.
    fn function(
        &self,
        account: &str,
        name: &str,
        qualifier: Option<&str>,
    ) -> Option<Arc<FunctionConfig>>;
    /// The function's reserved concurrency, if set (0: it takes no invocations at all).
    fn reserved_concurrency(&self, _account: &str, _name: &str) -> Option<u32> {
        None
    }
    /// Runs one invocation to its end.
    fn invoke(
        &self,
        req: InvokeRequest,
    ) -> Pin<Box<dyn Future<Output = Result<InvokeResult, InvokeError>> + Send + '_>>;
}

/// The real platform: functions from the store, invocations by the invoker.
pub struct LocalPlatform {
    pub store: Arc<Store>,
    pub invoker: Arc<Invoker>,
}

impl Platform for LocalPlatform {
    fn function(
        &self,
        account: &str,
        name: &str,
        qualifier: Option<&str>,
    ) -> Option<Arc<FunctionConfig>> {
        self.store
            .with_entry(account, name, |e| {
                let (config, alias) = e.qualified(qualifier)?;
                match alias {
                    // A weighted alias routes each attempt, as a synchronous invoke would.
                    Some(a) if !a.additional_weights.is_empty() => {
                        e.version(a.route(fastrand::f64()))
                    }
                    _ => Some(config),
                }
            })
            .flatten()
    }

    fn reserved_concurrency(&self, account: &str, name: &str) -> Option<u32> {
        self.store
            .with_entry(account, name, |e| e.reserved)
            .flatten()
    }

    fn invoke(
        &self,
        req: InvokeRequest,
    ) -> Pin<Box<dyn Future<Output = Result<InvokeResult, InvokeError>> + Send + '_>> {
        Box::pin(self.invoker.invoke(req))
    }
}

/// A function of an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionKey {
    pub account: String,
    pub name: String,
}

impl FunctionKey {
    pub fn new(account: &str, name: &str) -> Self {
        FunctionKey {
            account: account.to_string(),
            name: name.to_string(),
        }
    }
}

/// An event to invoke a function with, asynchronously.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account: String,
    pub function: String,
    /// As the caller gave it; resolved when the event runs.
    pub qualifier: Option<String>,
    pub request_id: String,
    pub payload: Bytes,
}

/// Wall-clock milliseconds read from tokio's clock, so `tokio::time::pause()` drives the
/// whole queue in tests; stored times stay comparable across restarts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            wall_ms: crate::model::time::now_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.wall_ms + self.start.elapsed().as_millis() as u64
    }

    pub(crate) fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        self.start + Duration::from_millis(ms.saturating_sub(self.wall_ms))
    }
}

/// Config key: the qualifier an event invoke config is attached to (`$LATEST` for none).
type ConfigKey = (FunctionKey, String);

/// The queue: cheap to clone, shared by the API and the dispatcher.
#[derive(Clone)]
pub struct EventQueue {
    shared: Arc<dispatcher::Shared>,
}

impl EventQueue {
    /// Opens `DATA/queue.db`, loading pending events (they run again after a crash).
    pub fn open(
        data_dir: &Path,
        config: QueueConfig,
        platform: Arc<dyn Platform>,
    ) -> Result<EventQueue, QueueError> {
        let (journal, stored) = journal::Journal::open(&data_dir.join("queue.db"))?;
        let configs: HashMap<ConfigKey, EventInvokeConfig> = stored
            .configs
            .into_iter()
            .map(|(k, q, c)| ((k, q), c))
            .collect();
        let shared = dispatcher::Shared::new(journal, config, platform, configs, Clock::new());
        shared.load(stored.events);
        Ok(EventQueue { shared })
    }

    /// Starts the dispatcher on the current runtime.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(dispatcher::run(self.shared.clone()))
    }

    /// Stores an event; returns once it is durably committed.
    pub async fn enqueue(&self, event: NewEvent) -> Result<(), QueueError> {
        self.shared.enqueue(vec![event]).await
    }

    /// The config attached to a qualifier (`$LATEST` for an unqualified name).
    pub fn invoke_config(
        &self,
        account: &str,
        function: &str,
        qualifier: &str,
    ) -> Option<EventInvokeConfig> {
        self.shared
            .config_of(&FunctionKey::new(account, function), qualifier)
    }

    /// Every config of a function, by qualifier.
    pub fn invoke_configs(
        &self,
        account: &str,
        function: &str,
    ) -> Vec<(String, EventInvokeConfig)> {
        self.shared.configs_of(&FunctionKey::new(account, function))
    }

    /// Replaces a config by what `change` makes of the current one (None: there is none),
    /// atomically with respect to other changes.
    pub async fn change_invoke_config<E: From<QueueError>>(
        &self,
        account: &str,
        function: &str,
        qualifier: &str,
        change: impl FnOnce(Option<&EventInvokeConfig>) -> Result<EventInvokeConfig, E>,
    ) -> Result<EventInvokeConfig, E> {
        self.shared
            .change_config(
                FunctionKey::new(account, function),
                qualifier.to_string(),
                change,
            )
            .await
    }

    /// Deletes a config; false if there was none.
    pub async fn delete_invoke_config(
        &self,
        account: &str,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, QueueError> {
        self.shared
            .delete_configs(
                FunctionKey::new(account, function),
                Some(qualifier.to_string()),
            )
            .await
    }

    /// Forgets every config of a deleted function (its queued events are discarded when
    /// they come up). DeleteFunction should call this.
    pub async fn forget_function(&self, account: &str, function: &str) -> Result<(), QueueError> {
        self.shared
            .delete_configs(FunctionKey::new(account, function), None)
            .await
            .map(|_| ())
    }

    /// Built-in queues: up to `max` messages, hidden for `visibility` once handed out,
    /// waiting up to `wait` for one to arrive.
    pub async fn receive(
        &self,
        account: &str,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.shared
            .receive(account, queue, max, visibility, wait)
            .await
    }

    /// Deletes the message a receipt handle names (no error if it is already gone).
    pub async fn delete_message(
        &self,
        account: &str,
        queue: &str,
        receipt: &str,
    ) -> Result<bool, QueueError> {
        let (a, q, r) = (account.to_string(), queue.to_string(), receipt.to_string());
        self.shared
            .journal
            .write(move |c| journal::delete_message(c, &a, &q, &r))
            .await
    }

    pub async fn create_queue(&self, account: &str, queue: &str) -> Result<(), QueueError> {
        let (a, q, now) = (
            account.to_string(),
            queue.to_string(),
            self.shared.clock.now_ms(),
        );
        self.shared
            .journal
            .write(move |c| journal::create_queue(c, &a, &q, now))
            .await
    }

    pub async fn purge(&self, account: &str, queue: &str) -> Result<usize, QueueError> {
        let (a, q) = (account.to_string(), queue.to_string());
        self.shared
            .journal
            .write(move |c| journal::purge(c, &a, &q))
            .await
    }

    pub async fn list_queues(
        &self,
        account: &str,
        prefix: &str,
    ) -> Result<Vec<String>, QueueError> {
        let (a, p) = (account.to_string(), prefix.to_string());
        self.shared
            .journal
            .read(move |c| journal::list_queues(c, &a, &p))
            .await
    }

    /// (visible messages, messages in flight, creation time if the queue was created).
    pub async fn queue_counts(
        &self,
        account: &str,
        queue: &str,
    ) -> Result<(u64, u64, Option<u64>), QueueError> {
        let (a, q, now) = (
            account.to_string(),
            queue.to_string(),
            self.shared.clock.now_ms(),
        );
        self.shared
            .journal
            .read(move |c| {
                let (visible, hidden) = journal::counts(c, &a, &q, now)?;
                Ok((visible, hidden, journal::queue_created_ms(c, &a, &q)?))
            })
            .await
    }

    /// Per-function counters since start.
    pub fn counters(&self, account: &str, function: &str) -> Counters {
        self.shared.stats.get(&FunctionKey::new(account, function))
    }

    /// Per-function gauges now.
    pub fn gauges(&self) -> BTreeMap<FunctionKey, Gauges> {
        self.shared.gauges()
    }

    /// The `AsyncInvocations` member of `/nimbus/status`.
    pub fn status_json(&self, account: &str) -> serde_json::Value {
        self.shared.stats.status_json(account, &self.gauges())
    }

    /// Appends the queue's metrics in Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        self.shared.stats.render(&self.gauges(), out);
    }
}

/// Built-in queue names follow SQS's rules.
pub fn valid_queue_name(name: &str) -> bool {
    destination::valid_queue_name(name)
}

/// Guards against a panic in a lock holder turning into a poisoned server: the data under
/// these locks stays consistent between statements, so the guard is taken back.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
