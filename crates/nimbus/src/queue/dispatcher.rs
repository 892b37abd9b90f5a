//! The dispatcher: keeps every pending event's metadata in memory (payloads stay on disk),
//! runs due events round-robin across functions with at most `parallelism` at once, and
//! settles each attempt — success, function error, throttle, maximum age — by one durable
//! write before the in-memory state moves on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::destination::{self, Condition, Destination, Response, Target};
use super::invoke_config::EventInvokeConfig;
use super::journal::{self, Journal, NewMessage, ReceivedMessage, StoredEvent};
use super::retry::{self, AfterError};
use super::stats::{Counters, Gauges, Stats};
use super::{
    Clock, ConfigKey, FunctionKey, NewEvent, Platform, QueueConfig, QueueError, lock, read, write,
};
use crate::invoke::{InvokeError, InvokeRequest};
use crate::model::{FunctionConfig, LATEST, function_arn};

/// How long a write that failed waits before its event is tried again.
const STORAGE_RETRY_MS: u64 = 1_000;
/// Long polls re-check at least this often (messages whose visibility timeout ran out).
const RECEIVE_RECHECK: Duration = Duration::from_millis(500);

/// One pending event, as the dispatcher tracks it.
#[derive(Debug, Clone)]
struct Pending {
    id: i64,
    key: FunctionKey,
    qualifier: Option<String>,
    request_id: Arc<str>,
    enqueued_ms: u64,
    /// Invocations that ended in a function error (durable).
    attempts: u32,
    /// Current throttle backoff (memory only: after a restart it starts again at 1 s).
    backoff_ms: u64,
    /// Status and message of the last throttle or platform error, for a dead letter.
    last_refusal: Option<(u16, String)>,
    running: bool,
}

#[derive(Default)]
struct FunctionQueue {
    /// (enqueued, id) of every pending event: the first is the oldest.
    by_age: BTreeSet<(u64, i64)>,
    running: u64,
}

/// The in-memory schedule.
#[derive(Default)]
struct Sched {
    events: HashMap<i64, Pending>,
    /// (due, id) of events waiting for their time.
    timers: BTreeSet<(u64, i64)>,
    /// Due events per function, waiting for a free slot.
    ready: HashMap<FunctionKey, VecDeque<i64>>,
    /// Functions with ready events, served in turn.
    rotation: VecDeque<FunctionKey>,
    running: usize,
    functions: HashMap<FunctionKey, FunctionQueue>,
}

impl Sched {
    fn add(&mut self, p: Pending, due_ms: u64) {
        self.functions
            .entry(p.key.clone())
            .or_default()
            .by_age
            .insert((p.enqueued_ms, p.id));
        self.timers.insert((due_ms, p.id));
        self.events.insert(p.id, p);
    }

    /// Moves every event due at `now` to its function's ready queue.
    fn promote(&mut self, now_ms: u64) {
        while let Some(&(due, id)) = self.timers.first() {
            if due > now_ms {
                break;
            }
            self.timers.pop_first();
            let Some(p) = self.events.get(&id) else {
                continue;
            };
            let q = self.ready.entry(p.key.clone()).or_default();
            if q.is_empty() {
                self.rotation.push_back(p.key.clone());
            }
            q.push_back(id);
        }
    }

    /// Takes ready events, one function at a time, while fewer than `max` run.
    fn take(&mut self, max: usize) -> Vec<Pending> {
        let mut out = Vec::new();
        while self.running < max {
            let Some(key) = self.rotation.pop_front() else {
                break;
            };
            let Some(q) = self.ready.get_mut(&key) else {
                continue;
            };
            let Some(id) = q.pop_front() else { continue };
            if q.is_empty() {
                self.ready.remove(&key);
            } else {
                self.rotation.push_back(key.clone());
            }
            let Some(p) = self.events.get_mut(&id) else {
                continue;
            };
            p.running = true;
            self.running += 1;
            if let Some(f) = self.functions.get_mut(&key) {
                f.running += 1;
            }
            out.push(p.clone());
        }
        out
    }

    fn stop_running(&mut self, id: i64) -> Option<&mut Pending> {
        let p = self.events.get_mut(&id)?;
        if p.running {
            p.running = false;
            self.running = self.running.saturating_sub(1);
            if let Some(f) = self.functions.get_mut(&p.key) {
                f.running = f.running.saturating_sub(1);
            }
        }
        Some(p)
    }

    /// Puts a running event back to wait until `due`.
    fn requeue(&mut self, id: i64, due_ms: u64, update: impl FnOnce(&mut Pending)) {
        if let Some(p) = self.stop_running(id) {
            update(p);
            self.timers.insert((due_ms, id));
        }
    }

    fn remove(&mut self, id: i64) {
        self.stop_running(id);
        if let Some(p) = self.events.remove(&id)
            && let Some(f) = self.functions.get_mut(&p.key)
        {
            f.by_age.remove(&(p.enqueued_ms, id));
            if f.by_age.is_empty() && f.running == 0 {
                self.functions.remove(&p.key);
            }
        }
    }

    fn next_due(&self) -> Option<u64> {
        self.timers.first().map(|t| t.0)
    }
}

/// What an attempt produced, to be made durable.
enum Outcome {
    /// The event is finished; these are stored in the same transaction that removes it.
    Done {
        follow: Vec<FollowUp>,
        count: fn(&mut Counters),
    },
    /// A function error with attempts left: record it, run again at `due_ms`.
    Retry {
        attempts: u32,
        due_ms: u64,
        last: Response,
    },
    /// A throttle or platform error: back to the queue (nothing to record durably).
    Requeue {
        due_ms: u64,
        backoff_ms: u64,
        refusal: (u16, String),
    },
}

/// Something a finished event sends on.
enum FollowUp {
    Event(NewEvent),
    Message(NewMessage),
}

pub(super) struct Shared {
    pub(super) journal: Journal,
    pub(super) config: QueueConfig,
    pub(super) platform: Arc<dyn Platform>,
    pub(super) clock: Clock,
    pub(super) stats: Stats,
    sched: Mutex<Sched>,
    /// Wakes the dispatcher: an event was added, an attempt ended.
    wake: Notify,
    /// Wakes long polls: a message was stored.
    arrivals: Notify,
    configs: RwLock<HashMap<ConfigKey, EventInvokeConfig>>,
    config_writes: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn new(
        journal: Journal,
        config: QueueConfig,
        platform: Arc<dyn Platform>,
        configs: HashMap<ConfigKey, EventInvokeConfig>,
        clock: Clock,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            journal,
            config,
            platform,
            clock,
            stats: Stats::default(),
            sched: Mutex::new(Sched::default()),
            wake: Notify::new(),
            arrivals: Notify::new(),
            configs: RwLock::new(configs),
            config_writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes in the events found on disk at startup: all of them run again, those that
    /// were in flight when the server stopped included.
    pub(super) fn load(&self, events: Vec<StoredEvent>) {
        let mut s = lock(&self.sched);
        for e in events {
            let due = e.due_ms;
            s.add(
                Pending {
                    id: e.id,
                    key: e.key,
                    qualifier: e.qualifier,
                    request_id: e.request_id.into(),
                    enqueued_ms: e.enqueued_ms,
                    attempts: e.attempts,
                    backoff_ms: 0,
                    last_refusal: None,
                    running: false,
                },
                due,
            );
        }
    }

    pub(super) async fn enqueue(&self, events: Vec<NewEvent>) -> Result<(), QueueError> {
        let now = self.clock.now_ms();
        let metas: Vec<_> = events.iter().map(pending_parts).collect();
        let ids = self
            .journal
            .write(move |c| {
                events
                    .iter()
                    .map(|e| journal::insert_event(c, e, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        self.admit(ids, metas, now);
        Ok(())
    }

    /// Adds committed events to the schedule.
    fn admit(&self, ids: Vec<i64>, metas: Vec<(FunctionKey, Option<String>, Arc<str>)>, now: u64) {
        {
            let mut s = lock(&self.sched);
            for (id, (key, qualifier, request_id)) in ids.into_iter().zip(metas) {
                self.stats.bump(&key, |c| c.enqueued += 1);
                s.add(
                    Pending {
                        id,
                        key,
                        qualifier,
                        request_id,
                        enqueued_ms: now,
                        attempts: 0,
                        backoff_ms: 0,
                        last_refusal: None,
                        running: false,
                    },
                    now,
                );
            }
        }
        self.wake.notify_one();
    }

    pub(super) fn config_of(
        &self,
        key: &FunctionKey,
        qualifier: &str,
    ) -> Option<EventInvokeConfig> {
        read(&self.configs)
            .get(&(key.clone(), qualifier.to_string()))
            .cloned()
    }

    pub(super) fn configs_of(&self, key: &FunctionKey) -> Vec<(String, EventInvokeConfig)> {
        let mut out: Vec<_> = read(&self.configs)
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, q), c)| (q.clone(), c.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(super) async fn change_config<E: From<QueueError>>(
        &self,
        key: FunctionKey,
        qualifier: String,
        change: impl FnOnce(Option<&EventInvokeConfig>) -> Result<EventInvokeConfig, E>,
    ) -> Result<EventInvokeConfig, E> {
        let _serial = self.config_writes.lock().await;
        let current = self.config_of(&key, &qualifier);
        let new = change(current.as_ref())?;
        let (k, q, c) = (key.clone(), qualifier.clone(), new.clone());
        self.journal
            .write(move |conn| journal::put_config(conn, &k, &q, &c))
            .await?;
        write(&self.configs).insert((key, qualifier), new.clone());
        Ok(new)
    }

    pub(super) async fn delete_configs(
        &self,
        key: FunctionKey,
        qualifier: Option<String>,
    ) -> Result<bool, QueueError> {
        let _serial = self.config_writes.lock().await;
        let (k, q) = (key.clone(), qualifier.clone());
        let n = self
            .journal
            .write(move |conn| journal::delete_configs(conn, &k, q.as_deref()))
            .await?;
        write(&self.configs)
            .retain(|(k, q), _| !(*k == key && qualifier.as_ref().is_none_or(|want| want == q)));
        Ok(n > 0)
    }

    pub(super) async fn receive(
        &self,
        account: &str,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrivals.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let (a, q, now) = (account.to_string(), queue.to_string(), self.clock.now_ms());
            let vis = visibility.as_millis() as u64;
            let got = self
                .journal
                .write(move |c| journal::receive(c, &a, &q, max, now, vis))
                .await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let until = deadline.min(now + RECEIVE_RECHECK);
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    pub(super) fn gauges(&self) -> BTreeMap<FunctionKey, Gauges> {
        let now = self.clock.now_ms();
        let s = lock(&self.sched);
        s.functions
            .iter()
            .map(|(k, f)| {
                (
                    k.clone(),
                    Gauges {
                        depth: f.by_age.len() as u64,
                        in_flight: f.running,
                        oldest_age_ms: f
                            .by_age
                            .first()
                            .map(|(t, _)| now.saturating_sub(*t))
                            .unwrap_or(0),
                    },
                )
            })
            .collect()
    }

    fn effective_config(&self, key: &FunctionKey, qualifier: Option<&str>) -> EventInvokeConfig {
        self.config_of(key, qualifier.unwrap_or(LATEST))
            .unwrap_or_default()
    }

    /// Runs one attempt of an event and decides what becomes of it.
    async fn execute(&self, job: &Pending) -> Outcome {
        let key = &job.key;
        let cfg = self.effective_config(key, job.qualifier.as_deref());
        let expires = job.enqueued_ms.saturating_add(cfg.max_age_ms());
        let Some(function) =
            self.platform
                .function(&key.account, &key.name, job.qualifier.as_deref())
        else {
            tracing::warn!(request_id = %job.request_id, function = %key.name,
                "asynchronous event discarded: the function no longer exists");
            return Outcome::Done {
                follow: Vec::new(),
                count: |c| c.discarded += 1,
            };
        };
        let id = job.id;
        let body = match self.journal.read(move |c| journal::load_body(c, id)).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::error!(request_id = %job.request_id, "asynchronous event vanished from the queue database");
                return Outcome::Done {
                    follow: Vec::new(),
                    count: |c| c.discarded += 1,
                };
            }
            Err(e) => {
                tracing::error!(request_id = %job.request_id, "cannot read a queued event: {e}");
                return Outcome::Requeue {
                    due_ms: self.clock.now_ms() + STORAGE_RETRY_MS,
                    backoff_ms: job.backoff_ms,
                    refusal: (500, "The queue database could not be read.".into()),
                };
            }
        };
        if self.clock.now_ms() >= expires {
            return self.failure(
                job,
                &function,
                &cfg,
                Condition::EventAgeExceeded,
                job.attempts,
                &body.payload,
                body.last.as_ref(),
            );
        }
        if self.platform.reserved_concurrency(&key.account, &key.name) == Some(0) {
            // Reserved concurrency 0 takes no invocations: Lambda sends such events to the
            // failure destination / DLQ at once, without retries (§1.8).
            let refused = Pending {
                last_refusal: Some((429, "Rate Exceeded.".into())),
                ..job.clone()
            };
            return self.failure(
                &refused,
                &function,
                &cfg,
                Condition::RetriesExhausted,
                job.attempts,
                &body.payload,
                body.last.as_ref(),
            );
        }
        let request = InvokeRequest {
            invoked_arn: function_arn(
                &self.config.region,
                &key.account,
                &key.name,
                job.qualifier.as_deref(),
            )
            .into(),
            function: function.clone(),
            request_id: job.request_id.clone(),
            payload: body.payload.clone(),
            client_context: None,
            want_log_tail: false,
        };
        let result = self.platform.invoke(request).await;
        let now = self.clock.now_ms();
        let response = match result {
            Ok(r) => Response {
                executed_version: r.executed_version,
                function_error: r.function_error,
                payload: r.payload,
            },
            Err(InvokeError::UnknownRuntime(rt)) => Response {
                executed_version: function.version.clone(),
                function_error: true,
                payload: Bytes::from(
                    serde_json::json!({
                        "errorType": "Runtime.InvalidRuntime",
                        "errorMessage": format!("The runtime {rt} is not available on this server."),
                    })
                    .to_string(),
                ),
            },
            Err(e) => {
                let refusal = match &e {
                    InvokeError::Throttled { .. } | InvokeError::ScalingThrottled => (429, "Rate Exceeded.".to_string()),
                    other => (500, other.to_string()),
                };
                let (due_ms, backoff_ms) = retry::after_throttle(job.backoff_ms, now, expires);
                tracing::debug!(request_id = %job.request_id, backoff_ms, "asynchronous event requeued: {e}");
                return Outcome::Requeue { due_ms, backoff_ms, refusal };
            }
        };
        let invocations = job.attempts.saturating_add(1);
        if !response.function_error {
            let mut follow = Vec::new();
            if let Some(dest) = &cfg.on_success {
                let text = destination::record(
                    &job.request_id,
                    &self.record_arn(job, &function),
                    Condition::Success,
                    invocations,
                    &body.payload,
                    Some(&response),
                    now,
                );
                follow.extend(self.deliver(key, dest, text));
            }
            return Outcome::Done {
                follow,
                count: |c| c.succeeded += 1,
            };
        }
        match self
            .config
            .retry
            .after_function_error(cfg.retries(), invocations, now, expires)
        {
            AfterError::RetryAt(due_ms) => Outcome::Retry {
                attempts: invocations,
                due_ms,
                last: response,
            },
            AfterError::Exhausted => self.failure(
                job,
                &function,
                &cfg,
                Condition::RetriesExhausted,
                invocations,
                &body.payload,
                Some(&response),
            ),
        }
    }

    /// The `functionArn` of a destination record: qualified, `$LATEST` when unqualified.
    fn record_arn(&self, job: &Pending, function: &FunctionConfig) -> String {
        let q = job.qualifier.as_deref().unwrap_or(&function.version);
        function_arn(
            &self.config.region,
            &job.key.account,
            &job.key.name,
            Some(q),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn failure(
        &self,
        job: &Pending,
        function: &FunctionConfig,
        cfg: &EventInvokeConfig,
        condition: Condition,
        invocations: u32,
        payload: &Bytes,
        last: Option<&Response>,
    ) -> Outcome {
        let now = self.clock.now_ms();
        let mut follow = Vec::new();
        if let Some(dest) = &cfg.on_failure {
            let text = destination::record(
                &job.request_id,
                &self.record_arn(job, function),
                condition,
                invocations,
                payload,
                last,
                now,
            );
            follow.extend(self.deliver(&job.key, dest, text));
        }
        if let Some(arn) = &function.dead_letter_target {
            let (status, message) = match (last, &job.last_refusal) {
                (Some(r), _) => (200, destination::error_message(&r.payload)),
                (None, Some((s, m))) => (*s, m.clone()),
                (None, None) => (429, "Rate Exceeded.".to_string()),
            };
            match Destination::parse(arn).map(|d| d.target) {
                Ok(Target::Queue { account, name }) if account == job.key.account => {
                    self.stats.bump(&job.key, |c| c.dead_letters += 1);
                    follow.push(FollowUp::Message(NewMessage {
                        account,
                        queue: name,
                        body: String::from_utf8_lossy(payload).into_owned(),
                        attributes: destination::dead_letter_attributes(
                            &job.request_id,
                            status,
                            &message,
                        ),
                    }));
                }
                _ => {
                    tracing::warn!(request_id = %job.request_id, dead_letter = %arn,
                        "dead-letter target is not a built-in queue of this account; the event is dropped");
                    self.stats.bump(&job.key, |c| c.undeliverable += 1);
                }
            }
        }
        tracing::info!(request_id = %job.request_id, function = %job.key.name, condition = condition.as_str(),
            invocations, "asynchronous invocation failed");
        Outcome::Done {
            follow,
            count: match condition {
                Condition::EventAgeExceeded => |c| c.dropped_by_age += 1,
                _ => |c| c.retries_exhausted += 1,
            },
        }
    }

    fn deliver(&self, from: &FunctionKey, dest: &Destination, record: String) -> Option<FollowUp> {
        if dest.account() != from.account {
            tracing::warn!(destination = %dest, "destination of another account: not delivered");
            self.stats.bump(from, |c| c.undeliverable += 1);
            return None;
        }
        self.stats.bump(from, |c| c.destination_deliveries += 1);
        Some(match &dest.target {
            Target::Function {
                account,
                name,
                qualifier,
            } => FollowUp::Event(NewEvent {
                account: account.clone(),
                function: name.clone(),
                qualifier: qualifier.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                payload: Bytes::from(record),
            }),
            Target::Queue { account, name } => FollowUp::Message(NewMessage {
                account: account.clone(),
                queue: name.clone(),
                body: record,
                attributes: BTreeMap::new(),
            }),
        })
    }

    /// Makes an outcome durable, then moves the schedule on.
    async fn settle(&self, job: &Pending, outcome: Outcome) {
        let id = job.id;
        match outcome {
            Outcome::Done { follow, count } => {
                let now = self.clock.now_ms();
                let mut events = Vec::new();
                let mut messages = Vec::new();
                for f in follow {
                    match f {
                        FollowUp::Event(e) => events.push(e),
                        FollowUp::Message(m) => messages.push(m),
                    }
                }
                let metas: Vec<_> = events.iter().map(pending_parts).collect();
                let any_message = !messages.is_empty();
                let written = self
                    .journal
                    .write(move |c| {
                        journal::delete_event(c, id)?;
                        for m in &messages {
                            journal::insert_message(c, m, now)?;
                        }
                        events
                            .iter()
                            .map(|e| journal::insert_event(c, e, now))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await;
                match written {
                    Ok(ids) => {
                        lock(&self.sched).remove(id);
                        self.stats.bump(&job.key, count);
                        if !ids.is_empty() {
                            self.admit(ids, metas, now);
                        }
                        if any_message {
                            self.arrivals.notify_waiters();
                        }
                    }
                    Err(e) => {
                        // The event is still stored: it runs again (at-least-once).
                        tracing::error!(request_id = %job.request_id, "cannot complete an event: {e}");
                        lock(&self.sched).requeue(id, now + STORAGE_RETRY_MS, |_| {});
                    }
                }
            }
            Outcome::Retry {
                attempts,
                due_ms,
                last,
            } => {
                let written = self
                    .journal
                    .write(move |c| journal::record_attempt(c, id, attempts, due_ms, &last))
                    .await;
                let mut s = lock(&self.sched);
                match written {
                    Ok(()) => {
                        self.stats.bump(&job.key, |c| c.retries += 1);
                        s.requeue(id, due_ms, |p| {
                            p.attempts = attempts;
                            p.backoff_ms = 0;
                        });
                    }
                    Err(e) => {
                        tracing::error!(request_id = %job.request_id, "cannot record a failed attempt: {e}");
                        s.requeue(id, self.clock.now_ms() + STORAGE_RETRY_MS, |_| {});
                    }
                }
            }
            Outcome::Requeue {
                due_ms,
                backoff_ms,
                refusal,
            } => {
                self.stats.bump(&job.key, |c| c.throttles += 1);
                lock(&self.sched).requeue(id, due_ms, |p| {
                    p.backoff_ms = backoff_ms;
                    p.last_refusal = Some(refusal);
                });
            }
        }
        self.wake.notify_one();
    }
}

fn pending_parts(e: &NewEvent) -> (FunctionKey, Option<String>, Arc<str>) {
    (
        FunctionKey::new(&e.account, &e.function),
        e.qualifier.clone(),
        e.request_id.as_str().into(),
    )
}

/// Puts an attempt's event back if its task ends without settling (a panic).
struct Unsettled<'a> {
    shared: &'a Shared,
    id: i64,
    armed: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.armed {
            let due = self.shared.clock.now_ms() + STORAGE_RETRY_MS;
            lock(&self.shared.sched).requeue(self.id, due, |_| {});
            self.shared.wake.notify_one();
        }
    }
}

async fn attempt(shared: Arc<Shared>, job: Pending) {
    let mut guard = Unsettled {
        shared: &shared,
        id: job.id,
        armed: true,
    };
    let outcome = shared.execute(&job).await;
    shared.settle(&job, outcome).await;
    guard.armed = false;
}

/// The dispatch loop; runs until the server stops.
pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        let now = shared.clock.now_ms();
        let (jobs, next_due) = {
            let mut s = lock(&shared.sched);
            s.promote(now);
            (s.take(shared.config.parallelism), s.next_due())
        };
        for job in jobs {
            tokio::spawn(attempt(shared.clone(), job));
        }
        match next_due {
            Some(due) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(shared.clock.instant_at(due)) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}
